"""The run directory's manifest, ``run.json``: what was asked, sent, received and stored.

Two files keep it:

- ``run.json``, the whole record, rewritten atomically (temporary file, fsync, rename) at the start,
  at most once a second while the run goes on, and at the end;
- ``run.journal``, one JSON line per step change, appended as it happens; the changes that must
  survive a crash (the intent to create, a prediction id) are fsynced before the run goes on.

Rewriting a whole run.json at every change would cost O(steps) per change, O(steps²) per run; the
journal keeps each change O(1). Loading replays the journal over run.json; a finished run removes
the journal. The API token is never part of either.

Step statuses: ``pending`` (not started), ``running`` (rendering, creating or waiting), ``succeeded``,
``failed``, ``canceled``, ``aborted`` (as the prediction ended), ``skipped`` (a dependency did not succeed).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Literal

from .artifacts import Artifact

StepStatus = Literal["pending", "running", "succeeded", "failed", "canceled", "aborted", "skipped"]
RunStatus = Literal["running", "succeeded", "failed", "canceled"]
MANIFEST = "run.json"
JOURNAL = "run.journal"
SNAPSHOT_INTERVAL = 1.0  # seconds between rewrites of run.json while a run goes on


def utc_now() -> str:
    """The current time as RFC 3339 UTC with a ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StepRecord:
    """What happened to one step."""

    model: str
    version: str
    depends_on: list[str] = field(default_factory=list)
    status: StepStatus = "pending"
    input: dict[str, Any] | None = None
    prediction_id: str | None = None
    error: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: list[Artifact] = field(default_factory=list)
    output: Any = None  # the API's output shape, data: URIs shortened (see outputs.kept_output)
    attempts: list[dict[str, Any]] = field(default_factory=list)  # every prediction made for this step
    cache: str | None = None  # "hit" or "stored", with cache_key
    cache_key: str | None = None
    creating_since: str | None = None  # a create was sent at this time and its answer is not on disk yet
    items: list[StepRecord] = field(default_factory=list)  # a foreach step: one record per item
    index: int | None = None  # an item: its position
    item: Any = None  # an item: the value its templates saw as {{ item }}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        """A StepRecord from its run.json form (items and outputs included)."""
        outputs = [Artifact(**a) for a in data.pop("outputs", [])]
        items = [cls.from_json(i) for i in data.pop("items", [])]
        return cls(**data, outputs=outputs, items=items)


@dataclass
class RunRecord:
    """The whole run; ``save()`` writes it to ``<run_dir>/run.json``."""

    run_dir: Path
    pipeline: str
    api: dict[str, Any]
    steps: dict[str, StepRecord]
    source: str | None = None
    seed: int | None = None
    status: RunStatus = "running"
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    traffic: dict[str, Any] = field(default_factory=dict)  # request, retry and download counters
    _journal: IO[str] | None = field(default=None, repr=False, compare=False)
    _snapshot_at: float = field(default=0.0, repr=False, compare=False)
    _snapshot_every: float = field(default=SNAPSHOT_INTERVAL, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "source": self.source,
            "seed": self.seed,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "api": self.api,
            "traffic": self.traffic,
            "steps": {sid: asdict(step) for sid, step in self.steps.items()},
        }

    def save(self, *, compact: bool = False) -> None:
        """Write the whole record to run.json now (``compact``: without indentation, for speed)."""
        started = time.monotonic()
        write_json_atomic(self.run_dir / MANIFEST, self.to_json(), indent=None if compact else 2)
        self._snapshot_at = time.monotonic()
        # A large run's snapshot costs more: keep snapshots under about 5% of the time.
        self._snapshot_every = max(SNAPSHOT_INTERVAL, 20 * (self._snapshot_at - started))

    def note(self, step_id: str, *, durable: bool = False, item: int | None = None) -> None:
        """Record a change of one step (or one ``item`` of it): appended to the journal, fsynced if
        ``durable``; run.json is rewritten now and then."""
        if self._journal is None:
            self._journal = (self.run_dir / JOURNAL).open("a", encoding="utf-8")
        step = self.steps[step_id]
        entry: dict[str, Any] = {
            "step": step_id,
            "record": asdict(step if item is None else step.items[item]),
        }
        if item is not None:
            entry["item"] = item
        self._journal.write(json.dumps(entry, default=str) + "\n")
        self._journal.flush()
        if durable:
            os.fsync(self._journal.fileno())
        if time.monotonic() - self._snapshot_at >= self._snapshot_every:
            self.save(compact=True)

    def close(self) -> None:
        """Write the final run.json; the journal, now contained in it, is removed."""
        self.save()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        (self.run_dir / JOURNAL).unlink(missing_ok=True)


def load_record(run_dir: Path) -> RunRecord:
    """The run in ``run_dir`` (for resuming): run.json with the journal replayed over it.

    Raises OSError/ValueError if run.json is unreadable; a torn last journal line is ignored.
    """
    raw = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    latest = dict(raw["steps"])
    _replay(latest, run_dir / JOURNAL)
    steps = {sid: StepRecord.from_json(step) for sid, step in latest.items()}
    return RunRecord(
        run_dir=run_dir,
        pipeline=raw["pipeline"],
        api=raw["api"],
        steps=steps,
        source=raw.get("source"),
        seed=raw.get("seed"),
        status=raw["status"],
        started_at=raw["started_at"],
        finished_at=raw.get("finished_at"),
        traffic=raw.get("traffic") or {},
    )


def _replay(steps: dict[str, dict[str, Any]], path: Path) -> None:
    """Apply the journal's entries, in order, to the steps read from run.json."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the line a crash cut short
        if "item" not in entry:
            steps[entry["step"]] = entry["record"]
            continue
        items = steps.setdefault(entry["step"], {}).setdefault("items", [])
        index = int(entry["item"])
        items.extend({} for _ in range(index + 1 - len(items)))
        items[index] = entry["record"]


def write_json_atomic(path: Path, data: Any, *, indent: int | None = 2) -> None:
    """Write ``data`` as JSON so that readers see the old file or the new one, never a mix.

    The file and its directory are fsynced: a prediction id written here survives a power cut.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=indent, ensure_ascii=False, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

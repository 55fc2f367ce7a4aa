"""The run directory's manifest, ``run.json``: what was asked, sent, received and stored.

Two files keep it:

- ``run.json``, the whole record, rewritten atomically (temporary file, fsync, rename) at the start,
  at most once a second while the run goes on, and at the end;
- ``run.journal``, one JSON line per step change, appended as it happens.

What money depends on (intents to create, prediction ids) is not kept here but in the ledger
(:mod:`kkiai_pipeline.ledger`), durably, before each side effect.

Rewriting a whole run.json at every change would cost O(steps) per change, O(steps²) per run; the
journal keeps each change O(1). Loading replays the journal over run.json; a finished run removes
the journal. The API token is never part of either: both are written through
:func:`kkiai_pipeline.secrets.redact`, whatever an input or an error message held.

Step statuses: ``pending`` (not started), ``running`` (rendering, creating or waiting), ``succeeded``,
``failed``, ``canceled``, ``aborted`` (as the prediction ended), ``skipped`` (a dependency did not
succeed), ``unresolved`` (a create's answer was lost and the service cannot yet tell whether it
arrived: nothing is sent again until it can).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Literal

from .artifacts import Artifact
from .errors import StateError
from .secrets import redact

StepStatus = Literal[
    "pending", "running", "succeeded", "failed", "canceled", "aborted", "skipped", "unresolved"
]
RunStatus = Literal["running", "succeeded", "failed", "canceled"]
Obtained = Literal["created", "reused", "shared", "reattached", "recovered"]
MANIFEST = "run.json"
JOURNAL = "run.journal"
SCHEMA_VERSION = 2  # of run.json; docs/run.schema.json describes it
SNAPSHOT_INTERVAL = 1.0  # seconds between rewrites of run.json while a run goes on

#: The moves a step's status may make; anything else is a bug (StateError).
_MOVES: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "skipped"}),
    "running": frozenset({"succeeded", "failed", "canceled", "aborted", "unresolved"}),
}
ENDED: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "aborted", "skipped", "unresolved"})


def utc_now() -> str:
    """The current time as RFC 3339 UTC with a ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StepRecord:
    """What happened to one step (or one item of a ``foreach`` step).

    Its ``status`` changes only through :meth:`start`, :meth:`succeed`, :meth:`end` and :meth:`skip`,
    which refuse impossible moves.
    """

    model: str
    version: str
    depends_on: list[str] = field(default_factory=list)
    status: StepStatus = "pending"
    input: dict[str, Any] | None = None
    key: str | None = None  # the prediction's ledger key
    obtained: Obtained | None = None  # how its result was obtained
    prediction_id: str | None = None
    error: str | None = None
    note: str | None = None  # why it ran or was reused (on a rerun or resume)
    started: str | None = None  # when this run started the step (our clock)
    ended: str | None = None
    created_at: str | None = None  # the API's timestamps of the prediction
    started_at: str | None = None
    completed_at: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: list[Artifact] = field(default_factory=list)
    output: Any = None  # the API's output shape, data: URIs shortened (see outputs.kept_output)
    attempts: list[dict[str, Any]] = field(default_factory=list)  # every prediction made for this step
    items: list[StepRecord] = field(default_factory=list)  # a foreach step: one record per item
    index: int | None = None  # an item: its position
    item: Any = None  # an item: the value its templates saw as {{ item }}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        """A StepRecord from its run.json form (items and outputs included); unknown keys are ignored."""
        known = {f.name for f in fields(cls)} - {"outputs", "items"}
        outputs = [Artifact(**a) for a in data.get("outputs", [])]
        items = [cls.from_json(i) for i in data.get("items", [])]
        return cls(**{k: v for k, v in data.items() if k in known}, outputs=outputs, items=items)

    def _move(self, status: StepStatus) -> None:
        if status not in _MOVES.get(self.status, frozenset()):
            raise StateError(f"a step cannot go from {self.status} to {status}")
        self.status = status

    def start(self) -> None:
        """pending -> running."""
        self._move("running")
        self.started, self.error = utc_now(), None

    def succeed(self, *, outputs: list[Artifact], output: Any = None) -> None:
        """running -> succeeded, with the files stored for it."""
        self._move("succeeded")
        self.outputs, self.output, self.ended = outputs, output, utc_now()

    def end(self, status: StepStatus, error: str) -> None:
        """running -> failed, canceled, aborted or unresolved, saying why."""
        self._move(status)
        self.error, self.ended = error, utc_now()

    def skip(self, error: str) -> None:
        """pending -> skipped (a dependency did not succeed)."""
        self._move("skipped")
        self.error = error

    @property
    def seconds(self) -> float | None:
        """How long this run spent on the step, if it started and ended."""
        start, end = _epoch(self.started), _epoch(self.ended)
        return round(end - start, 3) if start is not None and end is not None else None


@dataclass
class RunRecord:
    """The whole run; ``save()`` writes it to ``<run_dir>/run.json``.

    ``status`` changes only through :meth:`start` and :meth:`finish`.
    """

    run_dir: Path
    pipeline: str
    api: dict[str, Any]
    steps: dict[str, StepRecord]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
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
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
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

    def start(self) -> None:
        """The run (or its resume) begins: running, written out."""
        self.status, self.started_at, self.finished_at = "running", utc_now(), None
        self.save()

    def finish(self, *, interrupted: bool) -> None:
        """The run ends: its status follows from its steps (canceled if interrupted); run.json is final."""
        if interrupted:
            self.status = "canceled"
        else:
            ok = all(s.status == "succeeded" for s in self.steps.values())
            self.status = "succeeded" if ok else "failed"
        self.finished_at = utc_now()
        self.close()

    def save(self, *, compact: bool = False) -> None:
        """Write the whole record to run.json now (``compact``: without indentation, for speed)."""
        started = time.monotonic()
        write_json_atomic(self.run_dir / MANIFEST, self.to_json(), indent=None if compact else 2)
        self._snapshot_at = time.monotonic()
        # A large run's snapshot costs more: keep snapshots under about 5% of the time.
        self._snapshot_every = max(SNAPSHOT_INTERVAL, 20 * (self._snapshot_at - started))

    def note(self, step_id: str, *, item: int | None = None) -> None:
        """Record a change of one step (or one ``item`` of it): appended to the journal; run.json is
        rewritten now and then. (What money depends on is in the ledger, durably, already.)"""
        if self._journal is None:
            self._journal = (self.run_dir / JOURNAL).open("a", encoding="utf-8")
        step = self.steps[step_id]
        entry: dict[str, Any] = {
            "step": step_id,
            "record": asdict(step if item is None else step.items[item]),
        }
        if item is not None:
            entry["item"] = item
        self._journal.write(redact(json.dumps(entry, default=str)) + "\n")
        self._journal.flush()
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
        run_id=str(raw.get("run_id") or uuid.uuid4().hex),
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

    The file and its directory are fsynced: a prediction id written here survives a power cut. The API
    token's value is masked.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(redact(json.dumps(data, indent=indent, ensure_ascii=False, default=str)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

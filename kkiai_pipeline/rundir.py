"""The run directory's manifest, ``run.json``: what was asked, sent, received and stored.

It is rewritten atomically (temporary file, fsync, rename) at every state change, so a crash leaves
either the previous or the new version, never half of one. The API token is never part of it.

Step statuses: ``pending`` (not started), ``running`` (rendering, creating or waiting), ``succeeded``,
``failed``, ``canceled``, ``aborted`` (as the prediction ended), ``skipped`` (a dependency did not succeed).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from .artifacts import Artifact

StepStatus = Literal["pending", "running", "succeeded", "failed", "canceled", "aborted", "skipped"]
RunStatus = Literal["running", "succeeded", "failed", "canceled"]
MANIFEST = "run.json"


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

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "source": self.source,
            "seed": self.seed,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "api": self.api,
            "steps": {sid: asdict(step) for sid, step in self.steps.items()},
        }

    def save(self) -> None:
        write_json_atomic(self.run_dir / MANIFEST, self.to_json())


def load_record(run_dir: Path) -> RunRecord:
    """The run recorded in ``run_dir/run.json`` (for resuming); raises OSError/ValueError if unreadable."""
    raw = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    steps = {}
    for sid, step in raw["steps"].items():
        outputs = [Artifact(**a) for a in step.pop("outputs", [])]
        steps[sid] = StepRecord(**step, outputs=outputs)
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
    )


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON so that readers see the old file or the new one, never a mix.

    The file and its directory are fsynced: a prediction id written here survives a power cut.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False, default=str)
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

"""What one cell of a sweep grid shows: for each chosen step of a job, its first output, or why there is
none."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..rundir import Reading, RunRecord, StepRecord, read_record
from .html import BAD_STATUSES, MediaKind, kind_of, output_file
from .sweep import Job

_NOTE_CHARS = 160


@dataclass(frozen=True)
class Cell:
    """The picture of one job: ``file`` is set only when the output exists on disk.

    ``bad`` marks a cell whose job or step did not work (no run, failed, canceled, unresolved, skipped,
    unfinished), and ``headline`` says so in one word (``failed``, ``canceled``, ``aborted``,
    ``unresolved``: a skipped step takes the word of the step that made it skip); ``note`` says why
    in a line, or what else is worth knowing.
    """

    job: str
    step: str
    status: str
    bad: bool
    note: str = ""
    file: Path | None = None
    kind: MediaKind = "other"
    content_type: str = ""
    headline: str = "failed"


def cells_for(job: Job, steps: Sequence[str]) -> tuple[Cell, ...]:
    """The cells of ``job``, one per step of ``steps`` (empty: the job's last step), run.json read once."""
    reading = read_record(job.path)
    return tuple(_cell(job, reading, step) for step in (steps or (None,)))


def _cell(job: Job, reading: Reading, step: str | None) -> Cell:
    run = reading.record
    if run is None:
        return Cell(job.name, step or "", "no run", bad=True, note=_clip(reading.problem or ""))
    sid = step if step is not None else (list(run.steps)[-1] if run.steps else "")
    found = run.steps.get(sid)
    if found is None:
        why = f"no step {sid!r} in run.json" if sid else "run.json has no steps"
        return Cell(job.name, sid, run.status, bad=run.status in BAD_STATUSES or bool(sid), note=why)
    if found.status != "succeeded":
        cause_id, cause = _cause(run, sid, found)
        note = f"{cause_id} {cause.status}: {cause.error or ''}" if cause is not found else found.error
        headline = cause.status if cause.status in BAD_STATUSES else "failed"
        return Cell(job.name, sid, found.status, True, _clip(note or found.status), headline=headline)
    note = f"run {run.status}" if run.status in BAD_STATUSES else ""
    if not found.outputs:
        return Cell(job.name, sid, found.status, bad=False, note=note or "no output file")
    first = found.outputs[0]
    file = output_file(job.path, first.path)
    if not file.is_file():
        return Cell(job.name, sid, found.status, bad=False, note=f"missing file {first.path}")
    return Cell(job.name, sid, found.status, False, note, file, kind_of(first), first.content_type)


def _cause(run: RunRecord, sid: str, step: StepRecord) -> tuple[str, StepRecord]:
    """A skipped step's error only names its dependency: the first step that ended badly says more."""
    if step.status == "skipped":
        for other_id, other in run.steps.items():
            if other.status in BAD_STATUSES:
                return other_id, other
    return sid, step


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _NOTE_CHARS else text[: _NOTE_CHARS - 1] + "…"

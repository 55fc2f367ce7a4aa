"""What a person sees in the terminal: the progress bar during a run, a summary table after it."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from .rundir import RunRecord

FAILED = frozenset({"failed", "canceled", "aborted"})


class ProgressBar:
    """A tqdm bar on stderr: steps done of total, how many are running and how many failed."""

    def __init__(self, total: int, *, enabled: bool | None, stream: TextIO | None = None) -> None:
        # enabled=None (auto): tqdm draws only on a terminal, so logs and pipes get no carriage-return soup
        disable = None if enabled is None else not enabled
        self._bar = tqdm(total=total, unit="step", file=stream or sys.stderr, disable=disable, leave=True)
        self._started: set[str] = set()
        self._failed = 0
        self._refresh()

    def step_started(self, step_id: str) -> None:
        self._started.add(step_id)
        self._refresh()

    def step_finished(self, step_id: str, status: str) -> None:
        self._started.discard(step_id)
        self._failed += status in FAILED
        self._bar.update(1)
        self._refresh()

    def close(self) -> None:
        self._bar.close()

    def _refresh(self) -> None:
        self._bar.set_postfix(running=len(self._started), failed=self._failed, refresh=True)


def summary(record: RunRecord) -> str:
    """A table of the steps with status, duration and outputs, then where the run directory is."""
    rows = [("step", "status", "time", "outputs")]
    for sid, step in record.steps.items():
        outputs = ", ".join(a.path for a in step.outputs) or (step.error or "")
        seconds = step.metrics.get("predict_time")
        rows.append(
            (sid, step.status, f"{seconds:.1f}s" if isinstance(seconds, int | float) else "-", outputs)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        for row in rows
    ]
    lines.append(f"run {record.status}: {record.run_dir}")
    report = record.run_dir / "report.html"
    if report.exists():
        lines.append(f"report: {report}")
    return "\n".join(lines)

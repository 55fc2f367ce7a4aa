"""What a person sees in the terminal: the progress bar during a run, a summary table after it."""

from __future__ import annotations

import sys
from collections import Counter
from typing import TextIO

from tqdm import tqdm

from .rundir import RunRecord, StepRecord

FAILED = frozenset({"failed", "canceled", "aborted", "unresolved"})


class ProgressBar:
    """A tqdm bar on stderr: predictions done of total, how many are running and how many failed.

    ``total`` starts as one per step; a ``foreach`` step adds its items once they are known.
    """

    def __init__(self, total: int, *, enabled: bool | None, stream: TextIO | None = None) -> None:
        # enabled=None (auto): tqdm draws only on a terminal, so logs and pipes get no carriage-return soup
        disable = None if enabled is None else not enabled
        self._bar = tqdm(total=total, unit="pred", file=stream or sys.stderr, disable=disable, leave=True)
        self._started: set[str] = set()
        self._failed = 0
        self._refresh()

    def started(self, label: str) -> None:
        self._started.add(label)
        self._refresh()

    def finished(self, label: str, status: str) -> None:
        self._started.discard(label)
        self._failed += status in FAILED
        self._bar.update(1)
        self._refresh()

    def expect(self, count: int) -> None:
        """``count`` more predictions than the bar knew of (a foreach step's items, less the step)."""
        if self._bar.total is not None:
            self._bar.total += count
            self._refresh()

    def close(self) -> None:
        self._bar.close()

    def _refresh(self) -> None:
        self._bar.set_postfix(running=len(self._started), failed=self._failed, refresh=True)


def summary(record: RunRecord) -> str:
    """A table of the steps (status, time, how each result was obtained, outputs), then where the run is."""
    rows = [("step", "status", "time", "result", "outputs")]
    for sid, step in record.steps.items():
        outputs = ", ".join(a.path for a in step.outputs) or (step.error or "")
        seconds = step.seconds
        rows.append(
            (sid, step.status, f"{seconds:.1f}s" if seconds is not None else "-", _result(step), outputs)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ]
    lines.append(f"run {record.status}: {record.run_dir}")
    report = record.run_dir / "report.html"
    if report.exists():
        lines.append(f"report: {report}")
    return "\n".join(lines)


def _result(step: StepRecord) -> str:
    """How the step's predictions were obtained: ``created``, ``reused`` ... or ``3 created, 2 reused``."""
    if not step.items:
        how = step.obtained or "-"
        return f"{how} ({step.note})" if step.note else how  # on a resume: what changed
    counts = Counter(item.obtained or item.status for item in step.items)
    return ", ".join(f"{n} {how}" for how, n in sorted(counts.items()))

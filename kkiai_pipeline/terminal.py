"""What a person sees in the terminal: the progress bar during a run, a summary table after it."""

from __future__ import annotations

import os
import string
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from . import pipeline_yaml
from .rundir import RunRecord, StepRecord
from .sweep_accounting import totals_line

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
        self._bar.set_postfix(running=len(self._started), failed=self._failed, refresh=True)
        self._bar.close()

    def _refresh(self) -> None:
        # Drawn by the next update, at most every tqdm's mininterval (0.1 s): a foreach of 10,000 items
        # must not redraw the bar 20,000 times.
        self._bar.set_postfix(running=len(self._started), failed=self._failed, refresh=False)


def summary(record: RunRecord) -> str:
    """A table of the steps (status, time, how each result was obtained, outputs), what the run paid
    for, then where the run is."""
    rows = [("step", "status", "time", "result", "outputs")]
    for sid, step in record.steps.items():
        outputs = _shown_outputs([a.path for a in step.outputs]) or (step.error or "")
        seconds = step.seconds
        rows.append(
            (sid, step.status, f"{seconds:.1f}s" if seconds is not None else "-", _result(step), outputs)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ]
    lines.append(totals_line(asdict(record.totals())))
    lines.append(f"run {record.status}: {record.run_dir}")
    report = record.run_dir / "report.html"
    if report.exists():
        lines.append(f"report: {report}")
    return "\n".join(lines)


#: A step with more output files than this (a foreach of thousands) shows its first and last ones.
SHOWN_OUTPUTS = 6


def _shown_outputs(paths: list[str]) -> str:
    if len(paths) <= SHOWN_OUTPUTS:
        return ", ".join(paths)
    half = SHOWN_OUTPUTS // 2
    return f"{', '.join(paths[:half])}, … {', '.join(paths[-half:])} ({len(paths):,} files)"


def _result(step: StepRecord) -> str:
    """How the step's predictions were obtained: ``created``, ``reused`` ... or ``3 created, 2 reused``."""
    if not step.items:
        how = step.obtained or "-"
        return f"{how} ({step.note})" if step.note else how  # on a resume: what changed
    counts = Counter(item.obtained or item.status for item in step.items)
    return ", ".join(f"{n} {how}" for how, n in sorted(counts.items()))


# A description longer than this is cut on the help page (a file's whole text is never printed there).
DESCRIPTION_CHARS = 80


def help_page(template: str, pipelines: Mapping[str, Path]) -> str:
    """``kkiai-run --help``: ``template`` (conf/hydra/help/kkiai.yaml) with ``$PIPELINES`` filled in."""
    width = max((len(name) for name in pipelines), default=0)
    lines = [f"  {name.ljust(width)}  {describe(path)}" for name, path in sorted(pipelines.items())]
    return string.Template(template).safe_substitute(PIPELINES="\n".join(lines) or "  (none found)")


def describe(path: Path) -> str:
    """The ``description:`` of the pipeline file ``path`` on one line, or why the file does not load.

    The file is read the way a run reads it (bounded, strict YAML, see pipeline_yaml), so a hostile or
    broken file is listed as broken and never stops the page.
    """
    try:
        data = pipeline_yaml.load(pipeline_yaml.read_text(path))
    except pipeline_yaml.YAMLProblem as exc:
        where = f" (line {exc.line})" if exc.line else ""
        return _cut(f"[broken: {exc.message}{where}]")
    if not isinstance(data, dict):
        return "[broken: a pipeline file must be a mapping (name, params, steps)]"
    text = data.get("description")
    return _cut(" ".join(text.split())) if isinstance(text, str) else ""


def _cut(text: str) -> str:
    return text if len(text) <= DESCRIPTION_CHARS else text[: DESCRIPTION_CHARS - 1].rstrip() + "…"


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)), row[-1]]).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def write_stdout(text: str) -> int:
    """Print ``text`` and a newline; 1 (and quiet) when the reader went away (``| head``), else 0."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `kkiai-models | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0

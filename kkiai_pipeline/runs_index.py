"""The runs and sweeps under some folders, one :class:`Entry` each: what ``kkiai-runs`` lists.

A run is a directory holding ``run.json``; a sweep is a directory holding ``sweep.json`` (written when
it ends) or Hydra's ``multirun.yaml`` (written when it starts). Runs are read only through
:func:`kkiai_pipeline.rundir.read_record`, the tolerant reader, and sweeps through
:func:`kkiai_pipeline.multirun.collect_jobs`, so a crashed run, a run with a journal, an old (v1)
run.json or a garbage file is listed (as ``unreadable``, with the reason) and never stops the listing.
Counts and the estimated cost come from :meth:`~kkiai_pipeline.rundir.RunRecord.totals`, the one
definition (a sweep's: :func:`~kkiai_pipeline.sweep_accounting.sweep_totals` of its jobs, as sweep.json).

The search is bounded: it goes at most :data:`MAX_DEPTH` folders down, skips hidden folders and a
run's own ``steps/``, never enters a run or a sweep it found, and stops after :data:`MAX_DIRS` folders
(the listing then says it is incomplete).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import yaml

from .multirun import SWEEP_FILE, collect_jobs
from .report.html import output_file
from .report.run_report import REPORT
from .rundir import MANIFEST, RunRecord, read_record
from .sweep_accounting import sweep_totals

MAX_DEPTH = 5  # outputs/<pipeline>/<time> and multirun/<date>/<time> are 2 deep
MAX_DIRS = 50_000
MAX_THUMBS = 8  # final outputs kept per entry (the index shows them as thumbnails)
MULTIRUN_FILE = "multirun.yaml"
_NO_RUN = frozenset({"not run", "error", "planned"})  # collect_jobs' statuses of a job without run.json
UNREADABLE = "unreadable"
GRID_FILE = "grid.html"

Kind = Literal["run", "sweep"]


@dataclass(frozen=True)
class Entry:
    """One run or sweep as listed: ``status`` is the run's or sweep's, or ``unreadable`` (``problem``
    says why). The counts are None when nothing could be read; a sweep's are its jobs' sums."""

    kind: Kind
    path: Path
    pipeline: str
    status: str
    started_at: str | None = None
    created: int | None = None
    reused: int | None = None
    predict_time: float | None = None
    cost: float | None = None  # estimated, when a price table priced it
    jobs: int | None = None  # a sweep: how many jobs
    problem: str | None = None  # why the record could not be read (in whole or in part)
    error: str | None = None  # a run: the first step that failed, and why
    outputs: tuple[Path, ...] = ()  # final outputs on disk (a sweep: each job's first), at most MAX_THUMBS
    page: Path | None = None  # report.html of a run, grid.html of a sweep, if written

    def to_json(self) -> dict[str, Any]:
        """The entry for ``kkiai-runs --json`` (paths as given, counts as numbers or null)."""
        return {
            "kind": self.kind,
            "path": str(self.path),
            "pipeline": self.pipeline,
            "status": self.status,
            "started_at": self.started_at,
            "created": self.created,
            "reused": self.reused,
            "predict_time": self.predict_time,
            "cost": self.cost,
            "jobs": self.jobs,
            "problem": self.problem,
            "error": self.error,
            "page": str(self.page) if self.page else None,
            "outputs": [str(p) for p in self.outputs],
        }


@dataclass
class Found:
    """What :func:`find` found: run and sweep directories, and whether it stopped early."""

    runs: list[Path] = field(default_factory=list)
    sweeps: list[Path] = field(default_factory=list)
    incomplete: bool = False


def find(roots: Iterable[Path], *, max_depth: int = MAX_DEPTH, max_dirs: int = MAX_DIRS) -> Found:
    """The run and sweep directories under ``roots`` (a root may itself be one), bounded."""
    found = Found()
    budget = [max_dirs]
    for root in roots:
        _walk(root, 0, max_depth, found, budget)
    return found


def _walk(folder: Path, depth: int, max_depth: int, found: Found, budget: list[int]) -> None:
    if budget[0] <= 0:
        found.incomplete = True
        return
    budget[0] -= 1
    try:
        with os.scandir(folder) as scan:
            children = list(scan)
    except OSError:
        return
    names = {child.name for child in children}
    if SWEEP_FILE in names or MULTIRUN_FILE in names:
        found.sweeps.append(folder)
        return
    if MANIFEST in names:
        found.runs.append(folder)
        return
    if depth >= max_depth:
        return
    for child in sorted(children, key=lambda c: c.name):
        if child.name.startswith(".") or child.name == "steps" or not _is_dir(child):
            continue
        _walk(Path(child.path), depth + 1, max_depth, found, budget)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def entries(roots: Sequence[Path]) -> tuple[list[Entry], bool]:
    """Every run and sweep under ``roots``, oldest first; and whether the search stopped early."""
    found = find(roots)
    listed = [read_run(path) for path in found.runs] + [read_sweep(path) for path in found.sweeps]
    listed.sort(key=lambda e: (e.started_at or "", str(e.path)))
    return listed, found.incomplete


def read_run(run_dir: Path) -> Entry:
    """The entry of one run directory, as far as its run.json can be read."""
    reading = read_record(run_dir)
    run = reading.record
    page = run_dir / REPORT
    if run is None:
        return Entry("run", run_dir, "", UNREADABLE, problem=reading.problem, page=_if_file(page))
    totals = run.totals()
    return Entry(
        "run",
        run_dir,
        run.pipeline,
        run.status,
        started_at=run.started_at or None,
        created=totals.created,
        reused=totals.reused,
        predict_time=totals.predict_time,
        cost=totals.cost,
        problem=reading.problem,
        error=_first_error(run),
        outputs=tuple(islice(final_outputs(run), MAX_THUMBS)),
        page=_if_file(page),
    )


def read_sweep(sweep_dir: Path) -> Entry:
    """The entry of one sweep: its status from sweep.json (``unfinished`` without one), its jobs' sums."""
    try:
        jobs = collect_jobs(sweep_dir)
    except (OSError, ValueError, TypeError, yaml.YAMLError) as exc:  # a job's overrides.yaml damaged
        why = "a job's .hydra/overrides.yaml could not be read: " + " ".join(str(exc).split())
        return Entry("sweep", sweep_dir, "", UNREADABLE, problem=why, page=_if_file(sweep_dir / GRID_FILE))
    status, problem = _sweep_status(sweep_dir, [str(job["status"]) for job in jobs])
    totals = sweep_totals(jobs)  # as sweep.json sums its jobs' RunRecord.totals()
    ran = any(job["status"] not in _NO_RUN for job in jobs)
    pipeline, thumbs = _sweep_look(sweep_dir, jobs)
    starts = [str(job["started_at"]) for job in jobs if job["started_at"]]
    return Entry(
        "sweep",
        sweep_dir,
        pipeline,
        status,
        started_at=min(starts) if starts else None,
        created=totals["created"] if ran else None,
        reused=totals["reused"] if ran else None,
        predict_time=totals["predict_time"] if ran else None,
        cost=totals["cost"],
        jobs=len(jobs),
        problem=problem,
        outputs=thumbs,
        page=_if_file(sweep_dir / GRID_FILE),
    )


def _sweep_look(sweep_dir: Path, jobs: list[dict[str, Any]]) -> tuple[str, tuple[Path, ...]]:
    """The sweep's pipeline and the first final output of its first jobs (reading no more than needed)."""
    pipeline, thumbs = "", list[Path]()
    for job in jobs:
        if len(thumbs) >= MAX_THUMBS:
            break
        if job["status"] in _NO_RUN:
            continue
        run = read_record(sweep_dir / str(job["run_dir"])).record
        if run is not None:
            pipeline = pipeline or run.pipeline
            thumbs.extend(islice(final_outputs(run), 1))
    return pipeline, tuple(thumbs)


def _first_error(run: RunRecord) -> str | None:
    """``step: error`` of the first step that failed (a skipped step only names its dependency)."""
    return next(
        (f"{sid}: {s.error}" for sid, s in run.steps.items() if s.error and s.status != "skipped"), None
    )


def _sweep_status(sweep_dir: Path, job_statuses: list[str]) -> tuple[str, str | None]:
    try:
        raw = json.loads((sweep_dir / SWEEP_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        running = "running" in job_statuses
        return ("running" if running else "unfinished"), "no sweep.json (the sweep has not ended)"
    except (OSError, ValueError) as exc:
        return UNREADABLE, f"sweep.json could not be read: {exc}"
    status = raw.get("status") if isinstance(raw, dict) else None
    if not isinstance(status, str):
        return UNREADABLE, "sweep.json has no status"
    return status, None


def final_outputs(run: RunRecord) -> Iterator[Path]:
    """The files on disk of the run's final steps (those no other step depends on), in step order."""
    needed = {dep for step in run.steps.values() for dep in step.depends_on}
    for sid, step in run.steps.items():
        if sid in needed:
            continue
        for out in step.outputs:
            file = output_file(run.run_dir, out.path)
            if file.is_file():
                yield file


def short_time(stamp: str | None) -> str:
    """``2026-11-29T21:32:05.123Z`` -> ``2026-11-29 21:32:05`` (UTC, as recorded); empty if none."""
    return stamp[:19].replace("T", " ") if stamp else ""


def _if_file(path: Path) -> Path | None:
    return path if path.is_file() else None

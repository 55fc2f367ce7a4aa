"""Hydra multiruns: the jobs of a sweep run concurrently, and the sweep gets its own files.

Hydra's basic launcher calls the task function for one job after another. Under that launcher, a
multirun job only *prepares* itself (settings, pipeline, every check, the plan) and joins the
:class:`Sweep` that ``kkiai-run`` holds; when Hydra's multirun returns, the one
:class:`~.orchestrator.Orchestrator` runs them all at once, sharing one ledger (identical
predictions paid once), one connection pool, one rate limit and one emulator. So a sweep takes
about as long as its slowest job, without installing a launcher plugin (Hydra only discovers those in
the ``hydra_plugins`` namespace package, which editable installs break). Other launchers (``ray``,
``joblib``) run each job where they put it, at once, as a normal run, and :class:`SweepCallback`
ends the sweep.

Either way the sweep ends with ``sweep.json`` and ``summary.csv`` at its root (one row a job:
overrides, status, timings, outputs) and the comparison grid; its exit code is 0 when every job
succeeded (or, in a dry run, was planned), 2 when a job had bad input, 130 when interrupted, else 1.
A sweeper that needs each job's return value (Optuna, Nevergrad, Ax) is refused: :class:`SweeperCheck`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from .budget import Budget, combine
from .config_schema import grid_steps
from .errors import KkiaiError
from .orchestrator import CURRENT_JOB, Job, Orchestrator
from .rundir import read_record, write_json_atomic
from .sweep_accounting import job_totals, planned_cost, sweep_totals, totals_line, write_summary_csv
from .terminal import ProgressBar

log = logging.getLogger(__name__)

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
SWEEP_FILE = "sweep.json"
SUMMARY_FILE = "summary.csv"
ERROR_FILE = "error.json"
PLAN_FILE = "plan.json"  # what a dry run leaves in its directory instead of run.json
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def runs_deferred() -> bool:
    """Whether the current job is part of a multirun whose jobs run here, in this process, later."""
    hydra_cfg = HydraConfig.get()
    return hydra_cfg.mode == RunMode.MULTIRUN and hydra_cfg.launcher.get("_target_") == BASIC_LAUNCHER


def note_error(message: str) -> None:
    """Remember, in the job's directory, that the current job stopped on bad input (sweep.json shows it)."""
    write_json_atomic(Path(HydraConfig.get().runtime.output_dir) / ERROR_FILE, {"error": message})


def _job_error(job_dir: Path) -> str | None:
    try:
        error = json.loads((job_dir / ERROR_FILE).read_text(encoding="utf-8")).get("error")
    except (OSError, ValueError, AttributeError):
        return None
    return str(error) if error else None


@dataclass
class Sweep:
    """The multirun this process takes part in: the jobs it runs together at the end (under Hydra's
    basic launcher), and where the sweep's files go."""

    sweep_dir: Path | None = None
    grid_step: tuple[str, ...] | None = None  # the steps each grid cell shows (None: the last)
    queued: list[Job] = field(default_factory=list)
    planned: list[Budget] = field(default_factory=list)  # a dry run's jobs' budgets, summed at the end

    def finish(self, *, orchestrator: Orchestrator) -> int:
        """Run the queued jobs together, then write the sweep's files; returns the sweep's exit code."""
        assert self.sweep_dir is not None
        if self.planned:  # a dry run: the whole sweep's count, shared predictions once
            budget = combine(self.planned)
            print(f"Sweep of {budget.jobs} jobs: {budget.summary()}.")
            if budget.over_limit:
                print(f"Over the budget: {budget.refusal()}.")
        interrupted = False
        if self.queued:
            with _job_logs(self.queued):
                total = sum(len(job.plan.steps) for job in self.queued)
                progress = ProgressBar(total, enabled=self.queued[0].settings.progress)
                for job in self.queued:
                    job.progress = _Labelled(progress, f"{job.num}:")
                try:
                    orchestrator.run(self.queued)
                except KkiaiError as exc:  # found before anything was sent (a Cog server down)
                    log.error("%s", exc)
                    return exc.exit_code
                finally:
                    progress.close()
            interrupted = orchestrator.interrupted
        return end_sweep(self.sweep_dir, self.grid_step, interrupted=interrupted)


def end_sweep(
    sweep_dir: Path, grid_step: Sequence[str] | str | None, *, interrupted: bool, echo: bool = True
) -> int:
    """sweep.json, summary.csv, the grid and (``echo``) the terminal table; returns the exit code."""
    jobs = collect_jobs(sweep_dir)
    code = write_sweep_files(sweep_dir, jobs, interrupted=interrupted)
    _write_grid(sweep_dir, grid_step)
    if echo:
        print(sweep_table(sweep_dir, jobs), file=sys.stderr)
    return code


class SweeperCheck(Callback):
    """Refuses, before any job, a sweeper other than Hydra's basic one (Optuna, Nevergrad, Ax ...).

    Those choose the next jobs from the value each job returns. Here a job under the basic launcher
    returns as soon as it is planned (it runs with the others when the multirun ends), and a launched
    job returns its exit code: an optimiser would see no objective and report a meaningless best.
    Registered first in ``conf/config.yaml`` under ``hydra.callbacks``.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = config.hydra.sweeper.get("_target_")
        if target != BASIC_SWEEPER:
            print(
                f"kkiai-run: error: the sweeper {target} picks its jobs from the values they return, and a "
                "kkiai-run job returns no objective (its jobs run together after the sweep is planned). "
                "Use Hydra's basic sweeper (the default): list or range the values to try, e.g. "
                "pipeline.params.x=1,2,3. Nothing was run",
                file=sys.stderr,
            )
            raise SystemExit(2)


class SweepCallback(Callback):
    """Writes the sweep's files when a process launcher (ray, joblib) ran the jobs elsewhere.

    Under the basic launcher the jobs run after Hydra's multirun, in ``kkiai-run`` itself, which then
    writes the files; this callback leaves that sweep alone. The exit code leaves as SystemExit.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.launcher.get("_target_") == BASIC_LAUNCHER:
            return
        code = end_sweep(Path(str(config.hydra.sweep.dir)), grid_steps(config), interrupted=False)
        if code:
            raise SystemExit(code)


@dataclass(frozen=True)
class _Labelled:
    """One job's view of the sweep's progress bar: step ids are only unique within a job."""

    bar: ProgressBar
    prefix: str

    def started(self, label: str) -> None:
        self.bar.started(self.prefix + label)

    def finished(self, label: str, status: str) -> None:
        self.bar.finished(self.prefix + label, status)

    def expect(self, count: int) -> None:
        self.bar.expect(count)


class _JobLogRouter(logging.Handler):
    """Sends each log record of the batch to the run.log of the job it came from."""

    def __init__(self, files: dict[int, logging.Handler]) -> None:
        super().__init__()
        self.files = files

    def emit(self, record: logging.LogRecord) -> None:
        job = CURRENT_JOB.get()
        handler = self.files.get(job) if job is not None else None
        if handler is not None and record.levelno >= handler.level:
            handler.handle(record)


@contextmanager
def _job_logs(jobs: list[Job]) -> Iterator[None]:
    """While the batch runs, log lines go to their job's run.log, and only warnings to the terminal.

    By then Hydra's logging points at the last job's file and its own console format.
    """
    root = logging.getLogger()
    replaced = list(root.handlers)
    files: dict[int, logging.Handler] = {}
    for job in jobs:
        job_file = logging.FileHandler(job.settings.run_dir / "run.log", encoding="utf-8")
        job_file.setLevel(logging.INFO)
        job_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        files[job.num or 0] = job_file
    router = _JobLogRouter(files)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    level = root.level
    for handler in replaced:
        root.removeHandler(handler)
    root.addHandler(router)
    root.addHandler(console)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(router)
        root.removeHandler(console)
        for opened in files.values():
            opened.close()
        for handler in replaced:
            root.addHandler(handler)


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One summary per job directory of the sweep (whichever launcher ran it)."""
    jobs: list[dict[str, Any]] = []
    for overrides_file in sweep_dir.glob("*/.hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        num = int(job_dir.name) if job_dir.name.isdigit() else len(jobs)
        overrides = yaml.safe_load(overrides_file.read_text(encoding="utf-8")) or []
        error = _job_error(job_dir)
        jobs.append(_job_summary(sweep_dir, job_dir, num, [str(o) for o in overrides], error))
    return sorted(jobs, key=lambda j: j["job"])


def _job_summary(
    sweep_dir: Path, job_dir: Path, num: int, overrides: list[str], error: str | None
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "job": num,
        "overrides": overrides,
        "run_dir": job_dir.relative_to(sweep_dir).as_posix(),
        "status": "error" if error else "not run",
        "error": error,
        "started_at": None,
        "finished_at": None,
        "duration_s": None,
        "outputs": [],
    }
    run = read_record(job_dir).record
    summary.update(job_totals(run))  # created, reused, predict_time, cost
    if run is None:
        if not error and (job_dir / PLAN_FILE).is_file():  # a dry run: checked and planned, nothing sent
            summary["status"] = "planned"
            summary.update(planned_cost(job_dir, PLAN_FILE))
        return summary
    failed = [f"{sid}: {step.error}" for sid, step in run.steps.items() if step.error]
    summary.update(
        status=run.status,
        error=error or ("; ".join(failed) if failed else None),
        started_at=run.started_at or None,
        finished_at=run.finished_at,
        duration_s=run.seconds,
        outputs=[
            (job_dir / out.path).relative_to(sweep_dir).as_posix()
            for step in run.steps.values()
            for out in step.outputs
        ],
    )
    return summary


def write_sweep_files(sweep_dir: Path, jobs: list[dict[str, Any]], *, interrupted: bool) -> int:
    """sweep.json and summary.csv at the sweep root; returns the sweep's exit code."""
    statuses = {job["status"] for job in jobs}
    if interrupted or "canceled" in statuses:
        code = 130
    elif "error" in statuses:
        code = 2
    else:
        code = 0 if statuses <= {"succeeded", "planned"} else 1
    status = {0: "succeeded", 130: "canceled"}.get(code, "failed")
    if code == 0 and statuses == {"planned"}:
        status = "planned"
    totals = sweep_totals(jobs)
    write_json_atomic(
        sweep_dir / SWEEP_FILE, {"status": status, "exit_code": code, "totals": totals, "jobs": jobs}
    )
    write_summary_csv(sweep_dir / SUMMARY_FILE, jobs, totals)
    return code


def _write_grid(sweep_dir: Path, step: Sequence[str] | str | None) -> None:
    try:
        from .report import write_sweep_grid
    except ImportError:  # the report package is optional for the sweep's own files
        return
    try:
        write_sweep_grid(sweep_dir, step=step)
    except Exception as exc:  # a picture must never fail a sweep that ran
        log.error("could not draw the sweep grid: %s", exc)


def sweep_table(sweep_dir: Path, jobs: list[dict[str, Any]]) -> str:
    """The terminal summary of a sweep: a line a job, then where its files are."""
    lines = [f"{'job':>4}  {'status':<10}  {'time':>7}  overrides"]
    for job in jobs:
        took = f"{job['duration_s']:.1f}s" if job["duration_s"] is not None else "-"
        lines.append(f"{job['job']:>4}  {job['status']:<10}  {took:>7}  {' '.join(job['overrides'])}")
    lines.append(totals_line(sweep_totals(jobs)))
    lines.append(f"sweep: {sweep_dir / SWEEP_FILE}, {sweep_dir / SUMMARY_FILE}")
    grids = [sweep_dir / name for name in ("grid.html", "grid.png") if (sweep_dir / name).exists()]
    if grids:
        lines.append("grid: " + ", ".join(str(g) for g in grids))
    return "\n".join(lines)

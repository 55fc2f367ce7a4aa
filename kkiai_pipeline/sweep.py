"""Hydra multiruns: the jobs of a sweep run concurrently, and the sweep gets its own files.

Hydra's basic launcher calls the task function for one job after another. Under that launcher, a
multirun job only *prepares* itself here (settings, pipeline, every check, the plan) and is queued;
the sweep callback's ``on_multirun_end`` then runs all queued jobs at once on one event loop, over one
API client (one connection pool, one rate limit) and one emulator for ``api=sandbox``. So a sweep takes
about as long as its slowest job, without installing a launcher plugin (Hydra only discovers those in
the ``hydra_plugins`` namespace package, which editable installs break). Other launchers (``ray``,
``joblib``) run each job where they put it, at once, as a normal run.

Either way ``on_multirun_end`` then writes, at the sweep root, ``sweep.json`` and ``summary.csv`` (one
row a job: overrides, status, timings, outputs) and the comparison grid, and records the sweep's exit
code: 0 when every job succeeded, 2 when a job had bad input, 130 when interrupted, else 1.
"""

from __future__ import annotations

import asyncio
import contextvars
import csv
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from .api.prediction import parse_timestamp
from .planning import Plan
from .rundir import MANIFEST, RunRecord, write_json_atomic
from .runner import Connections, api_base_url, execute_job, interrupts_cancel, new_record, previous_record
from .settings import Settings
from .terminal import ProgressBar

log = logging.getLogger(__name__)

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
SWEEP_FILE = "sweep.json"
SUMMARY_FILE = "summary.csv"


@dataclass
class QueuedJob:
    """A checked, planned job waiting for the sweep's batch."""

    num: int
    plan: Plan
    settings: Settings


@dataclass
class _Sweep:
    """What the jobs of the running sweep left for its end (launcher and callback share a process)."""

    queued: list[QueuedJob] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)  # job number -> the usage error it hit
    exit_code: int | None = None


SWEEP = _Sweep()


def runs_deferred() -> bool:
    """Whether the current job is part of a multirun whose jobs run here, in this process, later."""
    hydra_cfg = HydraConfig.get()
    return hydra_cfg.mode == RunMode.MULTIRUN and hydra_cfg.launcher.get("_target_") == BASIC_LAUNCHER


def queue(plan: Plan, settings: Settings) -> None:
    """Keep a prepared job for the batch at the end of the sweep."""
    SWEEP.queued.append(QueuedJob(HydraConfig.get().job.num, plan, settings))


ERROR_FILE = "error.json"


def note_error(message: str) -> None:
    """Remember that the current job stopped on bad input (it is shown in sweep.json).

    Also written to the job's directory, because under a process launcher (joblib, ray) the job ran in
    another process than the one that ends the sweep.
    """
    hydra_cfg = HydraConfig.get()
    SWEEP.errors[hydra_cfg.job.num] = message
    write_json_atomic(Path(hydra_cfg.runtime.output_dir) / ERROR_FILE, {"error": message})


def _job_error(job_dir: Path) -> str | None:
    try:
        error = json.loads((job_dir / ERROR_FILE).read_text(encoding="utf-8")).get("error")
    except (OSError, ValueError, AttributeError):
        return None
    return str(error) if error else None


class SweepCallback(Callback):
    """Runs the queued jobs at the end of a multirun, then writes the sweep's files.

    The grid shows the output of the step named by the config's ``grid_step`` (default: the last).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SWEEP.queued.clear()
        SWEEP.errors.clear()
        SWEEP.exit_code = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._end(config)
        except Exception:
            # Hydra would turn this into a mere warning; a sweep that could not finish must fail.
            log.exception("the sweep could not be completed")
            SWEEP.exit_code = 1

    def _end(self, config: DictConfig) -> None:
        interrupted = run_batch(SWEEP.queued) if SWEEP.queued else False
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = collect_jobs(sweep_dir, SWEEP.errors)
        SWEEP.exit_code = write_sweep_files(sweep_dir, jobs, interrupted=interrupted)
        grid_step = config.get("grid_step")
        _write_grid(sweep_dir, str(grid_step) if grid_step else None)
        print(sweep_table(sweep_dir, jobs), file=sys.stderr)


def run_batch(jobs: list[QueuedJob]) -> bool:
    """Run ``jobs`` concurrently (one emulator for the sandbox jobs); True if interrupted."""
    with ExitStack() as stack:
        sandbox = next((j.settings.api for j in jobs if j.settings.api.kind == "sandbox"), None)
        sandbox_url = stack.enter_context(api_base_url(sandbox)) if sandbox else None
        with _job_logs(jobs):
            return asyncio.run(_run_all(jobs, sandbox_url))


async def _run_all(jobs: list[QueuedJob], sandbox_url: str | None) -> bool:
    pools: dict[tuple[Any, ...], Connections] = {}
    total = sum(len(job.plan.steps) for job in jobs)
    progress = ProgressBar(total, enabled=jobs[0].settings.progress)
    tasks = []
    for job in jobs:
        api = job.settings.api
        base_url = sandbox_url if api.kind == "sandbox" else api.base_url
        assert base_url is not None
        cog = job.settings.cog
        key = (base_url, api.token, api.client, tuple(sorted(cog.servers.items())), cog.options)
        if key not in pools:
            pools[key] = Connections.open(job.settings, base_url)
        tasks.append(_run_job(job, base_url, pools[key], progress))
    interrupted = False
    try:
        with interrupts_cancel(asyncio.current_task()):
            await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        interrupted = True  # every job has ended its predictions and written its run.json
    finally:
        progress.close()
        for pool in pools.values():
            await pool.aclose()
    return interrupted


async def _run_job(
    job: QueuedJob, base_url: str, connections: Connections, progress: ProgressBar
) -> RunRecord:
    _CURRENT_JOB.set(job.num)
    record = previous_record(job.plan, job.settings) or new_record(job.plan, job.settings, base_url=base_url)
    record.api["base_url"] = base_url
    labelled = _Labelled(progress, f"{job.num}:")
    return await execute_job(
        job.plan, record, job.settings, connections=connections, progress=labelled, shared=True
    )


@dataclass(frozen=True)
class _Labelled:
    """One job's view of the sweep's progress bar: step ids are only unique within a job."""

    bar: ProgressBar
    prefix: str

    def step_started(self, step_id: str) -> None:
        self.bar.step_started(self.prefix + step_id)

    def step_finished(self, step_id: str, status: str) -> None:
        self.bar.step_finished(self.prefix + step_id, status)


_CURRENT_JOB: contextvars.ContextVar[int | None] = contextvars.ContextVar("kkiai_job", default=None)


class _JobLogRouter(logging.Handler):
    """Sends each log record of the batch to the run.log of the job it came from."""

    def __init__(self, files: dict[int, logging.Handler]) -> None:
        super().__init__()
        self.files = files

    def emit(self, record: logging.LogRecord) -> None:
        job = _CURRENT_JOB.get()
        handler = self.files.get(job) if job is not None else None
        if handler is not None and record.levelno >= handler.level:
            handler.handle(record)


@contextmanager
def _job_logs(jobs: list[QueuedJob]) -> Iterator[None]:
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
        files[job.num] = job_file
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


def collect_jobs(sweep_dir: Path, errors: dict[int, str]) -> list[dict[str, Any]]:
    """One summary per job directory of the sweep (whichever launcher ran it)."""
    jobs: list[dict[str, Any]] = []
    for overrides_file in sweep_dir.glob("*/.hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        num = int(job_dir.name) if job_dir.name.isdigit() else len(jobs)
        overrides = yaml.safe_load(overrides_file.read_text(encoding="utf-8")) or []
        error = errors.get(num) or _job_error(job_dir)
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
    try:
        manifest = json.loads((job_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return summary
    start, end = parse_timestamp(manifest.get("started_at")), parse_timestamp(manifest.get("finished_at"))
    failed = [f"{sid}: {s.get('error')}" for sid, s in manifest.get("steps", {}).items() if s.get("error")]
    summary.update(
        status=manifest.get("status"),
        error=error or ("; ".join(failed) if failed else None),
        started_at=manifest.get("started_at"),
        finished_at=manifest.get("finished_at"),
        duration_s=round((end - start).total_seconds(), 3) if start and end else None,
        outputs=[
            (job_dir / o["path"]).relative_to(sweep_dir).as_posix()
            for step in manifest.get("steps", {}).values()
            for o in step.get("outputs", [])
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
        code = 0 if statuses <= {"succeeded"} else 1
    status = {0: "succeeded", 130: "canceled"}.get(code, "failed")
    write_json_atomic(sweep_dir / SWEEP_FILE, {"status": status, "exit_code": code, "jobs": jobs})
    columns = [
        "job",
        "overrides",
        "status",
        "duration_s",
        "started_at",
        "finished_at",
        "run_dir",
        "outputs",
        "error",
    ]
    with (sweep_dir / SUMMARY_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for job in jobs:
            writer.writerow(
                {**job, "overrides": " ".join(job["overrides"]), "outputs": ";".join(job["outputs"])}
            )
    return code


def _write_grid(sweep_dir: Path, step: str | None) -> None:
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
    lines.append(f"sweep: {sweep_dir / SWEEP_FILE}, {sweep_dir / SUMMARY_FILE}")
    return "\n".join(lines)

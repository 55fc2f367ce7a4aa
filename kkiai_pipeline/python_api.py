"""The Python API: ``kkiai_pipeline.run``, ``run_async`` and ``sweep``, composed as ``kkiai-run`` composes.

::

    result = kkiai_pipeline.run("product_shots", overrides=["api=sandbox"])
    result = await kkiai_pipeline.run_async("product_shots", overrides=["api=sandbox"])  # in a notebook
    swept = kkiai_pipeline.sweep("product_shots", overrides=["params.surface=marble,oak"])

Each call goes the way of the command line, in the same order and with the same checks: the overrides
are refused if they set or hold the API token, or name no setting (:func:`.settings.check_command_line`);
pipelines are found and registered as :func:`.cli.main` does; Hydra's compose API composes the shipped
config (``paths.shipped_dir("conf")``); :func:`.settings.load_settings` types it; the run directory
(``hydra.run.dir``, by default ``outputs/<pipeline>/<timestamp>``) is claimed as the CLI's Hydra
callback claims it (:func:`.claim.claim_dir`), and gets ``.hydra/`` and ``run.log``. Bad input raises
the project's exceptions (:class:`.errors.ConfigError`, :class:`.errors.PipelineError` with every
problem) before anything is sent. Nothing is printed unless asked (``progress=True``, ``verbose=True``).

``run`` works inside a running event loop (Jupyter): it runs the job on a worker thread with a loop of
its own. Composition always happens on the caller's thread, under one lock, since Hydra's global
state is not thread-safe.

A sweep expands its overrides as Hydra's basic sweeper does (the product of every ``a,b,c``,
``choice()`` and ``range()`` sweep, in order), composes each job, and runs all of them in one
:class:`.orchestrator.Orchestrator`, so a prediction two jobs share is paid once; it ends with
``sweep.json`` and ``summary.csv`` in the sweep directory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import difflib
import itertools
import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from . import discovery
from .claim import Claim, claim_dir
from .cli import check_token_words, load_pipeline
from .config_schema import grid_steps
from .dryrun import dry_run
from .errors import ConfigError
from .multirun import end_sweep
from .orchestrator import CURRENT_JOB, Job, Orchestrator, prepare
from .paths import shipped_dir
from .pipeline import Pipeline
from .rundir import RunRecord, StepRecord
from .secrets import RedactingFilter
from .settings import Settings, check_command_line, check_pipeline_values, load_settings
from .terminal import ProgressBar, summary

log = logging.getLogger("kkiai_pipeline")

_T = TypeVar("_T")
_COMPOSING = threading.Lock()  # Hydra's GlobalHydra, HydraConfig and ConfigStore are process-wide
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as conf/hydra/job_logging's file


@dataclass(frozen=True)
class Output:
    """One stored output file of a step."""

    path: Path  # absolute
    url: str  # where the service served it (a data: URI shortened)
    sha256: str
    content_type: str
    bytes: int


@dataclass(frozen=True)
class StepResult:
    """How one step ended; a ``foreach`` step has one ``items`` entry per item."""

    id: str
    status: str  # succeeded, failed, canceled, aborted, skipped, unresolved, pending
    prediction_id: str | None
    obtained: str | None  # created, reused, shared, reattached, recovered (None: not obtained)
    error: str | None
    outputs: tuple[Output, ...]
    items: tuple[StepResult, ...] = ()

    @property
    def files(self) -> tuple[Output, ...]:
        """Its outputs, and each item's, in order."""
        return self.outputs + tuple(out for item in self.items for out in item.files)


@dataclass(frozen=True)
class RunResult:
    """A finished run (read from its ``run.json`` record)."""

    status: str  # succeeded, failed, canceled; "planned" for dry_run=true
    run_dir: Path
    pipeline: str
    steps: Mapping[str, StepResult]
    plan: str | None = None  # dry_run=true: the plan as kkiai-run prints it

    @property
    def ok(self) -> bool:
        """Whether every step succeeded (a dry run is ok: it found nothing wrong)."""
        return self.status in ("succeeded", "planned")

    @property
    def outputs(self) -> tuple[Output, ...]:
        """Every stored file of the run, step by step."""
        return tuple(out for step in self.steps.values() for out in step.files)


@dataclass(frozen=True)
class SweepJob:
    """One job of a sweep: its own overrides and its run."""

    num: int
    overrides: tuple[str, ...]
    result: RunResult


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep; ``sweep_dir`` holds ``sweep.json``, ``summary.csv`` and a directory per job."""

    status: str  # succeeded (every job), canceled, failed
    sweep_dir: Path
    jobs: tuple[SweepJob, ...]

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


# -- the public calls ---------------------------------------------------------------------------------


def run(
    pipeline: str, overrides: Sequence[str] = (), *, progress: bool = False, verbose: bool = False
) -> RunResult:
    """Run ``pipeline`` (a name, as ``pipeline=NAME``) with Hydra ``overrides``, as ``kkiai-run`` would.

    Blocks until the run ends. Inside a running event loop (a notebook) the run goes on a worker
    thread with its own loop. Raises ConfigError / PipelineError (nothing sent) on bad input; a step
    that fails does not raise: see ``result.status`` and each step's ``error``.
    """
    job, claim = _compose_job(pipeline, overrides)
    return _blocking(lambda: _finish_sync(job, claim, progress=progress, verbose=verbose))


async def run_async(
    pipeline: str, overrides: Sequence[str] = (), *, progress: bool = False, verbose: bool = False
) -> RunResult:
    """:func:`run` on the caller's running event loop (cancel the task to stop the run)."""
    job, claim = _compose_job(pipeline, overrides)
    if isinstance(job, RunResult):
        claim.release()
        return job
    try:
        with _run_logs([job], verbose=verbose), _progress([job], enabled=progress):
            [record] = await Orchestrator().run_async([job])
    finally:
        claim.release()
    return _result(record, verbose=verbose)


def run_sweep(
    pipeline: str, overrides: Sequence[str] = (), *, progress: bool = False, verbose: bool = False
) -> SweepResult:
    """Run every combination of the sweep overrides (``key=a,b``, ``choice()``, ``range()``) together.

    Jobs are composed and checked first (any bad job raises before anything is sent), then run in one
    orchestrator: identical predictions of different jobs are paid once. Inside a running event loop
    the sweep runs on a worker thread.
    """
    with _COMPOSING:
        _check_overrides(pipeline, overrides)
        grid = expand_sweep(overrides)
    with ExitStack() as held:
        sweep_dir, jobs, grid_step = _compose_sweep(pipeline, grid, held)
        orchestrator = Orchestrator()

        def go() -> list[RunRecord]:
            with _run_logs(jobs, verbose=verbose), _progress(jobs, enabled=progress):
                return orchestrator.run(jobs)

        records = _blocking(go)
        code = end_sweep(sweep_dir, grid_step, interrupted=orchestrator.interrupted, echo=verbose)
    by_dir = {record.run_dir: record for record in records}
    results = tuple(
        SweepJob(job.num or 0, tuple(words), _result(by_dir[job.settings.run_dir], verbose=False))
        for job, words in zip(jobs, grid, strict=True)
        if job.settings.run_dir in by_dir
    )
    status = {0: "succeeded", 130: "canceled"}.get(code, "failed")
    return SweepResult(status, sweep_dir, results)


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """The overrides of each job, as Hydra's basic sweeper orders them (the last key varies fastest)."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(f"bad override: {exc}") from exc
    axes: list[list[str]] = []
    for override in parsed:
        if override.is_sweep_override():
            if isinstance(override.value(), Glob):
                raise ConfigError(f"a glob sweep is not supported here: '{override.input_line}'")
            key = override.get_key_element()
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([_input_line(override)])
    return [list(combination) for combination in itertools.product(*axes)]


# -- composing ----------------------------------------------------------------------------------------


def _input_line(override: Override) -> str:
    assert override.input_line is not None
    return override.input_line


def _check_overrides(pipeline: str, overrides: Sequence[str]) -> None:
    """What ``kkiai-run`` checks before Hydra composes: the token, then unknown keys."""
    check_token_words(list(overrides), os.environ)
    check_command_line(list(overrides))
    if any(o.split("=", 1)[0].lstrip("+~") == discovery.GROUP for o in overrides):
        raise ConfigError("the pipeline is the first argument, not an override")
    known = discovery.available(discovery.search_path(os.environ, Path.cwd()))
    if pipeline not in known:
        guess = difflib.get_close_matches(pipeline, sorted(known), n=1)
        hint = f" (did you mean '{guess[0]}'?)" if guess else ""
        raise ConfigError(
            f"no pipeline named '{pipeline}'{hint}; searched {discovery.PATH_VARIABLE}, ./pipelines"
        )
    discovery.register(known, load={pipeline})


def _compose(pipeline: str, overrides: Sequence[str]) -> DictConfig:
    """The config Hydra composes for ``kkiai-run pipeline=<pipeline> <overrides>`` (hydra node included)."""
    words = [f"{discovery.GROUP}={pipeline}", *overrides]
    try:
        with initialize_config_dir(config_dir=str(shipped_dir("conf")), version_base="1.3", job_name="run"):
            cfg = compose(config_name="config", overrides=words, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(f"cannot compose the config: {exc}") from exc
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.overrides.task = words  # what .hydra/overrides.yaml and sweep.json show
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} (the run directory's name) resolves
    return cfg


@contextmanager
def _hydra_state() -> Iterator[None]:
    """Composition borrows Hydra's globals; an embedding Hydra app (if any) gets its own back."""
    global_hydra = GlobalHydra.instance()
    saved_hydra = global_hydra.hydra if global_hydra.is_initialized() else None
    saved_cfg = HydraConfig.instance().cfg
    global_hydra.clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        if saved_hydra is not None:
            GlobalHydra.instance().initialize(saved_hydra)
        HydraConfig.instance().cfg = saved_cfg


def _compose_job(pipeline: str, overrides: Sequence[str]) -> tuple[Job | RunResult, Claim]:
    """Check, compose, claim the run directory and plan; a dry run is already done (a RunResult).

    A directory this call created is removed again if the pipeline turns out bad.
    """
    with _COMPOSING, _hydra_state():
        _check_overrides(pipeline, overrides)
        if len(expand_sweep(overrides)) != 1:
            raise ConfigError("an override sweeps several values: use kkiai_pipeline.sweep() for a multirun")
        cfg = _compose(pipeline, overrides)
        wanted = Path(str(OmegaConf.select(cfg, "hydra.run.dir"))).absolute()
        loaded, settings = _load(cfg, pipeline, wanted)
        # As the CLI's ClaimCallback: a default (timestamped) directory already taken becomes <dir>-2.
        fresh = not settings.resume and not _chose(overrides, "hydra.run.dir")
        created = fresh or not wanted.exists()
        refuse = not fresh and not settings.resume and not settings.dry_run
        claim = claim_dir(wanted, fresh=fresh, refuse_existing=refuse)
        try:
            settings = _pin(cfg, settings, claim.path, num=None)
            if settings.dry_run:
                return RunResult(
                    "planned", claim.path, loaded.name, {}, plan=dry_run(loaded, settings)
                ), claim
            job = prepare(loaded, settings)
            _write_hydra_files(cfg, claim.path)
        except BaseException:
            _discard(claim, created=created)
            raise
    return job, claim


def _compose_sweep(
    pipeline: str, grid: list[list[str]], held: ExitStack
) -> tuple[Path, list[Job], tuple[str, ...] | None]:
    """Claim the sweep directory and prepare every job (all checked before any runs); and the step
    whose outputs the sweep's grid shows (``grid_steps`` / ``grid_step``)."""
    with _COMPOSING, _hydra_state():
        composed = []
        for num, words in enumerate(grid):
            cfg = _compose(pipeline, words)
            if num == 0:
                wanted = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir"))).absolute()
            loaded, settings = _load(cfg, pipeline, wanted / str(num))
            if settings.dry_run:
                raise ConfigError("dry_run=true is for a single run: use kkiai_pipeline.run()")
            composed.append((cfg, loaded, settings))
        resume = composed[0][2].resume
        fresh = not resume and not _chose(grid[0], "hydra.sweep.dir")
        created = fresh or not wanted.exists()
        claim = claim_dir(wanted, fresh=fresh, refuse_existing=not resume, sweep=True)
        jobs = []
        try:
            for num, (cfg, loaded, settings) in enumerate(composed):
                job = prepare(loaded, _pin(cfg, settings, claim.path / str(num), num=num))
                job.num = num
                jobs.append((cfg, job))
            for cfg, job in jobs:
                _write_hydra_files(cfg, job.settings.run_dir)
        except BaseException:
            _discard(claim, created=created)
            raise
        held.callback(claim.release)
    return claim.path, [job for _, job in jobs], grid_steps(composed[0][0])


def _discard(claim: Claim, *, created: bool) -> None:
    """Give up a claim on bad input; a directory this call created goes with it."""
    claim.release()
    if created:
        shutil.rmtree(claim.path, ignore_errors=True)


def _chose(overrides: Sequence[str], key: str) -> bool:
    """Whether an override sets ``key`` (else it is the config's timestamped default)."""
    return any(o.split("=", 1)[0].lstrip("+~") == key for o in overrides)


def _load(cfg: DictConfig, pipeline: str, run_dir: Path) -> tuple[Pipeline, Settings]:
    """Settings and pipeline of one composed config, checked as ``run_job`` checks them."""
    settings = load_settings(cfg, environ=os.environ, run_dir=run_dir)
    loaded = load_pipeline(cfg, name=pipeline)
    check_pipeline_values(cfg.get("pipeline"), token_env=settings.api.token_env)  # each job's own
    return loaded, settings


def _pin(cfg: DictConfig, settings: Settings, run_dir: Path, *, num: int | None) -> Settings:
    """The claimed directory, in the config (as the claim callback pins it) and in the settings."""
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.run.dir = str(run_dir).replace("${", "\\${")  # a plain string, never an interpolation
        if num is not None:
            cfg.hydra.job.num = num
    run_dir.mkdir(parents=True, exist_ok=True)
    return replace(settings, run_dir=run_dir)


def _write_hydra_files(cfg: DictConfig, run_dir: Path) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``, as Hydra's run_job writes them."""
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    task = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
    files = {
        "config.yaml": task,
        "hydra.yaml": OmegaConf.create({"hydra": cfg.hydra}),
        "overrides.yaml": cfg.hydra.overrides.task,
    }
    for name, node in files.items():
        (folder / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")


# -- running ------------------------------------------------------------------------------------------


def _blocking(call: Callable[[], _T]) -> _T:
    """``call()`` here, or on a worker thread when this thread runs an event loop (asyncio.run refuses)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kkiai-run") as worker:
        return worker.submit(call).result()


def _finish_sync(job: Job | RunResult, claim: Claim, *, progress: bool, verbose: bool) -> RunResult:
    try:
        if isinstance(job, RunResult):
            return job
        with _run_logs([job], verbose=verbose), _progress([job], enabled=progress):
            [record] = Orchestrator().run([job])
    finally:
        claim.release()
    return _result(record, verbose=verbose)


@contextmanager
def _progress(jobs: Sequence[Job], *, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    bar = ProgressBar(sum(len(job.plan.steps) for job in jobs), enabled=True)
    for job in jobs:
        job.progress = bar
    try:
        yield
    finally:
        bar.close()


class _ByJob(logging.Handler):
    """Sends each record to the run.log of the job whose task logged it (one handler for a sweep)."""

    def __init__(self, files: dict[int | None, logging.Handler]) -> None:
        super().__init__(logging.INFO)
        self.files = files

    def emit(self, record: logging.LogRecord) -> None:
        handler = self.files.get(CURRENT_JOB.get())
        if handler is not None:
            handler.handle(record)


@contextmanager
def _run_logs(jobs: Sequence[Job], *, verbose: bool) -> Iterator[None]:
    """Each job's ``run.log`` (INFO and up, token masked) while it runs; stderr only if ``verbose``."""
    root, ours = logging.getLogger(), logging.getLogger("kkiai_pipeline")
    files: dict[int | None, logging.Handler] = {}
    for job in jobs:
        handler = logging.FileHandler(job.settings.run_dir / "run.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        handler.addFilter(RedactingFilter())
        files[job.num] = handler
    added: list[logging.Handler] = [_ByJob(files)]
    if verbose:
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(logging.INFO)
        console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        console.addFilter(RedactingFilter())
        added.append(console)
    level = ours.level
    if ours.getEffectiveLevel() > logging.INFO:
        ours.setLevel(logging.INFO)  # our lines reach run.log whatever the root logger's level
    for each in added:
        root.addHandler(each)
    try:
        yield
    finally:
        ours.setLevel(level)
        for each in added:
            root.removeHandler(each)
        for opened in files.values():
            opened.close()


def _result(record: RunRecord, *, verbose: bool) -> RunResult:
    if verbose:
        print(summary(record), file=sys.stderr)
    steps = {sid: _step_result(sid, step, record.run_dir) for sid, step in record.steps.items()}
    return RunResult(record.status, record.run_dir, record.pipeline, steps)


def _step_result(step_id: str, step: StepRecord, run_dir: Path) -> StepResult:
    outputs = tuple(
        Output(run_dir / out.path, out.url, out.sha256, out.content_type, out.bytes) for out in step.outputs
    )
    items = tuple(_step_result(f"{step_id}[{item.index}]", item, run_dir) for item in step.items)
    return StepResult(step_id, step.status, step.prediction_id, step.obtained, step.error, outputs, items)


__all__ = [
    "Output",
    "RunResult",
    "StepResult",
    "SweepJob",
    "SweepResult",
    "expand_sweep",
    "run",
    "run_async",
    "run_sweep",
]

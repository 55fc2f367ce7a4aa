"""One run, end to end: plan (every check before any request), reach the API, execute, record."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from .api.backend import PredictionBackend
from .api.client import PredictionsClient
from .api.cog import CogClient
from .artifacts import Downloader, download_client
from .cache import PredictionCache
from .catalog import Catalog, default_catalog
from .dryrun import cache_verdicts, plan_text, write_plan
from .errors import ConfigError, PipelineError, Problem
from .execution import Executor, Progress
from .localfiles import LocalFiles
from .pipeline import Pipeline
from .planning import Plan, PlannedStep, plan
from .report import write_run_report
from .rundir import MANIFEST, RunRecord, StepRecord, load_record
from .settings import ApiSettings, Settings
from .step_runner import StepOptions, StepRunner
from .templating import Templates
from .terminal import ProgressBar

log = logging.getLogger(__name__)


def make_plan(pipeline: Pipeline, settings: Settings, *, catalog: Catalog | None = None) -> Plan:
    """Check ``pipeline`` completely; raises PipelineError (every problem) before anything is sent."""
    base_dir = pipeline.source.parent if pipeline.source else Path.cwd()
    files = LocalFiles(base_dir, max_bytes=settings.max_file_bytes)
    templates = Templates(functions=files.functions())
    the_plan = plan(pipeline, catalog=catalog or default_catalog(), templates=templates, seed=settings.seed)
    check_backends(the_plan, settings)
    return the_plan


def check_backends(the_plan: Plan, settings: Settings) -> None:
    """Every step can reach its backend: a Cog step has a server, an API step has an API."""
    problems = []
    default = "cog" if settings.api.kind == "cog" else "api"
    for step in the_plan.steps:
        backend = step.step.backend or default
        source = the_plan.pipeline.source
        if backend == "cog" and step.model.ref not in settings.cog.servers:
            message = (
                f"runs on Cog but no server is set for {step.model.ref}: "
                f"'cog.servers={{{step.model.ref}:http://127.0.0.1:5000}}'"
            )
            problems.append(Problem(message, file=source, step=step.id, field="backend"))
        if backend == "api" and settings.api.kind == "cog":
            problems.append(
                Problem("asks for the hosted API, but api=cog has none", file=source, step=step.id)
            )
    if problems:
        raise PipelineError(problems, pipeline=the_plan.pipeline.name)


def run(
    pipeline: Pipeline,
    settings: Settings,
    *,
    catalog: Catalog | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RunRecord | str:
    """Plan ``pipeline``, then execute it (returns the record) or, for a dry run, describe it."""
    the_plan = make_plan(pipeline, settings, catalog=catalog)
    if settings.dry_run:
        identity = api_identity(settings.api, settings.api.base_url or "")
        verdicts = cache_verdicts(the_plan, open_cache(settings), api_identity=identity)
        write_plan(the_plan, settings.run_dir, seed=settings.seed, cache=verdicts)
        return plan_text(the_plan, seed=settings.seed, cache=verdicts)
    previous = previous_record(the_plan, settings)
    with api_base_url(settings.api) as base_url:
        record = previous or new_record(the_plan, settings, base_url=base_url)
        record.api["base_url"] = base_url
        return asyncio.run(execute(the_plan, record, settings, base_url=base_url, transport=transport))


def previous_record(the_plan: Plan, settings: Settings) -> RunRecord | None:
    """The run to resume (``resume=true``), or None; refuses to run over an existing run by accident."""
    manifest = settings.run_dir / MANIFEST
    if not settings.resume:
        if manifest.exists():
            raise ConfigError(
                f"{settings.run_dir} already holds a run: resume it with resume=true, "
                "or choose another hydra.run.dir"
            )
        return None
    try:
        record = load_record(settings.run_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"nothing to resume in {settings.run_dir}: {exc}") from exc
    if record.pipeline != the_plan.pipeline.name:
        raise ConfigError(
            f"{settings.run_dir} holds a run of pipeline '{record.pipeline}', not '{the_plan.pipeline.name}'"
        )
    for step in the_plan.steps:
        old = record.steps.get(step.id)
        if old is None or (old.model, old.version) != (step.model.ref, step.model.version):
            record.steps[step.id] = _step_record(step)
    record.steps = {s.id: record.steps[s.id] for s in the_plan.steps}
    return record


@contextmanager
def api_base_url(api: ApiSettings) -> Iterator[str]:
    """The API's base URL; for ``api=sandbox`` the emulator runs in this process meanwhile."""
    if api.kind != "sandbox":
        yield api.base_url or ""  # api=cog: no hosted API
        return
    from .sandbox import SandboxConfig, serve_in_thread  # only sandbox runs pay for importing the server

    with serve_in_thread(SandboxConfig(**api.sandbox)) as sandbox:
        yield sandbox.base_url


@dataclass
class Connections:
    """What jobs running together share: one API client (so one connection pool and one rate limit),
    the Cog servers' client, and one HTTP client for output files."""

    client: PredictionsClient | None
    cog: CogClient | None
    downloads: httpx.AsyncClient

    @classmethod
    def open(
        cls, settings: Settings, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> Connections:
        api, cog = settings.api, settings.cog
        client = None
        if api.kind != "cog":
            client = PredictionsClient(
                base_url=base_url, token=api.token, options=api.client, transport=transport
            )
        cog_client = None
        if cog.servers:
            cog_client = CogClient(
                servers=cog.servers, concurrency=cog.concurrency, options=cog.options, transport=transport
            )
        return cls(client, cog_client, download_client(transport=transport))

    @property
    def backends(self) -> dict[str, PredictionBackend]:
        """The backends steps can run on, by the name a step's ``backend:`` uses."""
        found: dict[str, PredictionBackend] = {}
        if self.client is not None:
            found["api"] = self.client
        if self.cog is not None:
            found["cog"] = self.cog
        return found

    async def aclose(self) -> None:
        for backend in self.backends.values():
            await backend.aclose()
        await self.downloads.aclose()


async def execute(
    the_plan: Plan,
    record: RunRecord,
    settings: Settings,
    *,
    base_url: str,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RunRecord:
    """Run every step of ``the_plan`` against ``base_url``; writes the run directory as it goes."""
    progress = ProgressBar(len(the_plan.steps), enabled=settings.progress)
    connections = Connections.open(settings, base_url, transport=transport)
    try:
        with interrupts_cancel(asyncio.current_task()):
            return await execute_job(the_plan, record, settings, connections=connections, progress=progress)
    finally:
        progress.close()
        await connections.aclose()


async def execute_job(
    the_plan: Plan,
    record: RunRecord,
    settings: Settings,
    *,
    connections: Connections,
    progress: Progress | None = None,
    shared: bool = False,
) -> RunRecord:
    """Run one job's plan over ``connections`` (the caller handles signals and closing).

    ``shared``: other jobs use the same API client at the same time, so its counters belong to the
    sweep (sweep.json), not to this job.
    """
    downloader = Downloader(
        run_dir=settings.run_dir,
        http=connections.downloads,
        retry=settings.api.client.retry_policy(),
        max_bytes=settings.max_download_bytes,
    )
    identity = api_identity(settings.api, connections.client.base_url if connections.client else "")
    default = "cog" if settings.api.kind == "cog" else "api"
    options = StepOptions(
        timeout=settings.timeout,
        on_interrupt=settings.on_interrupt,
        api_identity=identity,
        default_backend=default,
    )
    steps = StepRunner(
        backends=connections.backends,
        downloader=downloader,
        record=record,
        options=options,
        cache=open_cache(settings),
    )
    executor = Executor(the_plan, steps=steps, record=record, options=settings.execution, progress=progress)
    try:
        return await executor.run()
    finally:
        record.traffic = {"downloads": asdict(downloader.stats)}
        for name, client in (("api", connections.client), ("cog", connections.cog)):
            if client is not None:
                record.traffic[name] = "shared by the sweep's jobs" if shared else asdict(client.stats)
        record.save()
        _write_report(record)


def _write_report(record: RunRecord) -> None:
    """report.html for the run, whatever its end; a report that cannot be drawn never fails a run."""
    try:
        write_run_report(record.run_dir)
    except OSError as exc:
        log.error("could not write report.html: %s", exc)


@contextmanager
def interrupts_cancel(task: asyncio.Task[Any] | None) -> Iterator[None]:
    """The first Ctrl-C or SIGTERM cancels ``task`` (predictions get canceled); the second exits at once.

    Signal handlers can only be set from the main thread; elsewhere (a job run in a worker thread)
    the caller owns interruption.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) > 1:
            print("\nkkiai-run: interrupted again, exiting now", file=sys.stderr)
            os._exit(130)  # run.json already holds every prediction id
        print(
            "\nkkiai-run: interrupted: canceling running predictions (Ctrl-C again to quit at once)",
            file=sys.stderr,
        )
        if task is not None:
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _step_record(step: PlannedStep) -> StepRecord:
    return StepRecord(model=step.model.ref, version=step.model.version, depends_on=sorted(step.depends_on))


def open_cache(settings: Settings) -> PredictionCache | None:
    """The prediction cache, unless ``cache=false``."""
    return PredictionCache(settings.cache_dir) if settings.cache and settings.cache_dir else None


def api_identity(api: ApiSettings, base_url: str) -> str:
    """Which service answers: part of every cache key, so sandbox results never stand in for real ones."""
    return "sandbox" if api.kind == "sandbox" else f"kkiai:{base_url}"


def new_record(the_plan: Plan, settings: Settings, *, base_url: str) -> RunRecord:
    """A fresh run.json for ``the_plan``: every step pending."""
    steps = {s.id: _step_record(s) for s in the_plan.steps}
    source = str(the_plan.pipeline.source) if the_plan.pipeline.source else None
    api = {"kind": settings.api.kind, "base_url": base_url}
    return RunRecord(settings.run_dir, the_plan.pipeline.name, api, steps, source=source, seed=settings.seed)

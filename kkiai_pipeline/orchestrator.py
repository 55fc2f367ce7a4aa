"""One orchestrator runs N jobs: a single run is one job, a sweep is many.

It owns what jobs running together share: the ledger (so identical predictions are paid once across
steps, items and jobs), the connections (one pool and one rate limit per API), the output-file client
and, for ``api=sandbox``, one emulator. Signals are handled here: the first Ctrl-C or SIGTERM winds
every job down within a few seconds (see :mod:`.execution`), the second exits at once.

::

    cli / python API ──► prepare(pipeline, settings) ──► Job ──► Orchestrator.run([jobs])
                                                                   │  one Purchaser per ledger
                                                                   ▼
                                          Executor (per job) ──► Purchaser.obtain ──► Ledger + backends
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from . import budget
from .api.backend import PredictionBackend
from .artifacts import Downloader, download_client
from .backends import BACKENDS, default_backend
from .catalog import Catalog, default_catalog
from .errors import ConfigError, PipelineError, Problem
from .execution import Executor, JobContext, Progress
from .inflight import ClusterClaims
from .ledger import OWNER_BEAT_SECONDS, Ledger
from .localfiles import LocalFiles
from .pipeline import Pipeline
from .planning import Plan, PlannedStep, plan
from .pricing import prices_for
from .purchase import PurchaseOptions, Purchaser
from .report import write_run_report
from .rundir import MANIFEST, RunRecord, StepRecord, load_record
from .schemacache import together, with_fetched_models
from .settings import Settings
from .templating import Templates

log = logging.getLogger(__name__)

#: The number of the job whose task is running (each job's log lines go to its own run.log).
CURRENT_JOB: contextvars.ContextVar[int | None] = contextvars.ContextVar("kkiai_job", default=None)


@dataclass
class Job:
    """A checked, planned run waiting to be executed; ``previous`` is the run it resumes."""

    plan: Plan
    settings: Settings
    record: RunRecord | None = None
    previous: RunRecord | None = None
    num: int | None = None  # its number in a sweep
    progress: Progress | None = field(default=None, repr=False)


def make_plan(pipeline: Pipeline, settings: Settings, *, catalog: Catalog | None = None) -> Plan:
    """Check ``pipeline`` completely; raises PipelineError (every problem) before anything is sent."""
    base_dir = pipeline.source.parent if pipeline.source else Path.cwd()
    files = LocalFiles(base_dir, max_bytes=settings.max_file_bytes, allowed_dirs=settings.allowed_dirs)
    templates = Templates(functions=files.functions())
    # Models outside the catalog: their schemas, fetched once (cached), before anything is planned or paid.
    catalog, unfetched = with_fetched_models(pipeline, settings, catalog or default_catalog())
    try:
        the_plan = plan(pipeline, catalog=catalog, templates=templates, seed=settings.seed)
    except PipelineError as exc:
        raise (together(unfetched, exc, pipeline=pipeline) if unfetched else exc) from None
    if unfetched:
        raise together(unfetched, None, pipeline=pipeline)
    _check_backends(the_plan, settings)
    return the_plan


def _check_backends(the_plan: Plan, settings: Settings) -> None:
    """Every step can reach its backend: a Cog step has a server, an API step has an API."""
    problems = []
    source = the_plan.pipeline.source
    for step in the_plan.steps:
        name = step.step.backend or default_backend(settings)
        if name == "cog" and step.model.ref not in settings.cog.servers:
            message = (
                f"runs on Cog but no server is set for {step.model.ref}: "
                f"'cog.servers={{{step.model.ref}:http://127.0.0.1:5000}}'"
            )
            problems.append(Problem(message, file=source, step=step.id, field="backend"))
        elif name == "api" and not BACKENDS["api"].available(settings):
            problems.append(
                Problem("asks for the hosted API, but api=cog has none", file=source, step=step.id)
            )
    if problems:
        raise PipelineError(problems, pipeline=the_plan.pipeline.name)


#: How long the check before the first paid step waits for a Cog server's health-check.
COG_PROBE_SECONDS = 3.0
#: Health statuses after which a Cog server runs nothing more (as the Cog client judges them).
_COG_BROKEN = frozenset({"SETUP_FAILED", "DEFUNCT"})


async def check_cog_servers(
    the_plan: Plan, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> None:
    """Every Cog server a step runs on answers its health-check; raises PipelineError otherwise.

    Meant to run after planning and before the first create, so that a server that is down (or not a
    Cog server, or whose setup failed) stops the run before any step is paid for, rather than after
    the steps upstream of it. A server still loading its weights (``STARTING``) passes: the Cog client
    waits for it. Each server is probed once, all at once, for at most ``COG_PROBE_SECONDS``.
    """
    users: dict[str, list[PlannedStep]] = {}
    for step in the_plan.steps:
        url = settings.cog.servers.get(step.model.ref)
        if (step.step.backend or default_backend(settings)) == "cog" and url:
            users.setdefault(url.rstrip("/"), []).append(step)
    if not users:
        return
    async with httpx.AsyncClient(timeout=COG_PROBE_SECONDS, transport=transport, trust_env=False) as http:
        found = await asyncio.gather(*(_probe_cog(http, url) for url in users))
    source = the_plan.pipeline.source
    problems = [
        Problem(
            f"the Cog server for {step.model.ref} at {url} {trouble}",
            file=source,
            step=step.id,
            field="backend",
        )
        for (url, steps), trouble in zip(users.items(), found, strict=True)
        if trouble is not None
        for step in steps
    ]
    if problems:
        raise PipelineError(problems, pipeline=the_plan.pipeline.name)


async def _probe_cog(http: httpx.AsyncClient, url: str) -> str | None:
    """What is wrong with the Cog server at ``url``, finishing a sentence; None when it can serve."""
    try:
        response = await http.get(f"{url}/health-check")
    except httpx.HTTPError as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return f"cannot be reached ({reason}); is it running?"
    try:
        body = response.json()
    except ValueError:
        body = None
    status = body.get("status") if isinstance(body, dict) else None
    if response.is_error or not isinstance(status, str):
        return (
            f"answered {response.status_code} to GET /health-check without a Cog status; is it a Cog server?"
        )
    if status in _COG_BROKEN:
        return f"reports {status}"
    return None


def prepare(pipeline: Pipeline, settings: Settings, *, catalog: Catalog | None = None) -> Job:
    """Everything checked before anything is sent: the plan, and the run this one resumes."""
    the_plan = make_plan(pipeline, settings, catalog=catalog)
    return Job(the_plan, settings, previous=_previous(the_plan, settings))


def _previous(the_plan: Plan, settings: Settings) -> RunRecord | None:
    manifest = settings.run_dir / MANIFEST
    if not settings.resume:
        if manifest.exists():
            raise ConfigError(
                f"{settings.run_dir} already holds a run: resume it with resume=true, "
                "or choose another hydra.run.dir"
            )
        return None
    try:
        previous = load_record(settings.run_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"nothing to resume in {settings.run_dir}: {exc}") from exc
    if previous.pipeline != the_plan.pipeline.name:
        raise ConfigError(
            f"{settings.run_dir} holds a run of pipeline '{previous.pipeline}', "
            f"not '{the_plan.pipeline.name}'"
        )
    return previous


def new_record(job: Job, *, base_url: str) -> RunRecord:
    """The run.json of ``job``: every step pending; a resume keeps the run's id."""
    the_plan, settings = job.plan, job.settings
    steps = {s.id: _step_record(s) for s in the_plan.steps}
    source = str(the_plan.pipeline.source) if the_plan.pipeline.source else None
    api = {"kind": settings.api.kind, "base_url": base_url}
    record = RunRecord(
        settings.run_dir, the_plan.pipeline.name, api, steps, source=source, seed=settings.seed
    )
    record.prices = prices_for(settings.prices, (step.model for step in steps.values()))
    if job.previous is not None:
        record.run_id = job.previous.run_id
    return record


def _step_record(step: PlannedStep) -> StepRecord:
    return StepRecord(model=step.model.ref, version=step.model.version, depends_on=sorted(step.depends_on))


def run_pipeline(
    pipeline: Pipeline,
    settings: Settings,
    *,
    catalog: Catalog | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RunRecord:
    """Check, plan and run one pipeline to its end (the sync edge for one job)."""
    job = prepare(pipeline, settings, catalog=catalog)
    [record] = Orchestrator(transport=transport).run([job])
    return record


@dataclass
class _Pool:
    """Backends opened for one set of connection settings."""

    backends: dict[str, PredictionBackend]


class Orchestrator:
    """Runs jobs together; ``transport`` (tests) replaces the network for every client."""

    def __init__(self, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.transport = transport
        self.interrupted = False

    def run(self, jobs: Sequence[Job]) -> list[RunRecord]:
        """The sync edge: run ``jobs`` to their end (or to Ctrl-C) on a fresh event loop."""
        return asyncio.run(self._run_with_signals(jobs))

    async def _run_with_signals(self, jobs: Sequence[Job]) -> list[RunRecord]:
        with interrupts_cancel(asyncio.current_task()):
            try:
                return await self.run_async(jobs)
            except asyncio.CancelledError:
                self.interrupted = True  # every job has wound down and written its run.json
                return [job.record for job in jobs if job.record is not None]

    async def run_async(self, jobs: Sequence[Job]) -> list[RunRecord]:
        """Run ``jobs`` concurrently; each ends with its run.json and report written."""
        budget.check(jobs)  # all jobs counted together, over max_predictions: refused before any request
        for job in jobs:  # a Cog server that is down stops the run before anything is paid
            await check_cog_servers(job.plan, job.settings, transport=self.transport)
        with ExitStack() as stack:
            sandbox_url = self._sandbox(jobs, stack)
            shared = _Shared(self.transport)
            beating = asyncio.create_task(shared.beat())
            try:
                tasks = []
                for job in jobs:
                    settings = job.settings
                    base_url = (
                        sandbox_url if settings.api.kind == "sandbox" else (settings.api.base_url or "")
                    )
                    job.record = job.record or new_record(job, base_url=base_url)
                    purchaser, pool = shared.purchaser(settings, base_url)
                    tasks.append(self._run_job(job, purchaser, pool, base_url, shared=len(jobs) > 1))
                await _in_turn(tasks)
            finally:
                beating.cancel()
                await shared.aclose()
        return [job.record for job in jobs if job.record is not None]

    def _sandbox(self, jobs: Sequence[Job], stack: ExitStack) -> str:
        """The emulator's base URL, started for this orchestrator if a job needs it."""
        sandboxed = [j for j in jobs if j.settings.api.kind == "sandbox"]
        if not sandboxed:
            return ""
        from .sandbox import SandboxConfig, serve_in_thread  # only sandbox runs pay for importing the server

        settings = sandboxed[0].settings
        knobs = dict(settings.api.sandbox)
        if knobs.get("store") is None:  # the emulator remembers beside the ledger
            knobs["store"] = str(_cache_dir(settings) / "sandbox")
        return stack.enter_context(serve_in_thread(SandboxConfig(**knobs))).base_url

    async def _run_job(
        self, job: Job, purchaser: Purchaser, pool: _Pool, base_url: str, *, shared: bool
    ) -> RunRecord:
        settings, record = job.settings, job.record
        assert record is not None
        CURRENT_JOB.set(job.num)
        context = JobContext(
            purchaser=purchaser,
            backends=pool.backends,
            identity=lambda name, version: BACKENDS[name].identity(settings, base_url, version),
            default_backend=default_backend(settings),
            timeout=settings.timeout,
            cache=settings.cache,
            options=settings.execution,
            previous=job.previous,
        )
        executor = Executor(job.plan, record=record, context=context, progress=job.progress)
        try:
            return await executor.run()
        finally:
            record.traffic = {
                "downloads": asdict(purchaser.downloader.stats),
                "creates_sent": purchaser.creates,
            }
            for name, backend in pool.backends.items():
                record.traffic[name] = "shared by the sweep's jobs" if shared else dict(vars(backend.stats))
            record.save()
            _write_report(record)


async def _in_turn(coroutines: Sequence[Coroutine[Any, Any, RunRecord]]) -> list[RunRecord]:
    """Run ``coroutines`` concurrently, starting one per turn of the event loop.

    Each job begins with synchronous work (its run.json written and synced). Started all at once, the
    first job's create would wait behind every job's start (~10 ms each: 10 s for a 1,000-job sweep);
    started in turn, the network is served between two starts, so the first creates leave at once and
    the later jobs start while the rate limit holds the creates back anyway.
    """
    started: list[asyncio.Task[RunRecord]] = []
    try:
        for coroutine in coroutines:
            started.append(asyncio.ensure_future(coroutine))
            await asyncio.sleep(0)
    except asyncio.CancelledError:  # interrupted while starting: the started jobs wind down as usual
        for coroutine in coroutines[len(started) :]:
            coroutine.close()
        for task in started:
            task.cancel()
        await asyncio.gather(*started, return_exceptions=True)
        raise
    return list(await asyncio.gather(*started))


class _Shared:
    """What the jobs of one orchestrator run share, opened on first need and closed together: a
    ledger per cache directory, backends per connection settings, one client for output files."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None) -> None:
        self.transport = transport
        self.ledgers: dict[Path, Ledger] = {}
        self.pools: dict[Any, _Pool] = {}
        self.purchasers: dict[tuple[Path, Any], Purchaser] = {}
        self.downloads = download_client(transport=transport)

    def purchaser(self, settings: Settings, base_url: str) -> tuple[Purchaser, _Pool]:
        """The purchaser (and backends) for a job with ``settings``: jobs alike share them."""
        pool_key = _pool_key(settings, base_url)
        pool = self.pools.get(pool_key)
        if pool is None:
            backends = BACKENDS.items()
            opened = {
                name: kind.open(settings, base_url, self.transport)
                for name, kind in backends
                if kind.available(settings)
            }
            pool = self.pools[pool_key] = _Pool(opened)
        cache_dir = _cache_dir(settings)
        ledger = self.ledgers.get(cache_dir) or self.ledgers.setdefault(cache_dir, Ledger(cache_dir))
        purchaser = self.purchasers.get((cache_dir, pool_key))
        if purchaser is None:
            purchaser = _purchaser(ledger, pool, self.downloads, settings)
            self.purchasers[(cache_dir, pool_key)] = purchaser
        return purchaser, pool

    async def beat(self) -> None:
        """Tell other processes (also on other hosts) that this one still owns its keys."""
        while True:
            for ledger in list(self.ledgers.values()):
                await ledger.beat()
            await asyncio.sleep(OWNER_BEAT_SECONDS)

    async def aclose(self) -> None:
        for purchaser in self.purchasers.values():
            await purchaser.aclose()
        for pool in self.pools.values():
            for backend in pool.backends.values():
                await backend.aclose()
        await self.downloads.aclose()
        for ledger in self.ledgers.values():
            await ledger.release_busy()  # predictions left running: whoever needs them next takes them
            ledger.close()


def _purchaser(ledger: Ledger, pool: _Pool, downloads: httpx.AsyncClient, settings: Settings) -> Purchaser:
    downloader = Downloader(
        run_dir=ledger.root / "incoming",
        http=downloads,
        retry=settings.api.client.retry_policy(),
        max_bytes=settings.max_download_bytes,
    )
    options = PurchaseOptions(
        list_lag_seconds=settings.api.client.list_lag_seconds,
        clock_skew_seconds=settings.api.client.clock_skew_seconds,
        repay_expired=settings.repay_expired,
        on_interrupt=settings.on_interrupt,
    )
    # Every job of a sandboxed sweep runs its own emulator: another job's prediction id means nothing here.
    shared = settings.api.rate_scope == "cluster" and settings.api.kind != "sandbox"
    claims = ClusterClaims(ledger.owner) if shared else None
    return Purchaser(
        ledger=ledger, backends=pool.backends, downloader=downloader, options=options, claims=claims
    )


def _pool_key(settings: Settings, base_url: str) -> Any:
    api, cog = settings.api, settings.cog
    return (base_url, api.token, api.client, tuple(sorted(cog.servers.items())), cog.options)


def _cache_dir(settings: Settings) -> Path:
    """Where the ledger lives: the cache directory (a run without one keeps a private ledger)."""
    return settings.cache_dir or settings.run_dir / ".ledger"


def _write_report(record: RunRecord) -> None:
    """report.html for the run, whatever its end; a report that cannot be drawn never fails a run."""
    try:
        write_run_report(record.run_dir)
    except OSError as exc:
        log.error("could not write report.html: %s", exc)


@contextmanager
def interrupts_cancel(task: asyncio.Task[Any] | None) -> Iterator[None]:
    """The first Ctrl-C or SIGTERM cancels ``task`` (predictions get canceled); the second exits at once.

    Signal handlers can only be set from the main thread; elsewhere (a job run in a worker thread, a
    notebook) the caller owns interruption.
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
            os._exit(130)  # the ledger already holds every prediction id
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

"""One run, end to end: plan (every check before any request), reach the API, execute, record."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from .api.client import PredictionsClient
from .artifacts import Downloader
from .catalog import Catalog, default_catalog
from .dryrun import plan_text, write_plan
from .execution import Executor
from .localfiles import LocalFiles
from .pipeline import Pipeline
from .planning import Plan, plan
from .rundir import RunRecord, StepRecord
from .settings import ApiSettings, Settings
from .templating import Templates
from .terminal import ProgressBar


def make_plan(pipeline: Pipeline, settings: Settings, *, catalog: Catalog | None = None) -> Plan:
    """Check ``pipeline`` completely; raises PipelineError (every problem) before anything is sent."""
    base_dir = pipeline.source.parent if pipeline.source else Path.cwd()
    files = LocalFiles(base_dir, max_bytes=settings.max_file_bytes)
    templates = Templates(functions=files.functions())
    return plan(pipeline, catalog=catalog or default_catalog(), templates=templates, seed=settings.seed)


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
        write_plan(the_plan, settings.run_dir, seed=settings.seed)
        return plan_text(the_plan, seed=settings.seed)
    with api_base_url(settings.api) as base_url:
        return asyncio.run(execute(the_plan, settings, base_url=base_url, transport=transport))


@contextmanager
def api_base_url(api: ApiSettings) -> Iterator[str]:
    """The API's base URL; for ``api=sandbox`` the emulator runs in this process meanwhile."""
    if api.kind != "sandbox":
        assert api.base_url is not None
        yield api.base_url
        return
    from .sandbox import SandboxConfig, serve_in_thread  # only sandbox runs pay for importing the server

    with serve_in_thread(SandboxConfig(**api.sandbox)) as sandbox:
        yield sandbox.base_url


async def execute(
    the_plan: Plan, settings: Settings, *, base_url: str, transport: httpx.AsyncBaseTransport | None = None
) -> RunRecord:
    """Run every step of ``the_plan`` against ``base_url``; writes the run directory as it goes."""
    record = new_record(the_plan, settings, base_url=base_url)
    progress = ProgressBar(len(the_plan.steps), enabled=settings.progress)
    client = PredictionsClient(
        base_url=base_url, token=settings.api.token, options=settings.api.client, transport=transport
    )
    downloader = Downloader(run_dir=settings.run_dir, transport=transport)
    try:
        executor = Executor(
            the_plan,
            client=client,
            downloader=downloader,
            record=record,
            options=settings.execution,
            progress=progress,
        )
        return await executor.run()
    finally:
        progress.close()
        await client.aclose()
        await downloader.aclose()


def new_record(the_plan: Plan, settings: Settings, *, base_url: str) -> RunRecord:
    """A fresh run.json for ``the_plan``: every step pending."""
    steps = {s.id: StepRecord(model=s.model.ref, version=s.model.version) for s in the_plan.steps}
    source = str(the_plan.pipeline.source) if the_plan.pipeline.source else None
    api = {"kind": settings.api.kind, "base_url": base_url}
    return RunRecord(settings.run_dir, the_plan.pipeline.name, api, steps, source=source, seed=settings.seed)

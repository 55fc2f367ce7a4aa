"""One measured run in its own process: ``python -m benchmarks.child KIND SPEC RESULT``.

KIND is ``ours`` (our runner, as ``kkiai-run`` runs it), ``script`` (the hand-written asyncio + httpx
script) or ``sequential`` (the loop). SPEC is a JSON file written by :mod:`.throughput`; RESULT is
where the figures go. Running each measurement in a fresh process makes its CPU time and peak RSS its
own (the parent reads them with ``os.wait4``); this process adds the wall and CPU time of the run
alone, without the interpreter's start and the imports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

from .baseline import Script, sequential
from .shapes import Shape, from_json, pipeline_data

TOKEN = "benchmark-token"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_ours(spec: dict[str, Any], shape: Shape, out_dir: Path) -> dict[str, Any]:
    """Our runner, configured as ``kkiai-run`` with the spec's overrides would be."""
    from kkiai_pipeline.api.client import ClientOptions
    from kkiai_pipeline.execution import ExecutionOptions
    from kkiai_pipeline.orchestrator import run_pipeline
    from kkiai_pipeline.pipeline import parse_pipeline
    from kkiai_pipeline.rundir import RunRecord
    from kkiai_pipeline.settings import ApiSettings, Settings

    run_dir = out_dir / "run"
    run_dir.mkdir(parents=True)
    _log_like_the_cli(run_dir / "run.log")
    options = ClientOptions(
        create_rate_per_minute=spec["create_per_minute"],
        other_rate_per_minute=spec["other_per_minute"],
        **spec.get("client", {}),  # a time-scaled benchmark shortens the wait and the poll intervals
    )
    _use_transport(spec.get("transport", "aiohttp"))
    settings = Settings(
        api=ApiSettings("kkiai", spec["base_url"], TOKEN, options),
        execution=ExecutionOptions(max_concurrency=spec["concurrency"]),
        progress=False,
        run_dir=run_dir,
        cache=False,
    )
    cpu, start = _cpu(), time.perf_counter()
    pipeline = parse_pipeline(pipeline_data(shape, foreach=spec["foreach"]))
    record = run_pipeline(pipeline, settings)
    wall, cpu = time.perf_counter() - start, _cpu() - cpu
    assert isinstance(record, RunRecord)
    statuses = [step.status for step in record.steps.values()]
    return {
        "wall": wall,
        "cpu": cpu,
        "ok": record.status == "succeeded",
        "traffic": record.traffic,
        "failed": [s for s in statuses if s != "succeeded"][:3],
    }


def _use_transport(kind: str) -> None:
    """Our client's HTTP transport: ``aiohttp`` (its own: httpx over aiohttp's pool), ``single`` (httpx's
    own pool, as before) or ``pools`` (httpx with 8 smaller pools taken in turn), to compare them."""
    if kind == "aiohttp":
        return
    import httpx

    from kkiai_pipeline.api.transport import HttpClient

    class Pools(httpx.AsyncBaseTransport):
        def __init__(self, limits: httpx.Limits, count: int = 8) -> None:
            def share(total: int | None) -> int | None:
                return None if total is None else -(-total // count)

            each = httpx.Limits(
                max_connections=share(limits.max_connections),
                max_keepalive_connections=share(limits.max_keepalive_connections),
                keepalive_expiry=limits.keepalive_expiry,
            )
            self.pools = [httpx.AsyncHTTPTransport(limits=each) for _ in range(count)]
            self.turn = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            self.turn = (self.turn + 1) % len(self.pools)
            return await self.pools[self.turn].handle_async_request(request)

        async def aclose(self) -> None:
            for pool in self.pools:
                await pool.aclose()

    def transport(self: Any, *args: Any, limits: Any = None, transport: Any = None, **kwargs: Any) -> Any:
        if transport is not None:
            return transport
        return Pools(limits) if kind == "pools" else httpx.AsyncHTTPTransport(limits=limits)

    HttpClient._init_transport = transport  # type: ignore[method-assign]


def _log_like_the_cli(path: Path) -> None:
    """run.log at INFO and httpx quiet, as conf/hydra/job_logging/kkiai.yaml sets them up."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_script(spec: dict[str, Any], shape: Shape, out_dir: Path) -> dict[str, Any]:
    script = Script(
        spec["base_url"],
        token=TOKEN,
        out_dir=out_dir,
        concurrency=spec["concurrency"],
        create_per_minute=spec["create_per_minute"],
        other_per_minute=spec["other_per_minute"],
        clients=spec.get("clients", 1),
        wait=spec.get("wait", 60),
        poll=(spec["poll"][0], spec["poll"][1]) if "poll" in spec else (0.5, 2.0),
    )
    cpu, start = _cpu(), time.perf_counter()
    counts = asyncio.run(script.run(shape))
    wall, cpu = time.perf_counter() - start, _cpu() - cpu
    return {"wall": wall, "cpu": cpu, "ok": True, "requests": counts.requests}


def run_sequential(spec: dict[str, Any], shape: Shape, out_dir: Path) -> dict[str, Any]:
    cpu, start = _cpu(), time.perf_counter()
    counts = sequential(spec["base_url"], shape.jobs, token=TOKEN, out_dir=out_dir)
    wall, cpu = time.perf_counter() - start, _cpu() - cpu
    return {"wall": wall, "cpu": cpu, "ok": True, "requests": counts.requests}


RUNS = {"ours": run_ours, "script": run_script, "sequential": run_sequential}


def main(argv: list[str]) -> None:
    kind, spec_file, result_file = argv
    spec = json.loads(Path(spec_file).read_text())
    result = RUNS[kind](spec, from_json(spec["shape"]), Path(spec["out_dir"]))
    Path(result_file).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])

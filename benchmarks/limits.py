"""The benchmark at the API's real limits, time-scaled: ``python -m benchmarks.limits [--quick]``.

The API allows 600 creates and 3,000 other calls a minute; sdxl takes ~8 s a prediction, animation
models ~120 s, and ``Prefer: wait`` holds a create up to 60 s. Run as they are, 1,000 animations take
four minutes a measurement; so every duration is divided by ``--scale`` (default 10) and every rate
multiplied by it: the sandbox's predict time, the rate limits (ours, the script's and the sandbox's,
which enforces them and answers 429 beyond), the ``Prefer: wait`` hold and the poll intervals. The
ratios hold; what does not scale is CPU, which the scaled run asks for ``scale`` times faster.

Rows, each run by our runner (``kkiai_pipeline.orchestrator.run_pipeline``, set up as ``kkiai-run``)
and by the hand-written asyncio + httpx script of :mod:`.baseline`, each in a fresh process:

- ``sdxl``: N independent predictions of 8 s; ours (httpx over aiohttp's pool) also with httpx's own
  single pool, as before (``httpx 1 pool``), and with 8 httpx pools taken in turn (``httpx 8 pools``);
  the script with 1 and 10 httpx clients.
- ``animation``: N predictions of 120 s: they outlast the wait, and are followed (ours: through the
  list of predictions once many are waited for; the script polls each).

- ``kkiai-run -m``: the real command, a sweep of J one-prediction jobs (``--sweeps``, 100 and 1,000),
  start-up and composing included; and ``kkiai-run`` of one step with a ``foreach`` over ``--foreach``
  items (10,000; 1,000 with ``--quick``). Their CPU and peak RSS are the whole process's (imports
  included); the script makes the same predictions (a row of its own when no sdxl row has that N).

Concurrency is N (the limits, not a semaphore, are what binds). The bound is what the create rate and
the latency allow: ``(N - burst) / rate + latency`` (the last create cannot go earlier, and takes a
latency); ``req/pred`` counts the API calls the sandbox saw (creates, gets, lists) per prediction,
downloads apart. The table is printed as Markdown, ready for ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .shapes import SD, build
from .throughput import ROOT, Config, Measured, Sandbox, measure

CREATES, OTHERS = 600.0, 3000.0  # the API's limits, a minute
WAIT, POLL, MAX_POLL = 60, 0.5, 2.0  # Prefer: wait, and our client's (and the script's) poll schedule
BURST = 10
MODELS = {"sdxl": 8.0, "animation": 120.0}  # seconds a prediction, unscaled


class LimitedSandbox(Sandbox):
    """The sandbox at a scaled latency, enforcing the scaled rate limits."""

    def __init__(self, latency: float, scale: float, work: Path) -> None:
        command = [sys.executable, "-m", "kkiai_pipeline.sandbox.cli", "--port", "0", "--queue-seconds", "0"]
        command += ["--predict-seconds", f"{latency / scale:g}", "--sync-final-status", "processing"]
        # The sandbox counts in fixed one-minute windows; a client at exactly the rate with a burst of
        # BURST may put BURST more into one window (the API tolerates such bursts).
        command += ["--create-rate-per-minute", f"{CREATES * scale + BURST:g}"]
        command += ["--other-rate-per-minute", f"{OTHERS * scale + BURST:g}", "--enforce-rate-limits"]
        self._log = (work / f"sandbox-{latency:g}s.log").open("w")
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.close()
            raise RuntimeError(f"the sandbox did not start: {line!r}; see {self._log.name}")
        self.base_url = line.split()[-1]
        self.root = self.base_url.removesuffix("/replicate/v1")


@dataclass
class Line:
    model: str
    n: int
    runner: str
    bound: float
    measured: Measured | str  # a failure's message

    def cells(self) -> list[str]:
        m, n = self.measured, self.n
        if isinstance(m, str):
            return [self.model, str(n), self.runner, f"{self.bound:.1f}", "failed", *["-"] * 8]
        requests = m.detail["by_kind"]
        api = sum(v for k, v in requests.items() if k != "file")
        return [
            self.model,
            str(n),
            self.runner,
            f"{self.bound:.1f}",
            f"{m.wall:.1f}",
            f"{m.wall / self.bound:.2f}",
            f"{m.cpu * 1000 / n:.1f}",
            f"{api / n:.2f}",
            f"{requests.get('list', 0)}",
            f"{requests.get('get', 0)}",
            f"{requests.get('file', 0) / n:.2f}",
            str(m.detail["rate_limited"]),
            f"{m.rss_mb:.0f}",
        ]


HEADER = [
    "model",
    "N",
    "runner",
    "bound s",
    "wall s",
    "wall÷bound",
    "CPU ms/pred",
    "API req/pred",
    "lists",
    "gets",
    "files/pred",
    "429s",
    "peak RSS MB",
]


def run_one(
    kind: str, model: str, n: int, scale: float, sandbox: LimitedSandbox, work: Path, **extra: Any
) -> Measured:
    latency = MODELS[model] / scale
    config = Config(
        latency=latency,
        concurrency=n,
        create_per_minute=CREATES * scale,
        sizes=(n,),
        shapes=("wide",),
        sample=0,
        burst=0,
    )
    wait = max(round(WAIT / scale), 1)
    poll = (POLL / scale, MAX_POLL / scale)
    spec: dict[str, Any] = {"wait": wait, "poll": poll, **extra}
    if kind == "ours":
        spec["client"] = {"wait_seconds": wait, "poll_interval": poll[0], "max_poll_interval": poll[1]}
    shape = build("wide", n)
    measured = measure(kind, shape, config=config, sandbox=sandbox, work=work, extra=spec)
    stats = sandbox.stats()
    measured.detail["by_kind"] = stats["requests"]
    measured.detail["rate_limited"] = stats.get("faults", {}).get("rate_limited", 0)
    if measured.succeeded != n:
        raise RuntimeError(f"{kind} {model} N={n}: {measured.succeeded} of {n} succeeded")
    return measured


IMAGE = {"width": 64, "height": 64, "num_inference_steps": 1}
PIPELINES = {
    # One prediction a job: the sweep's jobs differ by their subject.
    "limits_sweep": lambda n: {
        "name": "limits_sweep",
        "params": {"subject": "x"},
        "steps": {"gen": {"model": SD, "input": {"prompt": "limits {{ params.subject }}", **IMAGE}}},
    },
    # One step, a foreach over n prompts.
    "limits_foreach": lambda n: {
        "name": "limits_foreach",
        "steps": {
            "gen": {
                "model": SD,
                "foreach": [f"limits subject {i}" for i in range(n)],
                "input": {"prompt": "{{ item }}", **IMAGE},
            }
        },
    },
}


def run_cli(kind: str, n: int, scale: float, sandbox: LimitedSandbox, work: Path) -> Measured:
    """The real ``kkiai-run`` command, start-up included: a ``-m`` sweep of ``n`` one-prediction jobs,
    or one run of a ``foreach`` over ``n`` items. CPU and peak RSS are the whole process's."""
    name = f"limits_{kind}"
    folder = Path(tempfile.mkdtemp(prefix=f"{kind}-{n}-", dir=work))
    (folder / "pipelines").mkdir()
    (folder / "pipelines" / f"{name}.yaml").write_text(json.dumps(PIPELINES[name](n)))
    wait = max(round(WAIT / scale), 1)
    command = [str(Path(sys.executable).parent / "kkiai-run")]
    command += ["-m", f"pipeline.params.subject=range(0,{n})"] if kind == "sweep" else []
    command += [
        f"pipeline={name}",
        "api=kkiai",
        f"api.base_url={sandbox.base_url}",
        f"api.create_rate_per_minute={CREATES * scale:g}",
        f"api.other_rate_per_minute={OTHERS * scale:g}",
        f"api.wait_seconds={wait}",
        f"api.poll_interval={POLL / scale:g}",
        f"api.max_poll_interval={MAX_POLL / scale:g}",
        f"max_concurrency={n}",
        f"max_predictions={n}",  # the budget's default (1000) would refuse the 10,000-item foreach
        "progress=false",
        "cache=false",
        f"hydra.run.dir={folder / 'run'}",
        f"hydra.sweep.dir={folder / 'sweep'}",
    ]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KKIAI_")}
    environ["KKIAI_API_TOKEN"] = "benchmark-token"
    sandbox.reset()
    sandbox_cpu = sandbox.cpu()
    start = time.perf_counter()
    with (folder / "kkiai-run.log").open("w") as log:
        process = subprocess.Popen(command, cwd=folder, env=environ, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        tail = (folder / "kkiai-run.log").read_text()[-3000:]
        raise RuntimeError(f"kkiai-run {kind} N={n} failed:\n{tail}")
    stats = sandbox.stats()
    cpu = usage.ru_utime + usage.ru_stime
    detail = {"by_kind": stats["requests"], "rate_limited": stats.get("faults", {}).get("rate_limited", 0)}
    measured = Measured(
        wall=wall,
        cpu=cpu,
        cpu_total=cpu,
        rss_mb=usage.ru_maxrss / 1024,
        requests=sum(stats["requests"].values()),
        succeeded=stats["predictions"]["succeeded"],
        sandbox_cpu=sandbox.cpu() - sandbox_cpu,
        detail=detail,
    )
    if measured.succeeded != n:
        raise RuntimeError(f"kkiai-run {kind} N={n}: {measured.succeeded} of {n} succeeded")
    return measured


def runners(model: str, n: int, *, quick: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, child kind, spec extras) of each runner measured for this row."""
    rows: list[tuple[str, str, dict[str, Any]]] = [("ours", "ours", {})]
    if model == "sdxl" and not quick:
        rows += [("ours, httpx 1 pool", "ours", {"transport": "single"})]
        rows += [("ours, httpx 8 pools", "ours", {"transport": "pools"})]
        rows += [("script, 1 client", "script", {"clients": 1})]
    rows += [("script, 10 clients", "script", {"clients": 10})]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.limits", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scale", type=float, default=10.0, help="time divided (and rates multiplied) by this"
    )
    parser.add_argument("--sizes", default="100,1000", help="comma-separated N")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: sdxl, animation")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="N=100, ours and the 10-client script, a foreach of 1000, no sweeps",
    )
    parser.add_argument(
        "--sweeps", default="100,1000", help="comma-separated jobs of the kkiai-run -m sweeps"
    )
    parser.add_argument("--foreach", type=int, default=10000, help="items of the foreach run (0: none)")
    parser.add_argument("--keep", type=Path, help="keep every run's files here")
    args = parser.parse_args(argv)
    sizes = [100] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    sweeps = [int(s) for s in args.sweeps.split(",") if s]
    foreach = min(args.foreach, 1000) if args.quick else args.foreach
    work = args.keep or Path(tempfile.mkdtemp(prefix="kkiai-limits-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    lines: list[Line] = []

    def row(model: str, n: int, label: str, measure: Callable[[], Measured]) -> None:
        try:
            measured: Measured | str = measure()
        except RuntimeError as exc:  # one row failing leaves the others
            measured = str(exc).splitlines()[0][:300]
        lines.append(Line(model, n, label, bound(model, n, args.scale), measured))
        note(lines[-1], lines, work, args.scale)

    for model in args.models.split(","):
        sandbox = LimitedSandbox(MODELS[model], args.scale, work)
        try:
            for n in sizes:
                for label, kind, extra in runners(model, n, quick=args.quick):
                    row(model, n, label, partial(run_one, kind, model, n, args.scale, sandbox, work, **extra))
            if model != "sdxl":
                continue
            cli_runs = [("sweep", j) for j in ([] if args.quick else sweeps)] + [("foreach", foreach)]
            for kind, n in cli_runs:
                if n <= 0:
                    continue
                label = f"kkiai-run -m, {n} jobs" if kind == "sweep" else f"kkiai-run, foreach of {n}"
                row(model, n, label, partial(run_cli, kind, n, args.scale, sandbox, work))
                if n not in sizes:  # the same predictions by the script, for comparison
                    script = partial(run_one, "script", model, n, args.scale, sandbox, work, clients=10)
                    row(model, n, "script, 10 clients", script)
        finally:
            sandbox.close()
    print(report(lines, scale=args.scale, minutes=(time.monotonic() - started) / 60))


def bound(model: str, n: int, scale: float) -> float:
    """The least wall time the create rate and the latency allow (scaled)."""
    return (max(n - BURST, 0) * 60 / CREATES + MODELS[model]) / scale


def note(line: Line, lines: list[Line], work: Path, scale: float) -> None:
    """Say how the row went, and keep the table so far in ``work/table.md``."""
    m = line.measured
    how = m if isinstance(m, str) else f"{m.wall:.1f} s"
    print(f"  {line.model} N={line.n} {line.runner}: {how}", file=sys.stderr, flush=True)
    (work / "table.md").write_text(report(lines, scale=scale, minutes=0.0))


def report(lines: list[Line], *, scale: float, minutes: float) -> str:
    rows = [HEADER, ["---"] * len(HEADER), *(line.cells() for line in lines)]
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    failures = "".join(
        f"\n- {line.model} N={line.n} {line.runner} failed: {line.measured}"
        for line in lines
        if isinstance(line.measured, str)
    )
    return (
        f"Time-scaled by {scale:g}: 600 creates and 3,000 other calls a minute, sdxl 8 s, animation 120 s, "
        f"Prefer: wait 60 s, all divided by {scale:g} (walls and bounds below are the scaled ones); "
        f"{minutes:.1f} minutes in all.\n\n{table}\n{failures}"
    )


if __name__ == "__main__":
    main()

"""Throughput benchmark: our runner against the bound, a hand-written script and a sequential loop.

Run it with ``.venv/bin/python -m benchmarks.throughput`` (about 4 minutes on 2 cores; ``--help`` for
the knobs, ``--sizes 1,100`` for a quick look). It serves the sandbox in a separate process (so that
drawing images is not charged to the runner) with a fixed latency per prediction, then, for N = 1,
100 and 1000 predictions in three shapes (``wide``, ``deep``, ``fanout``; see :mod:`.shapes`), runs
in a fresh child process each (see :mod:`.child`):

- our runner (``orchestrator.run_pipeline``, set up as ``kkiai-run`` sets it up: run.log at INFO,
  no progress bar, cache off);
- the hand-written asyncio + httpx script of :mod:`.baseline`, same jobs, concurrency and rate limits;
- the sequential loop (for N above ``--sample`` timed on the first ``--sample`` predictions of the
  shape and extrapolated linearly).

and prints one table: wall time against the bound ``max(critical path x latency, N / create rate,
N x latency / concurrency)``, the ratios against the baselines, our CPU time per prediction, the HTTP
requests per prediction as the sandbox counted them, and peak RSS. Last, a burst of ``--burst``
predictions at once checks that the sandbox itself keeps up. docs/benchmarks.md explains each column.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from .shapes import SHAPES, VERSIONS, Shape, as_json, build, pipeline_data

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BURST_LATENCY = 5.0  # seconds per prediction in the burst check
GOALS = {"bound": 1.10, "script": 1.05, "cpu_ms": 2.0, "requests": 3.0, "rss_mb": 250.0}


@dataclass(frozen=True)
class Config:
    """The benchmark's knobs (command-line options)."""

    latency: float
    concurrency: int
    create_per_minute: float
    sizes: tuple[int, ...]
    shapes: tuple[str, ...]
    sample: int
    burst: int
    sync_final_status: str = "processing"
    foreach: bool = False

    @property
    def other_per_minute(self) -> float:
        return self.create_per_minute * 5  # the API's ratio: 600 creates and 3000 other calls a minute

    def bound(self, shape: Shape) -> float:
        """The least wall time any runner could take for ``shape`` under these limits."""
        n = shape.size
        by_rate = n * 60 / self.create_per_minute if self.create_per_minute > 0 else 0.0
        return max(shape.depth * self.latency, by_rate, n * self.latency / self.concurrency)


class Sandbox:
    """``kkiai-sandbox`` in a child process, with its counters and CPU time."""

    def __init__(self, config: Config, work: Path) -> None:
        command = [sys.executable, "-m", "kkiai_pipeline.sandbox.cli", "--port", "0"]
        command += ["--queue-seconds", "0", "--predict-seconds", str(config.latency)]
        command += ["--sync-final-status", config.sync_final_status]
        self._log = (work / f"sandbox-{config.latency:g}s.log").open("w")
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "kkiai sandbox listening on http://127.0.0.1:P/replicate/v1"
        if "listening on" not in line:
            self.close()
            raise RuntimeError(f"the sandbox did not start: {line!r}; see {self._log.name}")
        self.base_url = line.split()[-1]
        self.root = self.base_url.removesuffix("/replicate/v1")

    def cpu(self) -> float:
        """CPU seconds the sandbox has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.root}/sandbox/stats", timeout=30).json()
        return result

    def reset(self) -> None:
        httpx.post(f"{self.root}/sandbox/reset", timeout=30).raise_for_status()

    def close(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@dataclass
class Measured:
    """One run of one runner: its own figures and what the sandbox saw meanwhile."""

    wall: float  # the run alone, measured in the child
    cpu: float  # CPU seconds of the run alone
    cpu_total: float  # CPU seconds of the whole child process (interpreter start and imports included)
    rss_mb: float  # peak RSS of the child process
    requests: int  # HTTP requests the sandbox received (API calls and file downloads)
    succeeded: int  # predictions the sandbox saw succeed
    sandbox_cpu: float
    detail: dict[str, Any] = field(default_factory=dict)


def measure(
    kind: str,
    shape: Shape,
    *,
    config: Config,
    sandbox: Sandbox,
    work: Path,
    watch: Callable[[], None] | None = None,
    clients: int = 1,
    extra: dict[str, Any] | None = None,
) -> Measured:
    """Run ``kind`` (ours, script, sequential) over ``shape`` in a fresh process."""
    folder = Path(tempfile.mkdtemp(prefix=f"{kind}-{shape.name}-{shape.size}-", dir=work))
    spec = {
        "base_url": sandbox.base_url,
        "shape": as_json(shape),
        "out_dir": str(folder / "out"),
        "concurrency": config.concurrency,
        "create_per_minute": config.create_per_minute,
        "other_per_minute": config.other_per_minute,
        "foreach": config.foreach,
        "clients": clients,
        **(extra or {}),  # read by benchmarks.child: client options, the transport, time-scaled waits
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    sandbox.reset()
    sandbox_cpu = sandbox.cpu()
    command = [
        sys.executable,
        "-m",
        "benchmarks.child",
        kind,
        str(folder / "spec.json"),
        str(folder / "result.json"),
    ]
    with (folder / "child.log").open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        status, usage = _wait(process.pid, watch)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = (folder / "child.log").read_text()[-3000:]
        raise RuntimeError(f"{kind} {shape.name} N={shape.size} exited {process.returncode}:\n{tail}")
    result = json.loads((folder / "result.json").read_text())
    if not result["ok"]:
        raise RuntimeError(f"{kind} {shape.name} N={shape.size} did not succeed: {result}")
    seen = sandbox.stats()
    return Measured(
        wall=result["wall"],
        cpu=result["cpu"],
        cpu_total=usage.ru_utime + usage.ru_stime,
        rss_mb=usage.ru_maxrss / 1024,
        requests=sum(seen["requests"].values()),
        succeeded=seen["predictions"]["succeeded"],
        sandbox_cpu=sandbox.cpu() - sandbox_cpu,
        detail=result,
    )


def _wait(pid: int, watch: Callable[[], None] | None) -> tuple[int, Any]:
    """The child's exit status and resource usage (its own: os.wait4 reports that child alone)."""
    if watch is None:
        _, status, usage = os.wait4(pid, 0)
        return status, usage
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        watch()
        time.sleep(0.1)


@dataclass
class Row:
    """One line of the table: a shape at one size, measured three ways."""

    shape: Shape
    bound: float
    ours: Measured
    script: Measured
    loop_wall: float
    loop_sampled: bool

    @property
    def n(self) -> int:
        return self.shape.size


class Bench:
    """Runs the measurements of one benchmark and keeps the sequential samples."""

    def __init__(self, config: Config, sandbox: Sandbox, work: Path) -> None:
        self.config, self.sandbox, self.work = config, sandbox, work
        self._samples: dict[str, float] = {}  # shape -> seconds per prediction of the sequential loop

    def measure(self, kind: str, shape: Shape, **kwargs: Any) -> Measured:
        measured = measure(kind, shape, config=self.config, sandbox=self.sandbox, work=self.work, **kwargs)
        if measured.succeeded != shape.size:
            raise RuntimeError(
                f"{kind} {shape.name}: {measured.succeeded} of {shape.size} predictions succeeded"
            )
        return measured

    def row(self, shape: Shape) -> Row:
        ours = self.measure("ours", shape)
        script = self.measure("script", shape)
        loop_wall, sampled = self.loop(shape)
        return Row(shape, self.config.bound(shape), ours, script, loop_wall, sampled)

    def loop(self, shape: Shape) -> tuple[float, bool]:
        """The sequential loop's wall time for ``shape``, and whether it was extrapolated from a sample."""
        if shape.size <= self.config.sample:
            return self.measure("sequential", shape).wall, False
        if shape.name not in self._samples:
            sample = Shape(shape.name, shape.jobs[: self.config.sample], shape.depth)
            self._samples[shape.name] = self.measure("sequential", sample).wall / sample.size
        return self._samples[shape.name] * shape.size, True

    def burst(self) -> tuple[Measured, int]:
        """``--burst`` predictions sent at once by the script, no rate limit: the sandbox's capacity.

        Against a sandbox of its own with a latency of BURST_LATENCY, so that every prediction can be
        created before the first one ends; the script spreads them over one client per 50.
        """
        shape = build("wide", self.config.burst)
        config = replace(self.config, latency=BURST_LATENCY, concurrency=shape.size, create_per_minute=0.0)
        sandbox = Sandbox(config, self.work)
        peak = [0]

        def watch() -> None:
            counts = sandbox.stats()["predictions"]
            peak[0] = max(peak[0], counts["starting"] + counts["processing"])

        try:
            measured = measure(
                "script",
                shape,
                config=config,
                sandbox=sandbox,
                work=self.work,
                watch=watch,
                clients=-(-shape.size // 50),
            )
        finally:
            sandbox.close()
        return measured, peak[0]


def foreach_problem() -> str | None:
    """None when the pipeline format takes ``foreach:`` (fan-out as one step per group), else why not."""
    from kkiai_pipeline.api.client import ClientOptions
    from kkiai_pipeline.catalog import default_catalog
    from kkiai_pipeline.errors import KkiaiError
    from kkiai_pipeline.execution import ExecutionOptions
    from kkiai_pipeline.orchestrator import make_plan
    from kkiai_pipeline.pipeline import parse_pipeline
    from kkiai_pipeline.settings import ApiSettings, Settings

    for ref, version in VERSIONS.items():  # what the hand-written script hard-codes must still be right
        model = default_catalog().find(ref)
        assert model is not None and model.version == version, f"{ref}: the catalog's version changed"
    settings = Settings(
        api=ApiSettings("kkiai", "http://127.0.0.1:1", "x", ClientOptions()),
        execution=ExecutionOptions(),
        progress=False,
        run_dir=Path(tempfile.gettempdir()),
    )
    try:
        make_plan(parse_pipeline(pipeline_data(build("fanout", 5), foreach=True)), settings)
    except KkiaiError as exc:
        return str(exc).splitlines()[-1].strip()
    return None


def table(rows: list[Row]) -> str:
    """The results as a Markdown table (readable as plain text too)."""
    head = [
        "shape",
        "N",
        "bound s",
        "ours s",
        "ours÷bound",
        "script s",
        "ours÷script",
        "loop s",
        "loop÷ours",
        "CPU ms/pred",
        "req/pred",
        "peak RSS MB",
        "sandbox CPU",
    ]
    lines = [head]
    for r in rows:
        o, s = r.ours, r.script
        lines.append(
            [
                r.shape.name,
                str(r.n),
                f"{r.bound:.1f}",
                f"{o.wall:.2f}",
                f"{o.wall / r.bound:.2f}",
                f"{s.wall:.2f}",
                f"{o.wall / s.wall:.2f}",
                ("~" if r.loop_sampled else "") + f"{r.loop_wall:.0f}",
                f"{r.loop_wall / o.wall:.1f}",
                f"{1000 * o.cpu / r.n:.2f} ({1000 * s.cpu / r.n:.2f})",
                f"{o.requests / r.n:.2f} ({s.requests / r.n:.2f})",
                f"{o.rss_mb:.0f} ({s.rss_mb:.0f})",
                f"{o.sandbox_cpu / o.wall:.0%}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |"
        for line in lines
    ]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def verdicts(rows: list[Row]) -> list[tuple[str, str, bool]]:
    """Each goal: what it asks, what was measured (worst shape at the largest N), met or not."""
    largest = max(r.n for r in rows)
    top = [r for r in rows if r.n == largest]

    def worst(value: Callable[[Row], float]) -> tuple[float, str]:
        row = max(top, key=value)
        return value(row), row.shape.name

    checks = [
        ("wall ≤ {:.2f}x the bound", "bound", lambda r: r.ours.wall / r.bound, "{:.2f}x"),
        (
            "wall ≤ {:.2f}x the hand-written script",
            "script",
            lambda r: r.ours.wall / r.script.wall,
            "{:.2f}x",
        ),
        ("CPU ≤ {:.0f} ms per prediction", "cpu_ms", lambda r: 1000 * r.ours.cpu / r.n, "{:.2f} ms"),
        ("HTTP requests ≤ {:.0f} per prediction", "requests", lambda r: r.ours.requests / r.n, "{:.2f}"),
        ("peak RSS ≤ {:.0f} MB", "rss_mb", lambda r: r.ours.rss_mb, "{:.0f} MB"),
    ]
    out = []
    for text, goal, value, unit in checks:
        measured, shape = worst(value)
        out.append(
            (
                text.format(GOALS[goal]),
                f"{unit.format(measured)} (worst: {shape}, N={largest})",
                measured <= GOALS[goal],
            )
        )
    return out


@dataclass
class Results:
    """Everything one benchmark run measured, and the conditions it ran in."""

    config: Config
    rows: list[Row]
    burst: tuple[Measured, int] | str | None  # str: why the check failed
    foreach_problem: str | None
    load: tuple[float, float]  # 1-minute load average before and after
    seconds: float


def run(config: Config, work: Path) -> Results:
    """Every measurement of the benchmark, against one sandbox."""
    started, load = time.monotonic(), os.getloadavg()[0]
    problem = foreach_problem()
    config = replace(config, foreach=problem is None)
    sandbox = Sandbox(config, work)
    try:
        bench = Bench(config, sandbox, work)
        rows = []
        for size in config.sizes:
            for name in ("single",) if size == 1 else config.shapes:
                shape = build(name, size)
                print(f"  {name} N={shape.size}:", file=sys.stderr, end=" ", flush=True)
                row = bench.row(shape)
                rows.append(row)
                print(
                    f"ours {row.ours.wall:.2f} s, script {row.script.wall:.2f} s, bound {row.bound:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        sandbox.close()
    burst: tuple[Measured, int] | str | None = None
    if config.burst:
        try:
            burst = bench.burst()
        except RuntimeError as exc:  # the table is still worth printing
            burst = str(exc).splitlines()[0]
    return Results(config, rows, burst, problem, (load, os.getloadavg()[0]), time.monotonic() - started)


def report(results: Results) -> None:
    """Print the conditions, the table and the goals."""
    config, rows = results.config, results.rows
    print(
        f"throughput: kkiai-pipeline {_revision()}; {os.cpu_count()} cores ({_cpu_model()}), "
        f"Python {platform.python_version()}, "
        f"load average {results.load[0]:.2f} before, {results.load[1]:.2f} after; "
        f"{results.seconds / 60:.1f} min"
    )
    print(
        f"sandbox latency {config.latency:g} s per prediction; concurrency {config.concurrency}; "
        f"create rate {config.create_per_minute:g}/min (other calls {config.other_per_minute:g}/min); "
        f"Prefer: wait=60, answered '{config.sync_final_status}' when finished; cache off"
    )
    if results.foreach_problem is not None:
        print(f"fanout: no foreach in the pipeline format ({results.foreach_problem}); one step per rembg")
    print()
    print(table(rows))
    print()
    print(f"(in brackets: the hand-written script; ~: the loop timed on {config.sample} predictions)")
    ours_start = max(r.ours.cpu_total - r.ours.cpu for r in rows)
    script_start = max(r.script.cpu_total - r.script.cpu for r in rows)
    print(
        f"process start and imports (not in CPU ms/pred): ours {ours_start:.2f} s CPU, "
        f"script {script_start:.2f} s"
    )
    verdict = verdicts(rows)
    if isinstance(results.burst, str):
        print(f"sandbox: the burst of {config.burst} failed: {results.burst}")
        verdict.append(("the sandbox holds thousands in flight", "the check failed", False))
    elif results.burst is not None:
        measured, peak = results.burst
        print(
            f"sandbox: {config.burst} predictions sent at once (script, no rate limit): up to {peak} "
            f"in flight, all done in {measured.wall:.2f} s (latency {BURST_LATENCY:g} s), "
            f"sandbox CPU {measured.sandbox_cpu:.1f} s"
        )
        keeps_up = f"{peak} of {config.burst} in flight at once"
        verdict.append(("the sandbox holds thousands in flight", keeps_up, peak >= 0.9 * config.burst))
    print()
    for text, measured_text, met in verdict:
        print(f"  {'met    ' if met else 'NOT met'}  {text}: {measured_text}")


def _revision() -> str:
    """The package's commit, ``+`` when kkiai_pipeline/ has changes not committed (or ``unknown``)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "kkiai_pipeline"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per prediction in the sandbox")
    parser.add_argument("--concurrency", type=int, default=50, help="predictions in flight (both runners)")
    parser.add_argument("--create-rate", type=float, default=6000, help="creates a minute (both runners)")
    parser.add_argument("--sizes", default="1,100,1000", help="comma-separated N")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shapes")
    parser.add_argument("--sample", type=int, default=10, help="predictions the sequential loop times")
    parser.add_argument(
        "--burst", type=int, default=2000, help="predictions at once for the sandbox check (0: skip)"
    )
    parser.add_argument(
        "--sync-final-status",
        choices=("processing", "succeeded"),
        default="processing",
        help="what the sandbox's Prefer: wait answers say when finished (the real API: processing)",
    )
    parser.add_argument("--keep", type=Path, help="keep the runs' files in this directory")
    args = parser.parse_args(argv)
    config = Config(
        latency=args.latency,
        concurrency=args.concurrency,
        create_per_minute=args.create_rate,
        sizes=tuple(int(n) for n in args.sizes.split(",")),
        shapes=tuple(args.shapes.split(",")),
        sample=args.sample,
        burst=args.burst,
        sync_final_status=args.sync_final_status,
    )
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        report(run(config, args.keep))
        return
    with tempfile.TemporaryDirectory(prefix="kkiai-throughput-") as tmp:
        report(run(config, Path(tmp)))


if __name__ == "__main__":
    main()

"""A batch of N prompts from a file, against N one-prediction steps: ``python -m benchmarks.batch``.

Measures our runner on a ``foreach: "{{ lines('prompts.txt') }}"`` step of N items (the issue's goal:
CPU per prediction within 1.5x of one-prediction steps, peak RSS under 300 MB, run.json and the
journal in time linear in the items) beside the baseline, the same predictions written as separate
one-prediction steps, in the same script against the same sandbox. Each run is a fresh child process
(its CPU time and peak RSS are its own, read with ``os.wait4``); the child reports the run alone
(imports excluded) and the time spent writing run.json and the journal (``RunRecord.save`` and
``note``, timed around the calls).

``--sizes 1000,10000`` (foreach sizes), ``--baseline 1,1000`` (the baselines: a one-prediction step,
and 1,000 of them, whose CPU per prediction the ratios are against), ``--latency``
(the sandbox's seconds a prediction), ``--concurrency``; ``--keep DIR`` keeps the run directories.
Limits are raised far above the API's (the point is our bookkeeping, not the rate limiter).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "benchmark-token"
MODEL = "stability-ai/stable-diffusion"
SIZE = {"width": 64, "height": 64, "num_inference_steps": 1}


def pipeline_file(folder: Path, kind: str, n: int) -> Path:
    """The pipeline (and its prompts.txt) for ``foreach`` over N lines, or N separate ``steps``."""
    prompts = [f"benchmark subject {i}, a ceramic mug on marble" for i in range(n)]
    if kind == "foreach":
        (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
        steps: dict[str, Any] = {
            "batch": {
                "model": MODEL,
                "foreach": "{{ lines('prompts.txt') }}",
                "input": {"prompt": "{{ item }}", "seed": "{{ index }}", **SIZE},
            }
        }
    else:
        steps = {
            f"s{i}": {"model": MODEL, "input": {"prompt": p, "seed": i, **SIZE}}
            for i, p in enumerate(prompts)
        }
    source = folder / "pipeline.yaml"
    source.write_text(json.dumps({"name": f"{kind}{n}", "steps": steps}))  # JSON is YAML
    return source


# -- the child: one measured run ---------------------------------------------------------------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(spec: dict[str, Any]) -> dict[str, Any]:
    import logging

    from kkiai_pipeline import rundir
    from kkiai_pipeline.api.client import ClientOptions
    from kkiai_pipeline.execution import ExecutionOptions
    from kkiai_pipeline.orchestrator import run_pipeline
    from kkiai_pipeline.pipeline import parse_pipeline, read_pipeline_file
    from kkiai_pipeline.settings import ApiSettings, Settings

    folder = Path(spec["folder"])
    spent = {"rundir": 0.0}
    for name in ("note", "save", "close", "start"):
        original = getattr(rundir.RunRecord, name)

        def timed(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent["rundir"] += time.perf_counter() - started

        setattr(rundir.RunRecord, name, timed)
    handler = logging.FileHandler(folder / "run.log")  # as kkiai-run logs: INFO to run.log
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # The sandbox's list shows a prediction at once (as conf/api/sandbox.yaml says), and shares our clock.
    options = ClientOptions(
        create_rate_per_minute=600_000,
        other_rate_per_minute=3_000_000,
        list_lag_seconds=1,
        clock_skew_seconds=5,
    )
    settings = Settings(
        api=ApiSettings("kkiai", spec["base_url"], TOKEN, options),
        execution=ExecutionOptions(max_concurrency=spec["concurrency"]),
        progress=False,
        run_dir=folder / "run",
        cache_dir=folder / "cache",
        cache=False,
        max_predictions=spec["n"],  # the budget's default (1000) would refuse the 10,000-item batch
    )
    source = pipeline_file(folder, spec["kind"], spec["n"])
    cpu, start = _cpu(), time.perf_counter()
    record = run_pipeline(parse_pipeline(read_pipeline_file(source), source=source), settings)
    wall, cpu = time.perf_counter() - start, _cpu() - cpu
    leaves = [i for s in record.steps.values() for i in (s.items or [s])]
    missed = sum(leaf.status != "succeeded" for leaf in leaves)
    return {"wall": wall, "cpu": cpu, "rundir": spent["rundir"], "missed": missed}


# -- run.json and the journal alone ---------------------------------------------------------------------


def bookkeeping(n: int, folder: Path, *, interval: float) -> tuple[float, int]:
    """Seconds spent by RunRecord on a foreach of ``n`` items, each started and ended as a run does it,
    with run.json rewritten at most every ``interval`` seconds; and the number of rewrites."""
    from kkiai_pipeline import rundir
    from kkiai_pipeline.artifacts import Artifact
    from kkiai_pipeline.rundir import RunRecord, StepRecord

    saves = 0
    save = RunRecord.save

    def counted(self: RunRecord, *, compact: bool = False) -> None:
        nonlocal saves
        saves += 1
        save(self, compact=compact)

    RunRecord.save = counted  # type: ignore[method-assign]
    rundir.SNAPSHOT_INTERVAL, before = interval, rundir.SNAPSHOT_INTERVAL
    version = f"{MODEL}:" + "a" * 64
    try:
        items = [StepRecord(MODEL, version, index=i, item=f"prompt {i}") for i in range(n)]
        step = StepRecord(MODEL, version, items=items)
        started = time.perf_counter()
        record = RunRecord(folder, "batch", {"kind": "sandbox"}, {"batch": step})
        record.start()
        step.start()
        record.note("batch")
        for item in items:
            item.start()
            item.input, item.key = {"prompt": item.item, "seed": item.index, **SIZE}, f"{item.index:064x}"
            item.prediction_id, item.obtained = f"p{item.index:025d}", "created"
            item.created_at = item.started_at = item.completed_at = rundir.utc_now()
            item.metrics = {"predict_time": 0.5}
            path = f"steps/batch/{item.index}/output_0.png"
            item.succeed(outputs=[Artifact(path, "http://127.0.0.1/f.png", "0" * 64, 100, "image/png")])
            item.output = ["http://127.0.0.1/f.png"]
            item.attempts = [{"prediction_id": item.prediction_id, "status": "succeeded", "error": None}]
            record.note("batch", item=item.index)
        step.succeed(outputs=[a for i in items for a in i.outputs])
        record.note("batch")
        record.finish(interrupted=False)
        return time.perf_counter() - started, saves
    finally:
        RunRecord.save = save  # type: ignore[method-assign]
        rundir.SNAPSHOT_INTERVAL = before


def bookkeeping_table(sizes: list[int], work: Path) -> None:
    print("run.json + journal alone (RunRecord, no network), per item of a foreach:\n")
    print("| rewrites at most | N | s | µs per item | run.json rewrites |")
    print("|---|---|---|---|---|")
    for interval in (1.0, 0.0):
        per_item = []
        for n in sizes:
            folder = Path(tempfile.mkdtemp(prefix=f"records-{n}-", dir=work))
            seconds, saves = bookkeeping(n, folder, interval=interval)
            per_item.append(seconds / n)
            print(f"| every {interval:g} s | {n} | {seconds:.2f} | {1e6 * seconds / n:.0f} | {saves} |")
        print(f"| every {interval:g} s | ratio | | {per_item[-1] / per_item[0]:.2f} (linear: 1) | |")
    print()


# -- the parent ---------------------------------------------------------------------------------------


class Sandbox:
    """The emulator in its own process (drawing images is not charged to the runner)."""

    def __init__(self, latency: float, work: Path) -> None:
        command = [sys.executable, "-m", "kkiai_pipeline.sandbox.cli", "--port", "0", "--queue-seconds", "0"]
        command += ["--predict-seconds", str(latency)]
        self._log = (work / "sandbox.log").open("w")
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.close()
            raise RuntimeError(f"the sandbox did not start: {line!r}")
        self.base_url = line.split()[-1]
        self.root = self.base_url.removesuffix("/replicate/v1")

    def creates(self) -> int:
        return int(httpx.get(f"{self.root}/sandbox/stats", timeout=60).json()["requests"]["create"])

    def reset(self) -> None:
        httpx.post(f"{self.root}/sandbox/reset", timeout=60).raise_for_status()

    def close(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@dataclass
class Measured:
    kind: str
    n: int
    wall: float
    cpu: float
    rundir: float
    rss_mb: float
    creates: int
    missed: int

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.n


def measure(kind: str, n: int, *, sandbox: Sandbox, work: Path, concurrency: int) -> Measured:
    folder = Path(tempfile.mkdtemp(prefix=f"{kind}-{n}-", dir=work))
    spec = {
        "kind": kind,
        "n": n,
        "folder": str(folder),
        "base_url": sandbox.base_url,
        "concurrency": concurrency,
    }
    (folder / "spec.json").write_text(json.dumps(spec))
    sandbox.reset()
    command = [sys.executable, "-m", "benchmarks.batch", "--child", str(folder / "spec.json")]
    with (folder / "child.log").open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{kind} N={n} failed:\n{(folder / 'child.log').read_text()[-3000:]}")
    result = json.loads((folder / "result.json").read_text())
    if result["missed"]:
        print(f"{kind} N={n}: {result['missed']} predictions did not succeed; see {folder}/run.log")
    return Measured(
        kind,
        n,
        result["wall"],
        result["cpu"],
        result["rundir"],
        usage.ru_maxrss / 1024,
        sandbox.creates(),
        result["missed"],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="foreach sizes (default 1000,10000)")
    parser.add_argument(
        "--baseline",
        default="1,1000",
        help="pipelines of that many one-prediction steps, the baseline (default 1,1000; ratios are "
        "against the last)",
    )
    parser.add_argument("--latency", type=float, default=0.5, help="sandbox seconds a prediction")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    parser.add_argument(
        "--bookkeeping-only", action="store_true", help="only time run.json and the journal (no sandbox)"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child.read_text())
        (Path(spec["folder"]) / "result.json").write_text(json.dumps(child(spec)))
        return
    work = Path(tempfile.mkdtemp(prefix="kkiai-batch-", dir=args.keep))
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.bookkeeping_only:
        bookkeeping_table(sizes, work)
        return
    sandbox = Sandbox(args.latency, work)
    try:
        rows = [
            measure("steps", int(n), sandbox=sandbox, work=work, concurrency=args.concurrency)
            for n in args.baseline.split(",")
        ]
        for n in sizes:
            rows.append(measure("foreach", n, sandbox=sandbox, work=work, concurrency=args.concurrency))
        sandbox.close()
        report(rows, args)
        print()
        # Last: a child's peak RSS counts what this process held when it forked the child.
        bookkeeping_table(sizes, work)
    finally:
        sandbox.close()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def report(rows: list[Measured], args: argparse.Namespace) -> None:
    base = [m for m in rows if m.kind == "steps"][-1]
    print(
        f"latency {args.latency:g} s, concurrency {args.concurrency}; "
        f"baseline: {base.n} one-prediction steps\n"
    )
    print(
        "| run | N | wall s | CPU ms/pred | ÷ baseline | run.json+journal s | per item ms "
        "| peak RSS MB | creates | not succeeded |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in rows:
        print(
            f"| {m.kind} | {m.n} | {m.wall:.1f} | {m.cpu_ms:.2f} | {m.cpu_ms / base.cpu_ms:.2f} | "
            f"{m.rundir:.2f} | {1000 * m.rundir / m.n:.3f} | {m.rss_mb:.0f} | {m.creates} | {m.missed} |"
        )
    batches = [m for m in rows if m.kind == "foreach"]
    if len(batches) >= 2:
        small, large = batches[0], batches[-1]
        scale = large.n / small.n
        print(
            f"\nrun.json + journal time grows {large.rundir / small.rundir:.1f}x for {scale:.0f}x the items "
            f"(linear: {scale:.0f}x); CPU per prediction {large.cpu_ms / small.cpu_ms:.2f}x"
        )
    worst = max(m.cpu_ms for m in batches) / base.cpu_ms
    rss = max(m.rss_mb for m in batches)
    print(f"goal CPU/pred ≤ 1.5x baseline: {worst:.2f}x {'met' if worst <= 1.5 else 'NOT met'}")
    print(f"goal peak RSS < 300 MB: {rss:.0f} MB {'met' if rss < 300 else 'NOT met'}")


if __name__ == "__main__":
    main()

"""Sweeps: a 24-job sweep against one job, and 100- and 1,000-job sweeps against the rate limit.

``python -m benchmarks.sweep`` (``--jobs``, ``--predict-seconds`` to vary): both runs are the real
``kkiai-run`` command on ``api=sandbox`` (the emulator in-process, as a user runs it) with the shipped
``product_shots`` pipeline (3 predictions a job), the cache off; it prints both wall times and their
ratio (goal: at most 1.5).

``python -m benchmarks.sweep --volume`` (``--sizes``, ``--baseline-sizes``, ``--latency``,
``--create-rate``): sweeps of a one-step pipeline (one prediction a job), ``kkiai-run -m`` against the
sandbox served in its own process (as :mod:`.throughput` serves it) at the API's create limit, once as
it runs by default and once with ``fast_sweep=false`` (each job composed by Hydra: the old path, the
baseline). For each it prints the time from starting ``kkiai-run`` to the first create *as the server
saw it* (the oldest ``created_at`` of its prediction list), the wall time against the rate-limit bound
``(N - burst) / rate + latency`` (goal: at most 1.15), the CPU seconds of the ``kkiai-run`` process per
job, and the creates the server counted. See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUBJECTS = ["a mug", "a vase", "a teapot", "a bowl", "a cup", "a jar"]
GUIDANCE = ["5", "7.5", "9", "12"]


def kkiai_run(args: list[str], cwd: Path) -> float:
    command = [str(Path(sys.executable).parent / "kkiai-run"), *args, "progress=false", "cache=false"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KKIAI_")}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=900)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"kkiai-run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return took


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24, choices=[4, 8, 12, 24])
    parser.add_argument(
        "--predict-seconds", default="2,8", help="comma-separated processing times to measure at"
    )
    parser.add_argument("--volume", action="store_true", help="the 100- and 1,000-job sweeps instead")
    parser.add_argument("--sizes", default="100,1000", help="--volume: jobs per sweep, comma-separated")
    parser.add_argument(
        "--baseline-sizes", default="100", help="--volume: sizes also run with fast_sweep=false ('' none)"
    )
    parser.add_argument("--latency", type=float, default=0.8, help="--volume: seconds a prediction takes")
    parser.add_argument("--create-rate", type=float, default=600, help="--volume: creates a minute")
    parser.add_argument("--keep", type=Path, help="--volume: keep the sweeps' files in this folder")
    args = parser.parse_args(argv)
    if args.volume:
        from .sweep_volume import run_volume

        sizes = [int(n) for n in args.sizes.split(",") if n]
        baseline = {int(n) for n in args.baseline_sizes.split(",") if n}
        run_volume(sizes, baseline, latency=args.latency, create_rate=args.create_rate, keep=args.keep)
        return
    for seconds in (float(s) for s in args.predict_seconds.split(",")):
        measure(args.jobs, seconds)


def measure(jobs_wanted: int, predict_seconds: float) -> None:
    common = [
        "pipeline=product_shots",
        "api=sandbox",
        "api.sandbox.queue_seconds=0.5",
        f"api.sandbox.predict_seconds={predict_seconds}",
    ]
    subjects = SUBJECTS[: max(1, jobs_wanted // len(GUIDANCE))]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        single = kkiai_run([*common, f"hydra.run.dir={work / 'single'}"], work)
        sweep = kkiai_run(
            [
                "-m",
                *common,
                "pipeline.params.subject=" + ",".join(f"'{s}'" for s in subjects),
                "pipeline.steps.generate.input.guidance_scale=" + ",".join(GUIDANCE),
                f"hydra.sweep.dir={work / 'sweep'}",
            ],
            work,
        )
    jobs = len(subjects) * len(GUIDANCE)
    latency = 0.5 + predict_seconds
    print(f"sweep benchmark: product_shots, 3 predictions a job, sandbox latency {latency:.1f} s each")
    print(f"  one job          {single:6.1f} s")
    print(f"  {jobs}-job sweep     {sweep:6.1f} s   ratio {sweep / single:.2f}x (goal <= 1.50x)")


if __name__ == "__main__":
    main()

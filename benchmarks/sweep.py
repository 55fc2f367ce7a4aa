"""The 24-job sweep against one job: a sweep's jobs run concurrently, so it should take about as long.

Run it with ``python -m benchmarks.sweep`` (``--jobs``, ``--predict-seconds`` to vary). Both runs are
the real ``kkiai-run`` command on ``api=sandbox`` (the emulator in-process, as a user runs it) with the
shipped ``product_shots`` pipeline (3 predictions a job), the cache off; it prints both wall times and
their ratio (goal: at most 1.5).
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
    args = parser.parse_args(argv)
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

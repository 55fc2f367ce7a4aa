"""100- and 1,000-job sweeps at the create limit: ``python -m benchmarks.sweep --volume`` (see sweep.py).

Each measurement is the real ``kkiai-run -m`` in a fresh process, against one sandbox served in its own
process (:class:`.throughput.Sandbox`, reset before each run), with the cache in a fresh folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from kkiai_pipeline.api.prediction import parse_timestamp

from .throughput import Config, Sandbox

ONE_STEP = """
name: one
params: {n: 0}
steps:
  shot:
    model: stability-ai/stable-diffusion
    input: {prompt: "a mug, take {{ params.n }}", width: 64, height: 64}
"""
BURST = 10  # api.burst: creates sent at once before the rate applies
GOAL = 1.15  # wall / bound
TOKEN = "benchmark-token"


@dataclass(frozen=True)
class Sweep:
    """One ``kkiai-run -m`` as the server and the operating system saw it."""

    jobs: int
    path: str  # "fast" (the default) or "hydra" (fast_sweep=false)
    wall: float
    first_create: float  # seconds from starting kkiai-run to the first create the server received
    cpu: float  # CPU seconds of the kkiai-run process
    creates: int  # creates the server counted
    bound: float

    def line(self) -> str:
        ratio, cpu_ms = self.wall / self.bound, self.cpu / self.jobs * 1000
        return (
            f"{self.jobs:>5}  {self.path:<6} {self.first_create:>9.1f}  {self.wall:>7.1f}  "
            f"{self.bound:>7.1f}  {ratio:>6.2f}x  {cpu_ms:>8.1f}  {self.creates:>7}"
        )


def run_volume(
    sizes: list[int], baseline: set[int], *, latency: float, create_rate: float, keep: Path | None
) -> None:
    work = Path(tempfile.mkdtemp(prefix="sweep-volume-", dir=keep))
    (work / "pipelines").mkdir()
    (work / "pipelines" / "one.yaml").write_text(ONE_STEP, encoding="utf-8")
    config = Config(latency, 16, create_rate, (), (), 0, 0)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KKIAI_")}
    environ.update(KKIAI_API_TOKEN=TOKEN, KKIAI_PIPELINE_PATH=str(work / "pipelines"))
    environ["XDG_CACHE_HOME"] = str(work / "xdg")  # the sandbox's store
    saved = dict(os.environ)
    os.environ.update(XDG_CACHE_HOME=environ["XDG_CACHE_HOME"])
    sandbox = Sandbox(config, work)
    os.environ.clear()
    os.environ.update(saved)
    results: list[Sweep] = []
    load = os.getloadavg()[0]
    try:
        for jobs in sizes:
            paths = ["fast", "hydra"] if jobs in baseline else ["fast"]
            for path in paths:
                results.append(measure(jobs, path, sandbox, work, environ, latency, create_rate))
                print(results[-1].line(), file=sys.stderr, flush=True)
    finally:
        sandbox.close()
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"sweeps of a one-step pipeline, {create_rate:g} creates/min (burst {BURST}), {latency:g} s a "
        f"prediction; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(" jobs  path   1st create s   wall s  bound s  wall/bound  CPU ms/job  creates")
    for result in results:
        print(result.line())
    for jobs in sizes:
        mine = {r.path: r for r in results if r.jobs == jobs}
        if "hydra" in mine:
            fast, old = mine["fast"], mine["hydra"]
            print(
                f"{jobs} jobs: first create {old.first_create / fast.first_create:.1f}x sooner, "
                f"CPU per job {old.cpu / fast.cpu:.1f}x less than with fast_sweep=false"
            )
    print(f"goals: the first create of 1,000 jobs within 30 s; wall/bound at most {GOAL}")


def measure(
    jobs: int,
    path: str,
    sandbox: Sandbox,
    work: Path,
    environ: dict[str, str],
    latency: float,
    create_rate: float,
) -> Sweep:
    sandbox.reset()
    sweep_dir = work / f"sweep-{jobs}-{path}"
    command = [
        str(Path(sys.executable).parent / "kkiai-run"),
        "-m",
        "pipeline=one",
        f"pipeline.params.n=range(0,{jobs})",
        f"api.base_url={sandbox.base_url}",
        f"api.create_rate_per_minute={create_rate:g}",
        f"api.other_rate_per_minute={create_rate * 5:g}",
        f"api.burst={BURST}",
        "progress=false",
        f"cache_dir={work / f'cache-{jobs}-{path}'}",
        f"hydra.sweep.dir={sweep_dir}",
        f"max_predictions={jobs}",  # the budget's default (1000) allows no more
    ]
    if path == "hydra":
        command.append("fast_sweep=false")
    with (work / f"kkiai-run-{jobs}-{path}.log").open("w") as log:
        started = time.time()
        process = subprocess.Popen(command, cwd=work, env=environ, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.time() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"kkiai-run failed; see {log.name}")
    first = _oldest_created(sandbox, after=started)  # the store keeps earlier runs' predictions
    creates = sandbox.stats()["requests"]["create"]
    bound = max(0, jobs - BURST) * 60 / create_rate + latency
    return Sweep(jobs, path, wall, first - started, usage.ru_utime + usage.ru_stime, creates, bound)


def _oldest_created(sandbox: Sandbox, *, after: float) -> float:
    """The ``created_at`` (epoch seconds) of the oldest prediction made after ``after``, by the server."""
    oldest = float("inf")
    cursor: str | None = None
    with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
        while True:
            page = http.get(f"{sandbox.base_url}/predictions", params={"cursor": cursor} if cursor else {})
            body = page.raise_for_status().json()
            for prediction in body["results"]:
                created = parse_timestamp(prediction["created_at"])
                if created is not None and created.timestamp() > after:
                    oldest = min(oldest, created.timestamp())
            following = body.get("next")
            if not following:
                return oldest
            cursor = httpx.URL(following).params.get("cursor")

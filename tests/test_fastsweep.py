"""Fast sweeps (kkiai_pipeline/fastsweep.py): the same jobs and the same files as Hydra's own path;
and the orchestrator starting a sweep's jobs in turn, so that the first create does not wait for all.

Each sweep is a dry run of ``kkiai-run -m`` in this process (nothing is sent), once as it runs by
default and once with the fast path refused, in two folders; every job's ``.hydra/`` files and plan
must be the same, and Hydra must have composed only the working config and the guard job.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl

from kkiai_pipeline import cli, fastsweep
from kkiai_pipeline.orchestrator import _in_turn

ONE = """
name: one
params: {n: 0, style: plain}
steps:
  shot:
    model: stability-ai/stable-diffusion
    input: {prompt: "a mug {{ params.n }} {{ params.style }}", width: 128, height: 128}
"""


def sweep(
    tmp_path: Path, folder: str, args: list[str], monkeypatch: pytest.MonkeyPatch, *, fast: bool
) -> tuple[int, Path, int]:
    """Run ``kkiai-run -m pipeline=one ARGS dry_run=true`` in ``tmp_path/folder``; the exit code, the
    sweep directory and how many configs Hydra composed for the jobs."""
    work = tmp_path / folder
    (work / "pipelines").mkdir(parents=True)
    (work / "pipelines" / "one.yaml").write_text(ONE)
    composed = []
    original = ConfigLoaderImpl.load_sweep_config

    def counting(self: ConfigLoaderImpl, master_config: object, sweep_overrides: list[str]) -> object:
        composed.append(sweep_overrides)
        return original(self, master_config, sweep_overrides)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.chdir(work)
        patch.setattr(ConfigLoaderImpl, "load_sweep_config", counting)
        if not fast:
            patch.setattr(fastsweep.FastJobs, "refused", staticmethod(lambda *a: "refused by the test"))
        patch.setattr(
            sys, "argv", ["kkiai-run", "-m", "pipeline=one", *args, "dry_run=true", "progress=false"]
        )
        for name in [k for k in os.environ if k.startswith("KKIAI_")]:
            patch.delenv(name)
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, work / "multirun" / "s", len(composed)


def files(sweep_dir: Path, work: Path) -> dict[str, str]:
    """Every job's .hydra files and plan, the folder's path made neutral."""
    found = {}
    for path in sorted(sweep_dir.glob("*/.hydra/*.yaml")) + sorted(sweep_dir.glob("*/plan.json")):
        found[path.relative_to(sweep_dir).as_posix()] = path.read_text().replace(str(work), "<work>")
    return found


@pytest.mark.parametrize(
    ("args", "jobs", "fast_composes"),
    [
        # two axes: 3 x 2 jobs, each job's values set on one config
        (["pipeline.params.n=range(0,3)", "pipeline.params.style=plain,'oil paint'"], 6, 2),
        # a value that interpolates Hydra's node: resolved against each job
        (["pipeline.params.n=1,2", "pipeline.params.style=${hydra:job.num}"], 2, 2),
        # mappings swept: left to Hydra (twice per job: validation and launch)
        (["pipeline.params.n=1,2", "pipeline.params.style={a:1},{b:2}"], 4, 8),
        # an appended key: left to Hydra
        (["+pipeline.params.extra=x,y"], 2, 4),
    ],
)
def test_a_fast_sweep_makes_the_jobs_hydra_makes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], jobs: int, fast_composes: int
) -> None:
    common = [*args, "hydra.sweep.dir=multirun/s"]
    code, fast_dir, fast_count = sweep(tmp_path, "fast", common, monkeypatch, fast=True)
    slow_code, slow_dir, slow_count = sweep(tmp_path, "hydra", common, monkeypatch, fast=False)
    assert (code, slow_code) == (0, 0)
    assert (fast_count, slow_count) == (fast_composes, 2 * jobs)
    fast_files, slow_files = files(fast_dir, tmp_path / "fast"), files(slow_dir, tmp_path / "hydra")
    assert len(fast_files) == 4 * jobs
    assert fast_files == slow_files
    sweep_json = json.loads((fast_dir / "sweep.json").read_text())
    assert [j["status"] for j in sweep_json["jobs"]] == ["planned"] * jobs


def test_a_bad_value_in_a_late_job_stops_nothing_else_and_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # width must be one of the model's sizes: every other job of 20 is bad, the last one too
    code, sweep_dir, count = sweep(
        tmp_path,
        "bad",
        [
            "pipeline.params.n=range(0,10)",
            "pipeline.steps.shot.input.width=128,500",
            "hydra.sweep.dir=multirun/s",
        ],
        monkeypatch,
        fast=True,
    )
    assert (code, count) == (2, 2)
    jobs = json.loads((sweep_dir / "sweep.json").read_text())["jobs"]
    assert len(jobs) == 20
    assert [j["status"] for j in jobs] == ["planned", "error"] * 10
    assert "width must be one of" in jobs[-1]["error"]


# -- the orchestrator starts its jobs in turn ---------------------------------------------------------


def test_the_first_job_is_served_before_the_last_one_starts() -> None:
    log: list[tuple[str, int]] = []

    async def job(num: int) -> Any:
        log.append(("start", num))  # a job's synchronous start (its run.json written)
        await asyncio.sleep(0)  # its first create on the way
        log.append(("sent", num))
        return num

    results = asyncio.run(_in_turn([job(n) for n in range(10)]))
    assert results == list(range(10))
    assert log.index(("sent", 0)) < log.index(("start", 9))
    assert sorted(log) == sorted([("start", n) for n in range(10)] + [("sent", n) for n in range(10)])


def test_jobs_interrupted_while_starting_wind_down_and_the_rest_never_start() -> None:
    ended: list[int] = []
    started: list[int] = []

    async def job(num: int) -> Any:
        started.append(num)
        try:
            await asyncio.sleep(60)
        finally:
            ended.append(num)

    async def interrupted() -> None:
        starting = asyncio.ensure_future(_in_turn([job(n) for n in range(100)]))
        for _ in range(3):
            await asyncio.sleep(0)
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting

    asyncio.run(interrupted())
    assert 0 < len(started) < 100
    assert sorted(ended) == sorted(started)  # every started job ran its clean-up

"""The budget: what a run or a sweep would create is counted, and refused over max_predictions, before
any request."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kkiai_pipeline.api.client import ClientOptions
from kkiai_pipeline.budget import combine, count
from kkiai_pipeline.errors import BudgetExceeded
from kkiai_pipeline.execution import ExecutionOptions
from kkiai_pipeline.ledger import Ledger
from kkiai_pipeline.orchestrator import Orchestrator, make_plan, prepare, run_pipeline
from kkiai_pipeline.pipeline import Pipeline, parse_pipeline, read_pipeline_file
from kkiai_pipeline.sandbox import SandboxConfig, serve_in_thread
from kkiai_pipeline.settings import ApiSettings, Settings

from .integration import SCRIPTS, TOKEN

SHIPPED = Path(__file__).resolve().parent.parent / "pipelines"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with serve_in_thread(SandboxConfig(queue_seconds=0, predict_seconds=0.01)) as running:
        yield running


def shipped(name: str) -> Pipeline:
    source = SHIPPED / f"{name}.yaml"
    return parse_pipeline(read_pipeline_file(source), source=source)


def settings_for(tmp_path: Path, base_url: str = "http://127.0.0.1:9/v1", **changes: Any) -> Settings:
    settings = Settings(
        api=ApiSettings("kkiai", base_url, "t", ClientOptions(poll_interval=0.01, wait_seconds=5)),
        execution=ExecutionOptions(max_concurrency=4),
        progress=False,
        run_dir=tmp_path / "run",
        cache_dir=tmp_path / "cache",
    )
    return dataclasses.replace(settings, **changes)


def counted(pipeline: Pipeline, settings: Settings) -> Any:
    ledger = Ledger(settings.cache_dir) if settings.cache_dir and settings.cache_dir.exists() else None
    try:
        return count(make_plan(pipeline, settings), settings, ledger=ledger)
    finally:
        if ledger is not None:
            ledger.close()


def test_a_run_is_counted_exactly(tmp_path: Path) -> None:
    budget = counted(shipped("product_shots"), settings_for(tmp_path))
    assert (budget.to_create, budget.to_reuse, budget.upper_bound, budget.unknown) == (3, 0, False, ())
    assert budget.summary() == "would create 3 predictions, 0 reused"
    assert budget.by_model() == {
        step.model.ref: 1 for step in make_plan(shipped("product_shots"), settings_for(tmp_path)).steps
    }


def test_a_foreach_over_earlier_outputs_is_an_upper_bound_from_num_outputs(tmp_path: Path) -> None:
    budget = counted(shipped("cutout_variants"), settings_for(tmp_path))
    # 2 subjects, then num_outputs: 3 images of each cut out: at most 6
    assert [(s.step, s.created, s.upper_bound) for s in budget.steps] == [
        ("shots", 2, False),
        ("cutouts", 6, True),
    ]
    assert budget.summary().startswith("would create up to 8 predictions, 0 reused (")


def test_a_list_of_unknown_length_makes_the_count_a_lower_bound(tmp_path: Path) -> None:
    frames = parse_pipeline(
        {
            "name": "frames",
            "steps": {
                "morph": {
                    "model": "andreasjansson/stable-diffusion-animation",
                    "input": {"prompt_start": "a bud", "prompt_end": "a blossom"},
                },
                "cut": {
                    "model": "cjwbw/rembg",
                    "foreach": "{{ steps.morph.output }}",
                    "input": {"image": "{{ item }}"},
                },
            },
        }
    )
    budget = counted(frames, settings_for(tmp_path))
    assert budget.unknown == ("cut",)
    assert budget.summary().startswith("would create at least 2 predictions, 0 reused (cut fans out")


def test_jobs_counted_together_share_a_prediction_once(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, seed=5)
    one = shipped("product_shots")
    other = dataclasses.replace(
        one,
        steps={
            **one.steps,
            "cleanup": dataclasses.replace(
                one.steps["cleanup"], input={**one.steps["cleanup"].input, "objects_to_remove": "cat"}
            ),
        },
    )
    budgets = [counted(p, settings) for p in (one, one, other)]
    total = combine(budgets)
    # the same seed: generate is one prediction; cleanup and cutout differ for the third job only
    assert (total.to_create, total.jobs) == (5, 3)
    assert sum(b.to_create for b in budgets) == 9


def test_what_the_cache_holds_is_reused_and_not_counted(tmp_path: Path, sandbox: Any) -> None:
    settings = settings_for(tmp_path, base_url=sandbox.base_url, seed=3)
    pipeline = shipped("product_shots")
    assert run_pipeline(pipeline, settings).status == "succeeded"
    again = counted(pipeline, dataclasses.replace(settings, run_dir=tmp_path / "again"))
    assert (again.to_create, again.to_reuse) == (0, 3)
    assert all(s.verdict.startswith("hit: prediction ") for s in again.steps)
    changed = dataclasses.replace(
        pipeline,
        steps={
            **pipeline.steps,
            "cleanup": dataclasses.replace(
                pipeline.steps["cleanup"],
                input={**pipeline.steps["cleanup"].input, "objects_to_remove": "cat"},
            ),
        },
    )
    budget = counted(changed, dataclasses.replace(settings, run_dir=tmp_path / "changed"))
    assert (budget.to_create, budget.to_reuse) == (2, 1)  # generate reused; cleanup and cutout run
    assert budget.steps[2].verdict == "miss: it reads cleanup, which will run first"


def test_jobs_over_max_predictions_are_refused_before_any_request(tmp_path: Path, sandbox: Any) -> None:
    before = sandbox.stats()["requests"]
    jobs = [
        prepare(
            shipped("product_shots"),
            settings_for(
                tmp_path,
                base_url=sandbox.base_url,
                seed=seed,
                max_predictions=5,
                run_dir=tmp_path / str(seed),
            ),
        )
        for seed in (1, 2)
    ]
    with pytest.raises(BudgetExceeded) as refused:
        Orchestrator().run(jobs)
    assert str(refused.value) == (
        "this sweep of 2 jobs would create 6 predictions, 0 reused, more than max_predictions=5. "
        "Nothing was sent. To allow it, add max_predictions=6 (or more) to the command"
    )
    assert refused.value.exit_code == 2
    assert sandbox.stats()["requests"] == before  # the server saw nothing
    assert not any((tmp_path / str(seed) / "run.json").exists() for seed in (1, 2))


def test_a_big_sweep_is_refused_by_kkiai_run_and_a_dry_run_sweep_prints_its_total(
    tmp_path: Path, sandbox: Any
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KKIAI_", "HYDRA_"))}
    environ["KKIAI_API_TOKEN"] = TOKEN
    common = [
        "pipeline=product_shots",
        f"api.base_url={sandbox.base_url}",
        "progress=false",
        f"cache_dir={tmp_path / 'cache'}",
    ]

    def sweep(*args: str, name: str) -> subprocess.CompletedProcess[str]:
        command = [str(SCRIPTS / "kkiai-run"), "-m", *common, *args, f"hydra.sweep.dir={tmp_path / name}"]
        return subprocess.run(command, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)

    before = sandbox.stats()["requests"]
    refused = sweep("seed=range(0,4)", "max_predictions=10", name="big")
    assert refused.returncode == 2, refused.stderr
    assert (
        "this sweep of 4 jobs would create 12 predictions, 0 reused, more than max_predictions=10. "
        "Nothing was sent. To allow it, add max_predictions=12 (or more) to the command"
    ) in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sandbox.stats()["requests"] == before

    planned = sweep("seed=4,4", "dry_run=true", "max_predictions=2", name="dry")
    assert planned.returncode == 0, planned.stderr  # a dry run is never refused: it says so
    assert planned.stdout.count("3 steps: would create 3 predictions, 0 reused.") == 2
    assert planned.stdout.count("Over the budget: this run would create 3 predictions") == 2
    assert "Sweep of 2 jobs: would create 3 predictions, 0 reused." in planned.stdout  # all shared
    assert (
        "Over the budget: this sweep of 2 jobs would create 3 predictions, 0 reused, more than "
        "max_predictions=2. Nothing was sent. To allow it, add max_predictions=3 (or more) to the command."
    ) in planned.stdout
    assert sandbox.stats()["requests"] == before

"""Hydra multiruns: every job runs (concurrently), the sweep root gets sweep.json and summary.csv."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from kkiai_pipeline.api.prediction import parse_timestamp

from .integration import SCRIPTS, TOKEN
from .test_reliability import write

PAIR = """
name: pair
params: {subject: a mug}
steps:
  shot:
    model: stability-ai/stable-diffusion
    input: {prompt: "{{ params.subject }}", width: 128, height: 128, guidance_scale: 7.5}
  cut:
    model: cjwbw/rembg
    input: {image: "{{ steps.shot.output[0] }}"}
"""


def multirun(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KKIAI_")}
    environ["KKIAI_API_TOKEN"] = TOKEN
    sweep_dir = tmp_path / "sweep"
    command = [
        str(SCRIPTS / "kkiai-run"),
        "-m",
        *args,
        "api=sandbox",
        "api.sandbox.queue_seconds=0.05",
        "api.sandbox.predict_seconds=0.3",
        "progress=false",
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300)
    return done, sweep_dir


def test_a_sweep_runs_the_product_of_the_values_concurrently(tmp_path: Path) -> None:
    write(tmp_path, "pair", PAIR)
    done, sweep_dir = multirun(
        tmp_path,
        "pipeline=pair",
        "pipeline.params.subject=a mug,a vase",
        "pipeline.steps.shot.input.guidance_scale=5,9",
    )
    assert done.returncode == 0, done.stderr
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert sweep["status"] == "succeeded"
    jobs = sweep["jobs"]
    assert [j["overrides"][1:3] for j in jobs] == [  # as Hydra writes them, spaces escaped
        ["pipeline.params.subject=a\\ mug", "pipeline.steps.shot.input.guidance_scale=5"],
        ["pipeline.params.subject=a\\ mug", "pipeline.steps.shot.input.guidance_scale=9"],
        ["pipeline.params.subject=a\\ vase", "pipeline.steps.shot.input.guidance_scale=5"],
        ["pipeline.params.subject=a\\ vase", "pipeline.steps.shot.input.guidance_scale=9"],
    ]
    for job in jobs:
        manifest = json.loads((sweep_dir / job["run_dir"] / "run.json").read_text())
        assert manifest["status"] == "succeeded"
        assert all((sweep_dir / path).is_file() for path in job["outputs"])
        assert len(job["outputs"]) == 2
    sent = [
        json.loads((sweep_dir / j["run_dir"] / "run.json").read_text())["steps"]["shot"]["input"]
        for j in jobs
    ]
    assert [(s["prompt"], s["guidance_scale"]) for s in sent] == [
        ("a mug", 5),
        ("a mug", 9),
        ("a vase", 5),
        ("a vase", 9),
    ]
    # the jobs ran at the same time: every job started before any job finished
    starts = [parse_timestamp(j["started_at"]) for j in jobs]
    ends = [parse_timestamp(j["finished_at"]) for j in jobs]
    assert max(s for s in starts if s) < min(e for e in ends if e)
    rows = list(csv.DictReader((sweep_dir / "summary.csv").read_text().splitlines()))
    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "total"]
    assert {r["status"] for r in rows[:-1]} == {"succeeded"}
    assert [r["created"] for r in rows] == ["2", "2", "2", "2", "8"]  # nothing shared: every job paid
    assert "log" not in done.stdout
    for job in jobs:  # each job's log went to its own run.log
        log = (sweep_dir / job["run_dir"] / "run.log").read_text()
        manifest = json.loads((sweep_dir / job["run_dir"] / "run.json").read_text())
        assert f"created prediction {manifest['steps']['cut']['prediction_id']}" in log
        others = [j for j in jobs if j is not job]
        for other in others:
            theirs = json.loads((sweep_dir / other["run_dir"] / "run.json").read_text())
            assert theirs["steps"]["cut"]["prediction_id"] not in log


def test_a_failed_job_does_not_stop_the_others(tmp_path: Path) -> None:
    write(tmp_path, "pair", PAIR)
    done, sweep_dir = multirun(
        tmp_path, "pipeline=pair", "pipeline.params.subject=a mug,'a vase [sandbox:fail]',a cup"
    )
    assert done.returncode == 1, done.stderr
    jobs: list[dict[str, Any]] = json.loads((sweep_dir / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["succeeded", "failed", "succeeded"]
    assert "E1000" in jobs[1]["error"]


def test_a_job_with_bad_input_is_reported_and_the_rest_run(tmp_path: Path) -> None:
    write(tmp_path, "pair", PAIR)
    done, sweep_dir = multirun(tmp_path, "pipeline=pair", "pipeline.steps.shot.input.width=128,500")
    assert done.returncode == 2, done.stderr
    jobs = json.loads((sweep_dir / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["succeeded", "error"]
    assert "width must be one of" in jobs[1]["error"]


def test_a_dry_run_sweep_is_planned_and_exits_0(tmp_path: Path) -> None:
    write(tmp_path, "pair", PAIR)
    done, sweep_dir = multirun(
        tmp_path, "pipeline=pair", "dry_run=true", "pipeline.params.subject=a mug,a cup"
    )
    assert done.returncode == 0, done.stderr
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert (sweep["status"], sweep["exit_code"]) == ("planned", 0)
    assert [(j["status"], j["error"]) for j in sweep["jobs"]] == [("planned", None), ("planned", None)]
    for job in ("0", "1"):
        assert (sweep_dir / job / "plan.json").is_file()
        assert not (sweep_dir / job / "run.json").exists()


def test_a_sweeper_that_needs_job_results_is_refused_before_any_job(tmp_path: Path) -> None:
    write(tmp_path, "pair", PAIR)
    optuna = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    done, sweep_dir = multirun(tmp_path, "pipeline=pair", f"hydra.sweeper._target_={optuna}")
    assert done.returncode == 2
    assert done.stderr == (
        f"kkiai-run: error: the sweeper {optuna} picks its jobs from the values they return, and a kkiai-run "
        "job returns no objective (its jobs run together after the sweep is planned). Use Hydra's basic "
        "sweeper (the default): list or range the values to try, e.g. pipeline.params.x=1,2,3. Nothing was run\n"
    )
    assert not sweep_dir.exists()
    assert not (tmp_path / "cache").exists()

"""sweep.json and summary.csv: each job's predictions, predict time and cost, the sweep's totals, and a
column per swept key; made from job directories on disk (the format the runner writes)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

import kkiai_pipeline
from kkiai_pipeline.config_schema import check_config, grid_steps
from kkiai_pipeline.errors import ConfigError
from kkiai_pipeline.multirun import SUMMARY_FILE, SWEEP_FILE, collect_jobs, sweep_table, write_sweep_files
from kkiai_pipeline.pricing import Price
from kkiai_pipeline.rundir import read_record, write_json_atomic

from .report.factories import make_sweep


def sweep(tmp_path: Path) -> Path:
    """Three jobs over subject x seed: job 0 paid for both steps, job 1 reused generate, job 2 never ran."""
    root = make_sweep(
        tmp_path / "sweep",
        ["pipeline.params.subject=a\\ mug,a\\ vase", "seed=1,2"],
        [
            {"pipeline.params.subject": "a\\ mug", "seed": "1"},
            {"pipeline.params.subject": "a\\ vase", "seed": "1"},
            {"pipeline.params.subject": "a\\ vase", "seed": "2"},
        ],
        no_run=[2],
    )
    for job, reused in (("0", ()), ("1", ("generate",))):
        record = read_record(root / job).record
        assert record is not None
        record.prices = {"stability-ai/sdxl": Price(per_prediction=0.5, per_second=0.1)}
        for sid in reused:
            record.steps[sid].obtained = "reused"
        record.save()
    return root


def test_each_job_and_the_sweep_carry_predictions_predict_time_and_cost(tmp_path: Path) -> None:
    root = sweep(tmp_path)
    jobs = collect_jobs(root)
    assert write_sweep_files(root, jobs, interrupted=False) == 1  # job 2 did not run
    written = json.loads((root / SWEEP_FILE).read_text(encoding="utf-8"))
    figures = [(j["created"], j["reused"], j["predict_time"], j["cost"]) for j in written["jobs"]]
    assert figures == [(2, 0, 5.0, 1.5), (1, 1, 2.5, 0.75), (0, 0, 0.0, None)]
    assert written["totals"] == {"created": 3, "reused": 1, "predict_time": 7.5, "cost": 2.25}
    assert "paid for 3 predictions (7.5 s predict time), reused 1, estimated cost 2.2500" in sweep_table(
        root, jobs
    )


def test_summary_csv_opens_as_a_table_of_swept_values_and_metrics(tmp_path: Path) -> None:
    root = sweep(tmp_path)
    write_sweep_files(root, collect_jobs(root), interrupted=False)
    with (root / SUMMARY_FILE).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames is not None
    assert reader.fieldnames[:8] == [
        "job",
        "pipeline.params.subject",
        "seed",
        "status",
        "created",
        "reused",
        "predict_time",
        "cost",
    ]
    assert reader.fieldnames[8] == "seconds"
    table = [(r["job"], r["pipeline.params.subject"], r["seed"], r["status"], r["cost"]) for r in rows]
    assert table == [
        ("0", "a mug", "1", "succeeded", "1.5"),
        ("1", "a vase", "1", "succeeded", "0.75"),
        ("2", "a vase", "2", "not run", ""),
        ("total", "", "", "", "2.25"),
    ]
    assert [r["created"] for r in rows] == ["2", "1", "0", "3"]
    assert rows[0]["seconds"] == "2.75" and rows[0]["overrides"].startswith("pipeline=demo ")


def test_a_dry_run_sweep_carries_each_job_s_estimate(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep", ["seed=1,2"], [{"seed": "1"}, {"seed": "2"}], no_run=[0, 1])
    write_json_atomic(root / "0" / "plan.json", {"predictions": 2, "estimated_cost": 0.25})
    write_json_atomic(root / "1" / "plan.json", {"predictions": 2, "estimated_cost": 0.5})
    jobs = collect_jobs(root)
    assert write_sweep_files(root, jobs, interrupted=False) == 0
    written = json.loads((root / SWEEP_FILE).read_text(encoding="utf-8"))
    assert [j["estimated_cost"] for j in written["jobs"]] == [0.25, 0.5]
    assert written["totals"]["estimated_cost"] == 0.75
    rows = list(csv.DictReader((root / SUMMARY_FILE).read_text(encoding="utf-8").splitlines()))
    assert [(r["seed"], r["status"], r["estimated_cost"]) for r in rows] == [
        ("1", "planned", "0.25"),
        ("2", "planned", "0.5"),
        ("", "", "0.75"),
    ]
    write_json_atomic(root / "1" / "plan.json", {"predictions": 2, "estimated_cost": None})  # unpriced
    write_sweep_files(root, collect_jobs(root), interrupted=False)
    assert json.loads((root / SWEEP_FILE).read_text(encoding="utf-8"))["totals"]["estimated_cost"] is None


def test_a_real_sweep_pays_a_shared_step_once_and_its_grid_shows_two_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    prices = "prices={stability-ai/sdxl:{per_prediction:1},sujaykhandekar/object-removal:{per_prediction:0.1},cjwbw/rembg:{per_second:0.5}}"
    result = kkiai_pipeline.sweep(
        "product_shots",
        overrides=[
            "api=sandbox",
            f"cache_dir={tmp_path / 'cache'}",
            "pipeline.steps.cleanup.input.objects_to_remove=person,dog",
            "grid_steps=[generate,cutout]",
            prices,
        ],
    )
    assert result.ok
    written = json.loads((result.sweep_dir / SWEEP_FILE).read_text(encoding="utf-8"))
    totals = written["totals"]
    assert (totals["created"], totals["reused"]) == (5, 1)  # generate is paid by one job, shared by the other
    records = [read_record(job.result.run_dir).record for job in result.jobs]
    cutout_time = sum(r.steps["cutout"].metrics["predict_time"] for r in records if r is not None)
    assert cutout_time > 0
    assert totals["cost"] == pytest.approx(1 + 2 * 0.1 + 0.5 * cutout_time, abs=1e-5)
    assert sum(job["cost"] for job in written["jobs"]) == pytest.approx(totals["cost"])
    page = (result.sweep_dir / "grid.html").read_text(encoding="utf-8")
    assert page.count('<div class="cellrow">') == 2 and "steps: generate, cutout" in page
    assert re.findall(r'<img class="thumb" src="(\d)/steps/(\w+)/', page) == [
        ("0", "generate"),
        ("0", "cutout"),
        ("1", "generate"),
        ("1", "cutout"),
    ]
    assert page.count('class="lightbox"') == 4


def test_grid_step_is_short_for_a_grid_steps_of_one() -> None:
    assert grid_steps({}) is None and grid_steps({"grid_step": None, "grid_steps": None}) is None
    assert grid_steps({"grid_step": "cutout"}) == ("cutout",)
    assert grid_steps({"grid_steps": ["generate", "cutout"]}) == ("generate", "cutout")
    assert grid_steps({"grid_step": "cutout", "grid_steps": ["cutout"]}) == ("cutout",)
    with pytest.raises(ConfigError, match=r"^grid_step=cutout and grid_steps=\[generate\] are both set"):
        grid_steps({"grid_step": "cutout", "grid_steps": ["generate"]})
    with pytest.raises(ConfigError, match=r"^grid_steps must be a list of strings or null, not 'cutout'$"):
        check_config({"grid_steps": "cutout"})

"""Finding and reading runs and sweeps for the listing: real runs, a sweep, and damaged directories."""

from __future__ import annotations

import json
from pathlib import Path

from kkiai_pipeline.runs_index import UNREADABLE, Entry, entries, find, read_sweep

from ..report.factories import make_sweep
from .conftest import Home


def by_path(home: Home) -> dict[Path, Entry]:
    listed, incomplete = entries([home.outputs, home.root / "multirun"])
    assert not incomplete
    return {e.path: e for e in listed}


def test_every_run_and_sweep_is_one_entry_with_its_counts(home: Home) -> None:
    listed = by_path(home)
    assert set(listed) == {
        home.a,
        home.b,
        home.c,
        home.failed,
        home.sweep,
        home.garbage,
        home.v1,
        home.crashed,
    }
    a, c, b = listed[home.a], listed[home.c], listed[home.b]
    assert (a.kind, a.pipeline, a.status, a.created, a.reused) == ("run", "product_shots", "succeeded", 3, 0)
    assert (c.status, c.created, c.reused) == ("succeeded", 0, 3)  # the same run again: nothing paid
    assert (b.created, b.reused, b.cost, a.cost) == (3, 0, 0.035, None)
    assert a.predict_time is not None and a.predict_time > 0 and c.predict_time == 0  # reused: not paid
    failed = listed[home.failed]
    assert (failed.status, failed.error) == (
        "failed",
        "generate: E1000 Prediction failed (sandbox: input contained the fail marker)",
    )
    assert a.error is None
    assert a.page == home.a / "report.html" and a.problem is None
    assert a.outputs == (home.a / "steps/cutout/output_0.png",)  # the final step's output only
    sweep = listed[home.sweep]
    assert (sweep.kind, sweep.status, sweep.jobs, sweep.created, sweep.reused) == (
        "sweep",
        "succeeded",
        2,
        6,
        0,
    )
    assert sweep.pipeline == "product_shots" and sweep.page == home.sweep / "grid.html"
    assert sweep.cost is None  # not priced
    assert sweep.outputs == tuple(home.sweep / f"{n}/steps/cutout/output_0.png" for n in (0, 1))


def test_damaged_runs_are_listed_with_the_reason(home: Home) -> None:
    listed = by_path(home)
    garbage = listed[home.garbage]
    assert (garbage.status, garbage.created, garbage.pipeline) == (UNREADABLE, None, "")
    assert garbage.problem is not None and garbage.problem.startswith("run.json could not be read: ")
    v1 = listed[home.v1]  # schema v1 said "cache": "hit" for a reused result
    assert (v1.pipeline, v1.status, v1.created, v1.reused) == ("old_one", "succeeded", 0, 1)
    crashed = listed[home.crashed]  # the journal's change (cutout failed) is replayed over run.json
    assert (crashed.status, crashed.created, crashed.reused, crashed.problem) == ("running", 3, 0, None)
    assert crashed.outputs == ()  # its final step failed: no thumbnail


def test_entries_are_oldest_first_and_serialise(home: Home) -> None:
    listed, _ = entries([home.outputs, home.root / "multirun"])
    assert listed[0].path == home.garbage  # never started: no time, first
    assert listed[1].path == home.v1  # 2025
    stamps = [e.started_at for e in listed[2:]]
    assert stamps == sorted(stamps)
    row = json.loads(json.dumps(listed[-1].to_json()))
    assert row["kind"] == "sweep" and row["jobs"] == 2 and row["cost"] is None


def test_the_search_is_bounded_and_does_not_enter_runs(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*"abcdefg")
    deep.mkdir(parents=True)
    (deep / "run.json").write_text("{}")
    (tmp_path / "a" / "run.json").write_text("{}")  # a/ is a run: what is under it is its own
    (tmp_path / "x" / "y").mkdir(parents=True)
    (tmp_path / "x" / "y" / "run.json").write_text("{}")
    (tmp_path / "x" / ".hidden").mkdir()
    (tmp_path / "x" / ".hidden" / "run.json").write_text("{}")
    found = find([tmp_path])
    assert found.runs == [tmp_path / "a", tmp_path / "x" / "y"] and not found.incomplete
    (tmp_path / "a" / "run.json").unlink()
    assert find([tmp_path], max_depth=6).runs == [tmp_path / "x" / "y"]  # a/b/c/d/e/f/g is 7 deep
    assert find([tmp_path], max_depth=7).runs == [deep, tmp_path / "x" / "y"]
    stopped = find([tmp_path], max_dirs=3)
    assert stopped.incomplete and stopped.runs == []


def test_a_sweep_with_a_damaged_job_is_listed_as_unreadable(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "s", ["seed=1,2"], [{"seed": "1"}, {"seed": "2"}])
    good = read_sweep(sweep)
    assert (good.status, good.jobs, good.created, good.problem) == (
        "unfinished",
        2,
        4,
        "no sweep.json (the sweep has not ended)",
    )
    (sweep / "1" / ".hydra" / "overrides.yaml").write_text("[unclosed", encoding="utf-8")
    bad = read_sweep(sweep)
    assert (bad.kind, bad.status, bad.created) == ("sweep", UNREADABLE, None)
    assert bad.problem is not None and bad.problem.startswith(
        "a job's .hydra/overrides.yaml could not be read: "
    )

"""Comparing foreach steps item by item, from run.json files written by the runner's own record."""

from __future__ import annotations

from pathlib import Path

from kkiai_pipeline.rundir import RunRecord, StepRecord
from kkiai_pipeline.runs_compare import Difference, compare, render_text


def fan_run(run_dir: Path, prompts: list[str], *, keys: list[str]) -> Path:
    items = [
        StepRecord("m/x", "v1", status="succeeded", input={"prompt": p}, key=k, index=i, obtained="created")
        for i, (p, k) in enumerate(zip(prompts, keys, strict=True))
    ]
    fan = StepRecord("m/x", "v1", status="succeeded", items=items)
    RunRecord(run_dir=run_dir, pipeline="fan", api={}, steps={"fan": fan}, status="succeeded").save()
    return run_dir


def test_foreach_items_are_compared_one_by_one_and_equal_keys_mean_equal_inputs(tmp_path: Path) -> None:
    a = fan_run(tmp_path / "a", ["a mug", "a vase", "a cup"], keys=["k1", "k2", "k3"])
    b = fan_run(tmp_path / "b", ["a mug", "a jug"], keys=["k1", "k4"])
    found = compare(a, b)
    assert found.steps["fan"] == [
        Difference("items", "3", "2"),
        Difference("items[1].input.prompt", "a vase", "a jug"),
        Difference("items[2].input.prompt", "a cup", "(absent)"),
    ]
    text = render_text(found)
    assert "step fan:\n  items\n    A  3\n    B  2\n" in text
    assert "note: A has no readable .hydra/config.yaml: its settings are not compared" in text
    # The same key on both sides: the input shown differently (a URL, a shortened data: URI) is the same.
    c = fan_run(
        tmp_path / "c", ["a mug", "data:image/png;base64,… (36 chars)", "a cup"], keys=["k1", "k2", "k3"]
    )
    assert compare(a, c).steps["fan"] == []

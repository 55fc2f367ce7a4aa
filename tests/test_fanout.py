"""foreach: one prediction per item of a list (an earlier step's outputs, or a param)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .integration import kkiai_run
from .test_reliability import artifacts_intact, write


def test_fan_out_over_params_and_over_outputs(tmp_path: Path, sandbox: Any) -> None:
    result = kkiai_run(
        "pipeline=cutout_variants",
        f"api.base_url={sandbox.base_url}",
        "pipeline.steps.shots.input.width=256",
        "pipeline.steps.shots.input.height=256",
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    steps = result.manifest["steps"]
    shots, cutouts = steps["shots"], steps["cutouts"]
    assert [(i["index"], i["item"], i["status"]) for i in shots["items"]] == [
        (0, "a ceramic mug", "succeeded"),
        (1, "a glass vase", "succeeded"),
    ]
    assert [i["input"]["prompt"] for i in shots["items"]] == [
        "studio photo of a ceramic mug, soft light",
        "studio photo of a glass vase, soft light",
    ]
    assert len(cutouts["items"]) == 6  # 2 subjects x 3 outputs
    assert len({i["prediction_id"] for i in cutouts["items"]}) == 6
    shot_urls = [url for item in shots["items"] for url in item["output"]]
    assert [i["input"]["image"] for i in cutouts["items"]] == shot_urls
    assert [o["path"] for o in cutouts["outputs"]] == [f"steps/cutouts/{i}/output_0.png" for i in range(6)]
    assert artifacts_intact(result.run_dir) == 12
    assert sandbox.stats()["requests"]["create"] == 8


def test_an_item_that_fails_fails_the_step_but_not_its_siblings(tmp_path: Path, sandbox: Any) -> None:
    write(
        tmp_path,
        "items",
        """
        name: items
        params: {prompts: ["fine", "broken [sandbox:fail]", "also fine"]}
        steps:
          each:
            model: stability-ai/stable-diffusion
            foreach: "{{ params.prompts }}"
            input: {prompt: "{{ item }} #{{ index }}", width: 128, height: 128}
          after:
            model: cjwbw/rembg
            input: {image: "{{ steps.each.output[0][0] }}"}
        """,
    )
    result = kkiai_run("pipeline=items", f"api.base_url={sandbox.base_url}", cwd=tmp_path)
    assert result.code == 1
    each = result.manifest["steps"]["each"]
    assert [i["status"] for i in each["items"]] == ["succeeded", "failed", "succeeded"]
    assert each["items"][2]["input"]["prompt"] == "also fine #2"
    assert each["status"] == "failed"
    assert each["error"].startswith("1 of 3 items did not succeed: [1] E1000")
    assert result.manifest["steps"]["after"]["status"] == "skipped"


def test_item_outside_foreach_is_an_unknown_name(tmp_path: Path) -> None:
    write(
        tmp_path,
        "noitems",
        """
        name: noitems
        steps:
          one: {model: stability-ai/stable-diffusion, input: {prompt: "{{ item }}"}}
        """,
    )
    result = kkiai_run("pipeline=noitems", "api=sandbox", cwd=tmp_path)
    assert result.code == 2
    assert "unknown name 'item' in '{{ item }}' (templates can use: steps, params)" in result.stderr

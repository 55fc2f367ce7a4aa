"""One pipeline, two backends: a step on the hosted API (the sandbox here) feeding a step on a real
Cog server (coglet), run by the real kkiai-run command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from ..integration import kkiai_run
from ..test_reliability import artifacts_intact, write

MIXED = """
name: mixed
steps:
  shot:
    model: stability-ai/stable-diffusion
    input: {prompt: "a red cube", width: 128, height: 128}
  cutout:
    model: cjwbw/rembg
    backend: cog
    input: {image: "{{ steps.shot.output[0] }}"}
"""


def test_a_pipeline_mixing_the_api_and_a_cog_server(tmp_path: Path, sandbox: Any, cog: Any) -> None:
    write(tmp_path, "mixed", MIXED)
    before = len(cog.rembg.runs("rembg"))
    servers = f"cog.servers={{cjwbw/rembg:{cog.rembg.url}}}"
    result = kkiai_run("pipeline=mixed", f"api.base_url={sandbox.base_url}", servers, cwd=tmp_path)
    assert result.code == 0, result.stderr
    steps = result.manifest["steps"]
    assert [steps[s]["status"] for s in ("shot", "cutout")] == ["succeeded", "succeeded"]
    assert steps["cutout"]["input"]["image"] == steps["shot"]["outputs"][0]["url"]
    assert artifacts_intact(result.run_dir) == 2
    with Image.open(result.run_dir / steps["cutout"]["outputs"][0]["path"]) as image:
        assert image.mode == "RGBA"
        assert image.getpixel((0, 0))[3] == 0
    assert len(cog.rembg.runs("rembg")) == before + 2  # one start and one end event: it ran once
    assert sandbox.stats()["requests"]["create"] == 1  # only the API step went to the API
    assert result.manifest["traffic"]["cog"]["creates"] == 1


def test_a_cog_step_without_a_server_is_refused_before_anything_runs(tmp_path: Path, sandbox: Any) -> None:
    write(tmp_path, "mixed", MIXED)
    before = sandbox.stats()["requests"]["create"]
    result = kkiai_run("pipeline=mixed", f"api.base_url={sandbox.base_url}", cwd=tmp_path)
    assert result.code == 2
    assert "step 'cutout', field 'backend': runs on Cog but no server is set for cjwbw/rembg" in result.stderr
    assert sandbox.stats()["requests"]["create"] == before

"""The reports in a real headless Chromium: every image loads, nothing is logged as an error.

A real sweep is run with ``kkiai-run -m`` against the sandbox on loopback (one value of the swept
subject fails); report.html of a good and of a failed job, and grid.html, are then opened from
``file://``. Screenshots are saved in the test's temporary folder (``screenshots/``) to be looked at.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from kkiai_pipeline.report import write_run_report, write_sweep_grid

from ..integration import kkiai_run
from .browser import PageCheck, check_page, require_chromium
from .factories import StepSpec, make_run, make_sweep

PIPELINE = """
name: report_demo
params:
  subject: a mug
steps:
  generate:
    model: stability-ai/sdxl
    input:
      prompt: "studio photo of {{ params.subject }} <on> marble & 'soft' light, {{ params.subject }} in focus"
      width: 384
      height: 384
      guidance_scale: 7
  animate:
    model: andreasjansson/stable-diffusion-animation
    input: {prompt_start: a bud, prompt_end: a blossom, width: 256, height: 256, num_animation_frames: 4,
            num_interpolation_steps: 1, output_format: gif}
  cutout:
    model: cjwbw/rembg
    input: {image: "{{ steps.generate.output[0] }}"}
"""


@pytest.fixture(autouse=True)
def chromium() -> None:
    require_chromium()


def look(page_file: Path, tmp_path: Path, name: str) -> PageCheck:
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    seen = check_page(page_file, screenshot=shots / f"{name}.png", profile=tmp_path / f"profile-{name}")
    assert seen.broken == []
    assert seen.console_errors == []
    assert seen.outside_requests == []
    assert (shots / f"{name}.png").stat().st_size > 0
    return seen


def test_the_checker_notices_broken_images_and_console_errors(tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><img src="missing.png"><script>console.error("boom")</script>')
    seen = check_page(page, screenshot=tmp_path / "bad.png", profile=tmp_path / "profile")
    assert seen.broken == ["missing.png"]
    assert "boom" in seen.console_errors
    assert seen.outside_requests == []


def test_a_real_sweep_its_run_reports_and_its_grid(tmp_path: Path, sandbox: Any) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "report_demo.yaml").write_text(textwrap.dedent(PIPELINE))
    root = tmp_path / "sweep"
    result = kkiai_run(
        "-m",
        "pipeline=report_demo",
        f"api.base_url={sandbox.base_url}",
        'pipeline.params.subject=a mug,"a vase [sandbox:fail]"',
        "pipeline.steps.generate.input.guidance_scale=5,9",
        f"hydra.sweep.dir={root}",
        cwd=tmp_path,
    )
    assert (root / "3" / "run.json").is_file(), result.stderr
    for job in range(4):
        write_run_report(root / str(job))
    write_sweep_grid(root)
    good = look(root / "0" / "report.html", tmp_path, "report-succeeded")
    assert (good.images, good.title) == (3, "report_demo: succeeded")
    bad = look(root / "2" / "report.html", tmp_path, "report-failed")
    assert (bad.images, bad.title) == (1, "report_demo: failed")  # only the independent animation
    grid = look(root / "grid.html", tmp_path, "grid-2-keys")
    assert grid.images == 2


def test_a_run_with_every_kind_of_output_and_trouble(tmp_path: Path) -> None:
    long_prompt = "<b>bold?</b> " + " ".join(["a very detailed, carefully lit studio photograph"] * 12)
    run_dir = make_run(
        tmp_path / "run",
        {
            "generate": StepSpec(
                input={"prompt": long_prompt, "image": "data:image/png;base64," + "A" * 900},
                outputs=("image/png", "image/jpeg"),
            ),
            "animate": StepSpec(depends_on=["generate"], outputs=("image/gif", "image/webp"), animated=True),
            "refine": StepSpec(depends_on=["generate"], status="failed", error="E1000 <out of memory>"),
            "cutout": StepSpec(
                depends_on=["refine"], status="skipped", error="skipped: dependency 'refine' did not succeed"
            ),
            "upscale": StepSpec(depends_on=["animate", "generate"]),
        },
        status="failed",
    )
    (run_dir / "steps/upscale/output_0.png").unlink()
    seen = look(write_run_report(run_dir), tmp_path, "report-mixed")
    assert seen.images == 4


def test_a_three_key_grid_with_failures(tmp_path: Path) -> None:
    keys = {
        "pipeline.params.subject": ["a\\ mug", "a\\ vase"],
        "seed": ["1", "2"],
        "pipeline.params.surface": ["marble", "slate"],
    }
    jobs = [
        {"pipeline.params.subject": s, "seed": d, "pipeline.params.surface": f}
        for s in keys["pipeline.params.subject"]
        for d in keys["seed"]
        for f in keys["pipeline.params.surface"]
    ]
    root = make_sweep(
        tmp_path / "sweep",
        [f"{k}={','.join(v)}" for k, v in keys.items()],
        jobs,
        failing={3: "failed"},
        no_run=[6],
    )
    html_path, png_path = write_sweep_grid(root)
    seen = look(html_path, tmp_path, "grid-3-keys")
    assert seen.images == 6
    (tmp_path / "screenshots" / "grid-3-keys-picture.png").write_bytes(png_path.read_bytes())

"""``kkiai-run --rerun RUN_DIR``: a past run's saved configuration, again, into a new run directory."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from .integration import creates, kkiai_run

STUDY = """
name: study
params: {subject: a mug}
steps:
  shot:
    model: stability-ai/stable-diffusion
    input: {prompt: "{{ params.subject }} on marble", width: 128, height: 128}
  restyle:
    model: stability-ai/stable-diffusion-img2img
    input: {image: '{{ file("assets/photo.png") }}', prompt: "{{ params.subject }}, glossy"}
  cut:
    model: cjwbw/rembg
    input: {image: "{{ steps.shot.output[0] }}"}
"""
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"


def make_install(folder: Path) -> Path:
    """A pipeline folder as an install elsewhere would have it: the file and its local asset."""
    (folder / "assets").mkdir(parents=True)
    Image.new("RGB", (32, 32), (200, 40, 40)).save(folder / "assets" / "photo.png")
    (folder / "study.yaml").write_text(STUDY)
    return folder / "study.yaml"


@pytest.fixture
def original(tmp_path: Path, api: list[str]) -> Any:
    """A run of ``study`` made from another folder (found through KKIAI_PIPELINE_PATH) with overrides."""
    source = make_install(tmp_path / "install" / "pipelines")
    env = {"KKIAI_PIPELINE_PATH": str(source.parent)}
    run = kkiai_run(
        "pipeline=study", *api, "seed=7", "pipeline.params.subject=a vase",
        cwd=tmp_path, env=env, run_dir=tmp_path / "first",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    return run


def test_a_rerun_reuses_everything_from_a_new_folder_without_the_pipeline_file(
    tmp_path: Path, sandbox: Any, api: list[str], original: Any
) -> None:
    (tmp_path / "install" / "pipelines" / "study.yaml").unlink()  # the file is gone; its assets stay
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = creates(sandbox)

    cache = f"cache_dir={tmp_path / '.kkiai-cache'}"  # the original's (the helper's default is per cwd)
    again = kkiai_run(
        "--rerun", str(original.run_dir), *api, cache, cwd=elsewhere, run_dir=tmp_path / "again"
    )

    assert again.code == 0, again.stderr
    assert creates(sandbox) == before  # the ledger had every prediction: nothing paid twice
    first, second = original.manifest, again.manifest
    assert second["run_id"] != first["run_id"]
    assert (second["pipeline"], second["seed"], second["source"]) == ("study", 7, first["source"])
    for sid, step in first["steps"].items():
        assert second["steps"][sid]["obtained"] == "reused", sid
        assert (second["steps"][sid]["model"], second["steps"][sid]["version"]) == (
            step["model"],
            step["version"],
        )
        assert second["steps"][sid]["key"] == step["key"], sid  # the same (version, input) in the ledger
    for sid in ("shot", "restyle"):  # cut's input names shot's output, which this run took from the ledger
        assert second["steps"][sid]["input"] == first["steps"][sid]["input"], sid
    assert first["steps"]["shot"]["input"]["prompt"] == "a vase on marble"
    assert first["steps"]["restyle"]["input"]["image"].startswith("data:image/png;base64,")
    saved = yaml.safe_load((again.run_dir / ".hydra" / "config.yaml").read_text())
    assert (
        saved["pipeline"]["steps"]["shot"]["model"]
        == f"stability-ai/stable-diffusion:{first['steps']['shot']['version']}"
    )
    assert "resume=true" not in again.stderr


def test_a_rerun_without_the_cache_sends_the_same_requests(
    tmp_path: Path, sandbox: Any, api: list[str], original: Any
) -> None:
    before = creates(sandbox)
    again = kkiai_run(
        "--rerun", str(original.run_dir), "cache=false", *api, cwd=tmp_path, run_dir=tmp_path / "b"
    )
    assert again.code == 0, again.stderr
    assert creates(sandbox) == before + 3
    first, second = original.manifest["steps"], again.manifest["steps"]
    assert [second[sid]["obtained"] for sid in first] == ["created"] * 3
    for sid in ("shot", "restyle"):  # the roots: their bodies depend on nothing this run made anew
        assert second[sid]["input"] == first[sid]["input"], sid
    assert second["shot"]["input"]["seed"] == first["shot"]["input"]["seed"]  # from seed=7, as before


def test_overrides_apply_on_top_of_the_saved_configuration(
    tmp_path: Path, sandbox: Any, api: list[str], original: Any
) -> None:
    again = kkiai_run(
        "--rerun", str(original.run_dir), "pipeline.params.subject=a cup", *api,
        cwd=tmp_path, run_dir=tmp_path / "c",
    )  # fmt: skip
    assert again.code == 0, again.stderr
    steps = again.manifest["steps"]
    assert steps["shot"]["input"]["prompt"] == "a cup on marble"
    assert steps["shot"]["obtained"] == "created"
    assert again.manifest["seed"] == 7  # the rest stays as the run had it


def test_a_rerun_whose_local_file_is_gone_stops_clearly(
    tmp_path: Path, sandbox: Any, api: list[str], original: Any
) -> None:
    shutil.rmtree(tmp_path / "install")
    before = creates(sandbox)
    again = kkiai_run("--rerun", str(original.run_dir), *api, cwd=tmp_path, run_dir=tmp_path / "d")
    assert again.code == 2, again.stderr
    assert "assets/photo.png" in again.stderr
    assert creates(sandbox) == before


def test_rerun_of_a_folder_that_holds_no_run_is_a_usage_error(tmp_path: Path) -> None:
    result = kkiai_run("--rerun", str(tmp_path), "api=sandbox", cwd=tmp_path)
    assert result.code == 2
    assert result.stderr.strip() == (
        f"kkiai-run: error: {tmp_path} is not the directory of a kkiai-run run (no .hydra/config.yaml): "
        "--rerun takes a run directory such as outputs/<pipeline>/<timestamp>"
    )
    missing = kkiai_run("--rerun", cwd=tmp_path)
    assert missing.code == 2
    assert "--rerun needs a run directory" in missing.stderr


def test_a_failed_rerun_says_how_to_resume_it(
    tmp_path: Path, sandbox: Any, api: list[str], original: Any
) -> None:
    failing = "pipeline.params.subject='a vase [sandbox:fail]'"
    again = kkiai_run("--rerun", str(original.run_dir), failing, *api, cwd=tmp_path, run_dir=tmp_path / "e")
    assert again.code == 1, again.stderr
    assert f"rerun of {original.run_dir} (its saved config)" in (again.run_dir / "run.log").read_text()
    [hint] = [line for line in again.stderr.splitlines() if line.startswith("to resume this run: ")]
    command = shlex.split(hint.removeprefix("to resume this run: "))
    assert command[:3] == ["kkiai-run", "--rerun", str(original.run_dir)]
    assert command[-2:] == [f"hydra.run.dir={again.run_dir}", "resume=true"]
    assert failing in command
    resumed = kkiai_run(*command[1:], cwd=tmp_path, run_dir=again.run_dir)
    assert resumed.code == 1, (
        resumed.stderr
    )  # the same failure again, but resumed in place: not a usage error
    assert resumed.manifest["run_id"] == again.manifest["run_id"]


def test_a_rerun_can_be_swept_and_take_another_api_but_not_another_pipeline(
    tmp_path: Path, sandbox: Any, api: list[str], original: Any
) -> None:
    sweep_dir = tmp_path / "sweep"
    swept = kkiai_run(
        "-m", "--rerun", str(original.run_dir), "seed=1,2", f"hydra.sweep.dir={sweep_dir}", *api, cwd=tmp_path
    )
    assert swept.code == 0, swept.stderr
    seeds = [json.loads((sweep_dir / job / "run.json").read_text())["seed"] for job in ("0", "1")]
    assert seeds == [1, 2]

    emulator = kkiai_run(
        "--rerun", str(original.run_dir), "api=sandbox", cwd=tmp_path, run_dir=tmp_path / "f"
    )
    assert emulator.code == 0, emulator.stderr
    assert emulator.manifest["api"]["kind"] == "sandbox"  # the saved api settings went with the saved choice
    assert emulator.manifest["api"]["base_url"] != original.manifest["api"]["base_url"]

    other = kkiai_run("--rerun", str(original.run_dir), "pipeline=product_shots", cwd=tmp_path)
    assert other.code == 2
    assert other.stderr == (
        "kkiai-run: error: --rerun repeats the pipeline of the run; pipeline= cannot be changed\n"
    )

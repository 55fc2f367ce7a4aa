"""Tests for the ``kkiai-models`` command (kkiai_pipeline.models_cli)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.models_cli import main

SDXL_HASH = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, environ: dict[str, str] | None = None
) -> tuple[int, str, str]:
    code = main(list(argv), environ=environ)
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    lines = out.splitlines()
    assert (code, err) == (0, "")
    assert lines[0].split() == ["MODEL", "VERSION", "OUTPUT", "REQUIRED", "INPUTS"]
    assert [line.split()[0] for line in lines[1:]] == default_catalog().refs
    rows = {line.split(None, 3)[0]: line.split(None, 3)[1:] for line in lines[1:]}
    assert rows["stability-ai/sdxl"] == ["7762fd07", "list", "prompt"]
    assert rows["stability-ai/stable-diffusion-inpainting"] == ["95b72231", "list", "prompt, image, mask"]
    assert rows["cjwbw/rembg"] == ["fb8af171", "single", "image"]


@pytest.mark.parametrize("ref", ["stability-ai/sdxl", f"stability-ai/sdxl:{SDXL_HASH}", SDXL_HASH])
def test_one_model_by_any_reference(capsys: pytest.CaptureFixture[str], ref: str) -> None:
    code, out, err = run(capsys, ref)
    lines = out.splitlines()
    assert (code, err) == (0, "")
    assert lines[0] == f"stability-ai/sdxl:{SDXL_HASH}"
    assert lines[1] == "output: list; list of PNG image URIs"
    assert lines[4].split() == ["INPUT", "TYPE", "REQUIRED", "FILE", "DEFAULT", "ALLOWED"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[5:]}
    assert list(rows) == list(default_catalog().resolve("stability-ai/sdxl").inputs)
    assert rows["width"] == ["integer", "-", "-", "1024", "128..1536,", "multiple", "of", "8"]
    assert rows["prompt"][:3] == ["string", "yes", "-"]
    assert rows["mask"] == ["string", "-", "yes", "-"]
    assert rows["scheduler"][:5] == ["string", "-", "-", '"K_EULER"', "DDIM,"]


def test_one_model_shows_items_and_long_defaults_cut(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "sujaykhandekar/object-removal")
    assert "objects_to_remove" in out
    assert '"person,car"  comma-separated, no spaces: Background, Aeroplane,' in out
    _, out, _ = run(capsys, "lucataco/animate-diff")
    assert '"masterpiece, best quality, ..."' in out


def test_unknown_model_exits_2_with_a_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "stability-ai/sdxI")
    assert (code, out) == (2, "")
    assert err.startswith(
        "kkiai-models: unknown model 'stability-ai/sdxI'. Did you mean 'stability-ai/sdxl'?"
    )


def test_wrong_version_suggests_the_supported_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "stability-ai/sdxl:abc")
    assert code == 2
    assert f"Did you mean 'stability-ai/sdxl:{SDXL_HASH}'?" in err


def test_list_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json")
    rows = json.loads(out)
    assert code == 0
    assert [r["model"] for r in rows] == default_catalog().refs
    assert rows[1] == {
        "model": "stability-ai/sdxl",
        "version": SDXL_HASH,
        "version_ref": f"stability-ai/sdxl:{SDXL_HASH}",
        "output": "list",
        "required": ["prompt"],
    }


def test_one_model_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json", "stability-ai/stable-diffusion-img2img")
    data = json.loads(out)
    inputs = {i["name"]: i for i in data["inputs"]}
    assert code == 0
    assert data["required"] == ["prompt", "image"]
    assert data["confidence"] == "high"
    assert inputs["prompt_strength"] == {
        "name": "prompt_strength",
        "type": "number",
        "default": 0.8,
        "has_default": True,
        "minimum": 0,
        "maximum": 1,
        "multiple_of": None,
        "choices": None,
        "allowed_items": None,
        "required": False,
        "file": False,
        "description": "1.0 = full destruction of init image (no bounds in schema; use 0..1)",
    }
    assert inputs["image"]["file"] is True
    assert inputs["scheduler"]["choices"][0] == "DDIM"


def test_unknown_model_as_json_is_still_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--json", "nope/nope")
    assert (code, out) == (2, "")
    assert err.startswith("kkiai-models: unknown model 'nope/nope'.")


def test_bad_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--bogus")
    assert (code, out) == (2, "")
    assert "usage: kkiai-models" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert out.startswith("usage: kkiai-models")


def test_no_traceback_in_a_real_process() -> None:
    command = [sys.executable, "-m", "kkiai_pipeline.models_cli", "sdxl"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert "Did you mean 'stability-ai/sdxl'?" in done.stderr


# -- models outside the catalog: fetched, then shown like a curated one ----------------------------------


def test_a_model_outside_the_catalog_is_fetched_and_shown(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    from .fakes.fake_api import TOKEN, FakeApi, Knobs
    from .test_any_model import SCHEMA, VERSION

    argv = ["--base-url", "", "--cache-dir", str(tmp_path), f"someone/tiles:{VERSION}"]
    with FakeApi(Knobs(versions={VERSION: ("someone/tiles", SCHEMA)})) as fake:
        argv[1] = fake.base_url
        code, out, err = run(capsys, *argv, environ={"KKIAI_API_TOKEN": TOKEN})
        again = run(capsys, *argv, "--json", environ={"KKIAI_API_TOKEN": TOKEN})
        assert fake.counters.version_gets == 1  # the second answer came from the cache
    lines = out.splitlines()
    assert (code, err) == (0, "")
    assert lines[:2] == [
        f"someone/tiles:{VERSION}",
        "output: list; a list of file URIs (from the fetched schema)",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in lines[5:]}
    assert rows == {
        "prompt": ["string", "yes", "-", "-"],
        "num_outputs": ["integer", "-", "-", "1", "1..4"],
        "style": ["string", "-", "-", '"flat"', "flat,", "glossy"],
    }
    assert again[0] == 0 and json.loads(again[1])["version_ref"] == f"someone/tiles:{VERSION}"
    assert TOKEN not in out + again[1] + "".join(p.read_text() for p in tmp_path.rglob("*.json"))


def test_fetching_needs_the_token_and_a_safe_url(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    ref = "someone/tiles:" + "9f" * 32
    code, _, err = run(
        capsys, "--base-url", "http://127.0.0.1:9/v1", "--cache-dir", str(tmp_path), ref, environ={}
    )
    assert (code, err) == (
        2,
        f"kkiai-models: cannot get the schema of {ref}: KKIAI_API_TOKEN is not set, and the API answers only "
        "with a token\n",
    )
    code, _, err = run(
        capsys, "--base-url", "http://api.example.com/v1", ref, environ={"KKIAI_API_TOKEN": "t"}
    )
    assert code == 2 and "the API token would travel unencrypted" in err


def test_the_sandbox_stand_in_is_shown(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    code, out, _ = run(
        capsys, "--sandbox", "--cache-dir", str(tmp_path), "someone/painter:0123abcd", environ={}
    )
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[5:]] == [
        "prompt",
        "width",
        "height",
        "num_outputs",
        "seed",
    ]

"""A Cog predictor outside the catalog (``predictors/swatch.py``) runs in a pipeline, its inputs checked
against the schema its server hands out at ``/openapi.json``, by the real kkiai-run command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kkiai_pipeline.api.client import ClientOptions
from kkiai_pipeline.api.cog import CogOptions
from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.execution import ExecutionOptions
from kkiai_pipeline.models_cli import main
from kkiai_pipeline.pipeline import parse_pipeline
from kkiai_pipeline.schemacache import with_fetched_models
from kkiai_pipeline.settings import ApiSettings, CogSettings, Settings

from ..integration import kkiai_run
from ..test_reliability import write

SWATCH = "test/swatch:5a7c4e01"

PIPELINE = """
name: swatches
params: {{label: {label}}}
steps:
  swatch:
    model: {model}
    input: {{label: "{{{{ params.label }}}}", size: {size}, colour: {colour}}}
"""


def run_swatch(tmp_path: Path, cog: Any, *, label: str, size: Any, colour: str) -> Any:
    write(tmp_path, "swatches", PIPELINE.format(model=SWATCH, label=label, size=size, colour=colour))
    servers = f"cog.servers={{test/swatch:{cog.swatch.url}}}"
    return kkiai_run("pipeline=swatches", "api=cog", servers, cwd=tmp_path)


def test_a_cog_model_outside_the_catalog_runs_in_a_pipeline(tmp_path: Path, cog: Any) -> None:
    result = run_swatch(tmp_path, cog, label="swatch-ok", size=16, colour="blue")
    assert result.code == 0, result.stderr
    step = result.manifest["steps"]["swatch"]
    assert (step["status"], step["model"], step["input"]) == (
        "succeeded",
        "test/swatch",
        {"label": "swatch-ok", "size": 16, "colour": "blue"},
    )
    with Image.open(result.run_dir / step["outputs"][0]["path"]) as image:
        assert (image.size, image.getpixel((0, 0))) == ((16, 16), (30, 60, 220))
    assert [e["event"] for e in cog.swatch.runs("swatch-ok")] == ["start", "end"]
    [kept] = (tmp_path / ".kkiai-cache" / "schemas").iterdir()  # the schema, kept for the next plan
    cached = json.loads(kept.read_text())
    assert (cached["identity"], cached["model"]) == (f"cog:{cog.swatch.url}", SWATCH)


def test_a_bad_input_for_it_is_refused_before_the_server_runs_anything(tmp_path: Path, cog: Any) -> None:
    before = len(cog.swatch.runs())
    result = run_swatch(tmp_path, cog, label="swatch-bad", size=1000, colour="purple")
    assert result.code == 2, result.stderr
    source = tmp_path / "pipelines" / "swatches.yaml"
    assert (
        f"{source}, step 'swatch', field 'input.size': size must be between 8 and 256 (inclusive), got 1000"
        in (result.stderr)
    )
    assert "field 'input.colour': colour must be one of red, green, blue; got 'purple'" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(cog.swatch.runs()) == before  # the server ran no prediction
    assert not (result.run_dir / "run.json").exists()


def test_kkiai_models_shows_it_from_its_server(
    tmp_path: Path, cog: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--cog", cog.swatch.url, "--cache-dir", str(tmp_path), SWATCH], environ={})
    lines = capsys.readouterr().out.splitlines()
    assert (code, lines[:2]) == (0, [SWATCH, "output: single; one file URI (from the fetched schema)"])
    rows = {line.split()[0]: line.split()[1:] for line in lines[5:]}
    assert rows == {
        "label": ["string", "yes", "-", "-"],
        "size": ["integer", "-", "-", "32", "8..256"],
        "colour": ["string", "-", "-", '"red"', "red,", "green,", "blue"],
    }


def fetch_from(cog_url: str, tmp_path: Path, *, ready_timeout: float) -> list[str]:
    """The problems of planning a step of an outside model on the Cog server at ``cog_url``."""
    steps = {"s": {"model": "test/other:1", "input": {}}}
    settings = Settings(
        api=ApiSettings("cog", None, None, ClientOptions()),
        execution=ExecutionOptions(),
        progress=False,
        run_dir=tmp_path,
        cog=CogSettings(servers={"test/other": cog_url}, options=CogOptions(ready_timeout=ready_timeout)),
    )
    pipeline = parse_pipeline({"name": "p", "steps": steps})
    _, problems = with_fetched_models(pipeline, settings, default_catalog())
    return [p.message for p in problems]


def test_a_server_still_setting_up_is_waited_for_then_named(tmp_path: Path, cog_servers: Any) -> None:
    url = cog_servers.sleepy.url
    assert fetch_from(url, tmp_path, ready_timeout=0.3) == [
        f"cannot get the schema of test/other:1: the Cog server at {url} did not finish its setup within 0.3 s"
    ]


def test_a_server_whose_setup_failed_is_named_at_once(tmp_path: Path, cog_servers: Any) -> None:
    url = cog_servers.broken.url
    assert fetch_from(url, tmp_path, ready_timeout=300) == [
        f"cannot get the schema of test/other:1: the Cog server at {url} has no schema to give "
        "(its health-check: SETUP_FAILED)"
    ]

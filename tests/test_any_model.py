"""A model outside the catalog, end to end in-process: its schema fetched once from the API (the
independent fake server) and kept in the cache, its inputs checked before anything is paid, the dry
run and the ledger unchanged; and the sandbox's generic stand-in."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kkiai_pipeline.api.client import ClientOptions
from kkiai_pipeline.dryrun import dry_run
from kkiai_pipeline.errors import PipelineError
from kkiai_pipeline.execution import ExecutionOptions
from kkiai_pipeline.orchestrator import prepare, run_pipeline
from kkiai_pipeline.pipeline import Pipeline, parse_pipeline
from kkiai_pipeline.settings import ApiSettings, Settings

from .fakes.fake_api import TOKEN, FakeApi, Knobs

VERSION = "9f" * 32
MODEL = f"someone/tiles:{VERSION}"
SCHEMA: dict[str, Any] = {
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "required": ["prompt"],
                "properties": {
                    "prompt": {"type": "string", "x-order": 0},
                    "num_outputs": {
                        "type": "integer",
                        "default": 1,
                        "minimum": 1,
                        "maximum": 4,
                        "x-order": 1,
                    },
                    "style": {
                        "allOf": [{"$ref": "#/components/schemas/style"}],
                        "default": "flat",
                        "x-order": 2,
                    },
                },
            },
            "style": {"type": "string", "enum": ["flat", "glossy"]},
            "Output": {"type": "array", "items": {"type": "string", "format": "uri"}},
        }
    }
}


def pipeline_of(tmp_path: Path, **input: Any) -> Pipeline:
    source = tmp_path / "tiles.yaml"
    steps = {"tiles": {"model": MODEL, "input": {"prompt": "a tile", **input}}}
    source.write_text(json.dumps({"name": "tiles", "steps": steps}))
    return parse_pipeline({"name": "tiles", "steps": steps}, source=source)


def settings_for(fake: FakeApi, tmp_path: Path, run: str) -> Settings:
    return Settings(
        api=ApiSettings("kkiai", fake.base_url, TOKEN, ClientOptions(poll_interval=0.01, wait_seconds=5)),
        execution=ExecutionOptions(),
        progress=False,
        run_dir=tmp_path / run,
        cache_dir=tmp_path / "cache",
    )


@pytest.fixture
def fake() -> Any:
    with FakeApi(Knobs(predict_seconds=0.01, versions={VERSION: ("someone/tiles", SCHEMA)})) as running:
        yield running


def test_the_schema_is_fetched_once_and_the_cache_serves_the_next_runs(tmp_path: Path, fake: FakeApi) -> None:
    pipeline = pipeline_of(tmp_path, num_outputs=2, style="glossy")
    first = run_pipeline(pipeline, settings_for(fake, tmp_path, "one"))
    assert first.status == "succeeded"
    assert len(first.steps["tiles"].outputs) == 2
    assert (fake.counters.version_gets, fake.counters.creates) == (1, 1)
    second = run_pipeline(pipeline, settings_for(fake, tmp_path, "two"))
    assert second.status == "succeeded"
    plan = dry_run(pipeline, settings_for(fake, tmp_path, "three"))
    assert "cache hit: prediction" in plan  # the same ledger key as the runs'
    # the second run and the dry run read the kept schema; the second run reused the prediction
    assert (fake.counters.version_gets, fake.counters.creates) == (1, 1)


def test_inputs_are_checked_against_the_fetched_schema_before_anything_is_paid(
    tmp_path: Path, fake: FakeApi
) -> None:
    pipeline = pipeline_of(tmp_path, num_outputs=9, style="matte", size=3)
    with pytest.raises(PipelineError) as caught:
        prepare(pipeline, settings_for(fake, tmp_path, "run"))
    source = tmp_path / "tiles.yaml"
    assert [str(p) for p in caught.value.problems] == [
        f"{source}, step 'tiles', field 'input.num_outputs': num_outputs must be between 1 and 4 (inclusive), got 9",
        f"{source}, step 'tiles', field 'input.style': style must be one of flat, glossy; got 'matte'",
        f"{source}, step 'tiles', field 'input.size': unknown input 'size' (someone/tiles accepts: prompt, "
        "num_outputs, style)",
    ]
    assert caught.value.exit_code == 2
    assert (fake.counters.version_gets, fake.counters.creates) == (1, 0)


def test_a_model_whose_schema_cannot_be_fetched_is_refused_naming_the_step(
    tmp_path: Path, fake: FakeApi
) -> None:
    source = tmp_path / "p.yaml"
    steps = {
        "a": {"model": f"someone/missing:{VERSION}", "input": {"prompt": "x"}},
        "b": {"model": "cjwbw/rembg", "input": {"image": "{{ steps.nope.output }}"}},
    }
    with pytest.raises(PipelineError) as caught:
        prepare(
            parse_pipeline({"name": "p", "steps": steps}, source=source), settings_for(fake, tmp_path, "r")
        )
    fetched, other = caught.value.problems  # reported together, the step's model named once
    assert str(fetched).startswith(
        f"{source}, step 'a', field 'model': cannot get the schema of someone/missing:{VERSION}: the API answered 404"
    )
    assert str(other) == f"{source}, step 'b', field 'input.image': reference to unknown step 'nope'"
    assert (caught.value.exit_code, fake.counters.creates) == (2, 0)


def test_a_cached_schema_that_cannot_be_trusted_is_fetched_again(tmp_path: Path, fake: FakeApi) -> None:
    pipeline = pipeline_of(tmp_path)
    prepare(pipeline, settings_for(fake, tmp_path, "one"))
    [kept] = (tmp_path / "cache" / "schemas").iterdir()
    good = json.loads(kept.read_text())
    hostile = [
        b"[" * 100_000,  # nested far too deep
        json.dumps({**good, "identity": "kkiai:https://elsewhere.invalid"}).encode(),  # another service's
        json.dumps({**good, "openapi_schema": {"components": {"schemas": {"Input": 3}}}}).encode(),
        b"\x00not json",
    ]
    for number, body in enumerate(hostile, start=2):
        kept.write_bytes(body)
        plan = prepare(pipeline, settings_for(fake, tmp_path, f"run{number}")).plan
        assert plan["tiles"].model.inputs["style"].choices == ("flat", "glossy")
        assert fake.counters.version_gets == number
    assert json.loads(kept.read_text())["openapi_schema"] == good["openapi_schema"]  # rewritten whole


def test_the_sandbox_serves_a_generic_stand_in_for_a_model_it_does_not_know(tmp_path: Path) -> None:
    steps = {
        "draw": {
            "model": "someone/painter:0123abcd",
            "input": {"prompt": "a cube", "width": 96, "num_outputs": 2},
        },
        "cut": {"model": "cjwbw/rembg", "input": {"image": "{{ steps.draw.output[1] }}"}},
    }
    pipeline = parse_pipeline({"name": "draw", "steps": steps}, source=tmp_path / "draw.yaml")
    knobs = {"queue_seconds": 0.0, "predict_seconds": 0.01, "store": str(tmp_path / "store")}
    settings = Settings(
        api=ApiSettings("sandbox", None, "sandbox", ClientOptions(poll_interval=0.01), knobs),
        execution=ExecutionOptions(),
        progress=False,
        run_dir=tmp_path / "run",
        cache_dir=tmp_path / "cache",
    )
    record = run_pipeline(pipeline, settings)
    assert record.status == "succeeded", {s: r.error for s, r in record.steps.items()}
    draws = record.steps["draw"].outputs
    assert len(draws) == 2
    with Image.open(tmp_path / "run" / draws[1].path) as image:
        assert image.size == (96, 512)
    bad = {"draw": {"model": "someone/painter:0123abcd", "input": {"prompt": "x", "num_outputs": 5}}}
    with pytest.raises(PipelineError, match="num_outputs must be between 1 and 4"):
        prepare(parse_pipeline({"name": "bad", "steps": bad}), settings)


def test_planning_fetches_inside_a_running_event_loop(tmp_path: Path, fake: FakeApi) -> None:
    async def inside() -> Any:  # a notebook, or the Python API called from async code
        return prepare(pipeline_of(tmp_path), settings_for(fake, tmp_path, "run"))

    job = asyncio.run(inside())
    assert (job.plan["tiles"].model.version_ref, fake.counters.version_gets) == (MODEL, 1)


COLLAGE = "ab" * 32
COLLAGE_SCHEMA: dict[str, Any] = {
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "required": ["images"],
                "properties": {"images": {"type": "array", "items": {"type": "string", "format": "uri"}}},
            },
            "Output": {"type": "string", "format": "uri"},
        }
    }
}


def test_a_list_of_outputs_feeds_a_list_input(tmp_path: Path) -> None:
    versions = {VERSION: ("someone/tiles", SCHEMA), COLLAGE: ("someone/collage", COLLAGE_SCHEMA)}

    def pipeline(images: str) -> Pipeline:
        steps = {
            "tiles": {"model": MODEL, "input": {"prompt": "a tile", "num_outputs": 2}},
            "collage": {"model": f"someone/collage:{COLLAGE}", "input": {"images": images}},
        }
        return parse_pipeline({"name": "c", "steps": steps}, source=tmp_path / "c.yaml")

    with FakeApi(Knobs(predict_seconds=0.01, versions=versions)) as fake:
        with pytest.raises(PipelineError) as caught:  # one file where a list is wanted: found at planning
            prepare(pipeline("{{ steps.tiles.output[0] }}"), settings_for(fake, tmp_path, "bad"))
        record = run_pipeline(pipeline("{{ steps.tiles.output }}"), settings_for(fake, tmp_path, "good"))
        assert (fake.counters.creates, fake.counters.version_gets) == (2, 2)
    assert "field 'input.images': images must be a list, got the string" in str(caught.value)
    assert record.status == "succeeded"
    assert record.steps["collage"].input["images"] == [a.url for a in record.steps["tiles"].outputs]

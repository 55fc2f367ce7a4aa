"""Tests for kkiai_pipeline.modelschema (a Cog OpenAPI schema read distrustfully) and the fetching edges
of kkiai_pipeline.schemacache (Cog servers, answers too large or too deep), in-process."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import pytest

from kkiai_pipeline.api.client import ClientOptions
from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.errors import PipelineError
from kkiai_pipeline.execution import ExecutionOptions
from kkiai_pipeline.modelschema import SchemaError, parse_ref, spec_from_openapi
from kkiai_pipeline.pipeline import parse_pipeline
from kkiai_pipeline.schemacache import MAX_BYTES, with_fetched_models
from kkiai_pipeline.settings import ApiSettings, CogSettings, Settings
from kkiai_pipeline.validation import validate_input

COG: dict[str, Any] = {
    "openapi": "3.0.2",
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "steps": {"type": "integer", "default": 4, "minimum": 1, "maximum": 50, "x-order": 2},
                    "image": {"type": "string", "format": "uri", "x-order": 0},
                    "mode": {
                        "allOf": [{"$ref": "#/components/schemas/mode"}],
                        "default": "fast",
                        "x-order": 1,
                    },
                    "strength": {
                        "type": "number",
                        "nullable": True,
                        "description": "\x1b[31mred\x1b[0m text",
                    },
                },
            },
            "mode": {
                "title": "mode",
                "type": "string",
                "enum": ["fast", "slow"],
                "description": "An enumeration.",
            },
            "Output": {
                "type": "array",
                "items": {"type": "string", "format": "uri"},
                "x-cog-array-type": "iterator",
            },
        }
    },
}


def spec(document: Any) -> Any:
    return spec_from_openapi("o", "m", "v1", document)


def changed(path: str, value: Any) -> dict[str, Any]:
    """COG with the node at ``path`` (dotted, under components.schemas) replaced by ``value``."""
    document = copy.deepcopy(COG)
    node = document["components"]["schemas"]
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return document


def test_a_cog_schema_becomes_a_model_whose_inputs_are_checked() -> None:
    model = spec(COG)
    assert (model.version_ref, model.output_kind, model.streams) == ("o/m:v1", "list", True)
    assert list(model.inputs) == ["image", "mode", "steps", "strength"]  # x-order first
    mode, steps, image = model.inputs["mode"], model.inputs["steps"], model.inputs["image"]
    assert (mode.type, mode.choices, mode.default) == ("string", ("fast", "slow"), "fast")
    assert (steps.minimum, steps.maximum, image.is_file, image.required) == (1, 50, True, True)
    assert model.inputs["strength"].description == "red text"  # escape sequences removed
    problems = validate_input(model, {"mode": "quick", "steps": 51, "strength": "high"})
    assert [(p.field, p.kind) for p in problems] == [
        ("mode", "choice"),
        ("steps", "range"),
        ("strength", "type"),
        ("image", "required"),
    ]


def test_a_list_input_checks_each_item() -> None:
    images = {"type": "array", "items": {"type": "string", "format": "uri"}, "x-order": 4}
    model = spec(changed("Input.properties.images", images))
    found_spec = model.inputs["images"]
    assert (found_spec.type, found_spec.items, found_spec.is_file) == ("array", "string", True)
    url = "https://x.invalid/a.png"
    assert validate_input(model, {"image": url, "images": [url, "data:image/png;base64,AA=="]}) == []
    found = [
        (p.kind, p.message)
        for value in ("a.png", [url, "a.png"], [url, 3])
        for p in validate_input(model, {"image": url, "images": value})
    ]
    assert found == [
        ("type", "images must be a list, got the string 'a.png'"),
        ("format", "images[1] must be an http:// or https:// URL or a data: URI, got 'a.png'"),
        ("type", "images[1] must be a string, got 3 (an integer)"),
    ]


@pytest.mark.parametrize(
    ("output", "kind"),
    [
        ({"type": "string", "format": "uri"}, "single"),
        ({"type": "array", "items": {"type": "string", "format": "uri"}}, "list"),
        ({"type": "object", "properties": {"image": {"type": "string", "format": "uri"}}}, "any"),
        ({}, "any"),
    ],
)
def test_the_output_kind_follows_the_output_schema(output: Any, kind: str) -> None:
    assert spec(changed("Output", output)).output_kind == kind


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("Output", {"type": "string"}, "its Output is string values, not files, and only files can be kept"),
        ("Output", {"type": "array", "items": {"type": "string"}}, "its Output is string values, not files"),
        (
            "Input.properties.steps",
            {"type": "object"},
            "input 'steps' has type 'object', which cannot be checked",
        ),
        ("Input.properties.steps", {"type": "array"}, "input 'steps'.items is missing or not an object"),
        (
            "Input.properties.steps",
            {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
            "input 'steps' is a list with items of type 'array', which cannot be checked",
        ),
        (
            "Input.properties.steps",
            {"type": "array", "items": {"type": "integer", "maximum": 3}},
            "input 'steps' is a list with constrained items (maximum), which cannot be checked",
        ),
        (
            "Input.properties.steps",
            {"type": "integer", "minimum": "1"},
            "a minimum that is not a finite number",
        ),
        (
            "Input.properties.mode",
            {"allOf": [{"$ref": "http://evil.invalid/x"}]},
            "which is not in the schema",
        ),
        ("Input.properties.mode", {"allOf": [{"$ref": "#/components/schemas/gone"}]}, "not in the schema"),
        ("Input.properties.mode", {"type": "string", "enum": "fast"}, "an enum that is not a short list"),
        ("Input.properties.mode", {"type": "string", "enum": [{"a": 1}]}, "an enum that is not a short list"),
        ("Input.properties.mode", {"allOf": {"$ref": "#/components/schemas/mode"}}, "an allOf that is not"),
        ("mode", {"$ref": "#/components/schemas/mode"}, "refers to a schema that refers further"),
        ("Input.properties", {"bad name\x1b": {"type": "string"}}, "is not a plain name"),
        ("Input.properties", {f"i{n}": {"type": "string"} for n in range(201)}, "more than 200"),
        ("Input.required", ["image", "nope"], "Input.required names 'nope', which is not an input"),
        ("Input", [], "components.schemas.Input is missing or not an object"),
    ],
)
def test_a_schema_that_cannot_be_checked_is_refused(path: str, value: Any, message: str) -> None:
    with pytest.raises(SchemaError) as caught:
        spec(changed(path, value))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("ref", "parts"),
    [
        ("o/m:v1", ("o", "m", "v1")),
        ("someone/tiles:" + "9f" * 32, ("someone", "tiles", "9f" * 32)),
        ("o/m", None),
        ("o/m:", None),
        ("o/m:../x", None),
        ("o/m/x:v", None),
        ("o/m:v?x=1", None),
    ],
)
def test_model_references(ref: str, parts: Any) -> None:
    assert parse_ref(ref) == parts


# -- fetching from a Cog server ------------------------------------------------------------------------


def plan_with(tmp_path: Path, handler: Any) -> Any:
    steps = {"s": {"model": "o/m:v1", "backend": "cog", "input": {"image": "https://x.invalid/a.png"}}}
    pipeline = parse_pipeline({"name": "p", "steps": steps}, source=tmp_path / "p.yaml")
    settings = Settings(
        api=ApiSettings("kkiai", "https://api.invalid/v1", "t", ClientOptions()),
        execution=ExecutionOptions(),
        progress=False,
        run_dir=tmp_path,
        cache_dir=tmp_path / "cache",
        cog=CogSettings(servers={"o/m": "http://127.0.0.1:5000"}),
    )
    catalog, problems = with_fetched_models(
        pipeline, settings, default_catalog(), transport=httpx.MockTransport(handler)
    )
    if problems:
        raise PipelineError(problems)
    return catalog


def test_a_cog_schema_is_fetched_from_openapi_json(tmp_path: Path) -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, json=COG)

    assert plan_with(tmp_path, handler).find("o/m:v1").inputs["steps"].maximum == 50
    assert plan_with(tmp_path, handler).find("o/m:v1").output_kind == "list"  # from the cache
    assert asked == ["http://127.0.0.1:5000/openapi.json"]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (httpx.Response(404), "the Cog server at http://127.0.0.1:5000 answered 404 to GET /openapi.json"),
        (httpx.Response(200, content=b"<html>"), "sent a schema that is not JSON"),
        (httpx.Response(200, content=b"[" * 40 + b"]" * 40), "sent a schema nested deeper than 32 levels"),
        (
            httpx.Response(200, content=b" " * (MAX_BYTES + 10)),
            f"sent a schema larger than {MAX_BYTES} bytes",
        ),
        (httpx.Response(200, json={"components": {}}), "its schema cannot be used (components.schemas is"),
    ],
)
def test_a_cog_schema_that_cannot_be_had_is_a_problem_of_the_step(
    tmp_path: Path, answer: httpx.Response, reason: str
) -> None:
    with pytest.raises(PipelineError) as caught:
        plan_with(tmp_path, lambda request: answer)
    [problem] = caught.value.problems
    assert (problem.step, problem.field) == ("s", "model")
    assert problem.message.startswith("cannot get the schema of o/m:v1: ")
    assert reason in problem.message
    assert not (tmp_path / "cache" / "schemas").exists()  # nothing kept


def test_an_unreachable_cog_server_is_named(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(PipelineError) as caught:
        plan_with(tmp_path, handler)
    assert "the Cog server at http://127.0.0.1:5000 cannot be reached (ConnectError: refused)" in str(
        caught.value
    )


def test_an_api_step_when_there_is_no_api_is_named(tmp_path: Path) -> None:
    steps = {"s": {"model": "o/m:v1", "backend": "api", "input": {}}}
    settings = Settings(
        api=ApiSettings("cog", None, None, ClientOptions()),
        execution=ExecutionOptions(),
        progress=False,
        run_dir=tmp_path,
    )
    _, problems = with_fetched_models(
        parse_pipeline({"name": "p", "steps": steps}), settings, default_catalog()
    )
    assert [p.message for p in problems] == [
        "cannot get the schema of o/m:v1: it asks for the hosted API, but api=cog has none"
    ]

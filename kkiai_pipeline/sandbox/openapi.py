"""The model-version document (``GET /v1/models/{owner}/{name}/versions/{id}``), Cog style.

replicate-python 1.0.7's ``run()`` fetches it after creating a prediction and reads
``components.schemas.Output`` to decide whether the output is an iterator.
"""

from __future__ import annotations

from typing import Any

from ..catalog import InputSpec, ModelSpec

COG_VERSION = "0.9.4"
# The catalog has no creation dates; one fixed, plausible date keeps the document deterministic.
VERSION_CREATED_AT = "2023-11-07T00:00:00.000000Z"


def version_json(model: ModelSpec) -> dict[str, Any]:
    """``{id, created_at, cog_version, openapi_schema}`` for ``model``."""
    return {
        "id": model.version,
        "created_at": VERSION_CREATED_AT,
        "cog_version": COG_VERSION,
        "openapi_schema": openapi_schema(model),
    }


def openapi_schema(model: ModelSpec) -> dict[str, Any]:
    """A Cog-style OpenAPI document whose Input and Output schemas come from the catalog."""
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {
            "schemas": {
                "Input": input_schema(model),
                "Output": output_schema(model),
                "Status": {
                    "title": "Status",
                    "type": "string",
                    "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
                    "description": "An enumeration.",
                },
            }
        },
    }


def input_schema(model: ModelSpec) -> dict[str, Any]:
    """``components.schemas.Input``: one property per input, in catalog order (``x-order``)."""
    properties = {name: _property(spec, order) for order, (name, spec) in enumerate(model.inputs.items())}
    schema: dict[str, Any] = {"type": "object", "title": "Input", "properties": properties}
    required = [name for name, spec in model.inputs.items() if spec.required]
    if required:
        schema["required"] = required
    return schema


def _property(spec: InputSpec, order: int) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": spec.type, "title": spec.name.replace("_", " ").title()}
    if spec.is_file:
        prop["format"] = "uri"
    if spec.has_default:
        prop["default"] = spec.default
    if spec.minimum is not None:
        prop["minimum"] = spec.minimum
    if spec.maximum is not None:
        prop["maximum"] = spec.maximum
    if spec.choices is not None:
        prop["enum"] = list(spec.choices)
    if spec.description:
        prop["description"] = spec.description
    prop["x-order"] = order
    return prop


def output_schema(model: ModelSpec) -> dict[str, Any]:
    """``components.schemas.Output`` from the catalog's raw output schema, without its notes."""
    raw = dict(model.raw_schema.get("output", {}))
    raw.pop("note", None)
    return {"title": "Output", **raw}

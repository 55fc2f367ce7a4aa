"""Models outside the catalog: a Cog OpenAPI schema turned into a :class:`~.catalog.ModelSpec`.

A step may name any ``owner/name:<version>``. Its schema (``components.schemas.Input`` and ``Output``,
as Cog writes them and Replicate's ``GET /models/{owner}/{name}/versions/{version}`` hands them on in
``openapi_schema``) is fetched at planning (:mod:`.schemacache`) and read here, distrustfully: every
property is checked for its shape, and what cannot be checked before paying is refused with a reason.

What an input keeps: its JSON type (``string``, ``integer``, ``number``, ``boolean``, or ``array`` of
one of these, e.g. a list of file URIs), ``default``,
``minimum``/``maximum``, ``enum`` (also through ``allOf: [{$ref: "#/components/schemas/<name>"}]``, how
Cog writes ``choices``), ``format: uri`` (a file), ``description`` and whether ``required`` lists it.
An input of another type (an object, a list of lists or of constrained items) cannot be checked yet: the
model is refused.

What the output becomes (the planning stand-ins follow it): an array of ``uri`` strings is a list of
files, a ``uri`` string one file, an object or no schema at all ``any`` (not checked). An output that
certainly holds no file (text, a number) is refused: its prediction would be paid for and then found
unusable, since only files are kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .api.errors import clean_text
from .catalog import ModelSpec, model_spec

#: ``owner/name:<version>``; each part safe in a URL path and a file name.
MODEL_REF = re.compile(
    r"(?P<owner>[A-Za-z0-9][A-Za-z0-9._-]{0,99})/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,99})"
    r":(?P<version>[A-Za-z0-9][A-Za-z0-9._-]{0,127})"
)
INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
MAX_INPUTS = 200
MAX_CHOICES = 1000
MAX_CHOICE_CHARS = 1000
MAX_DESCRIPTION = 500
TYPES = ("string", "integer", "number", "boolean")
CHECKED = "only strings, integers, numbers, booleans and lists of one of these"
_REF = re.compile(r"#/components/schemas/(?P<name>[A-Za-z0-9_.-]{1,100})")


class SchemaError(ValueError):
    """A schema that cannot be used to check inputs; the message says what is wrong, in a few words."""


def parse_ref(ref: str) -> tuple[str, str, str] | None:
    """``(owner, name, version)`` of an ``owner/name:<version>`` reference, else None."""
    match = MODEL_REF.fullmatch(ref)
    return (match["owner"], match["name"], match["version"]) if match else None


def spec_from_openapi(owner: str, name: str, version: str, document: Any) -> ModelSpec:
    """The ModelSpec a Cog OpenAPI ``document`` describes; raises SchemaError."""
    schemas = _mapping(_mapping(document, "the schema").get("components"), "components").get("schemas")
    schemas = _mapping(schemas, "components.schemas")
    entry = {
        "version": version,
        "source": "fetched schema",
        "confidence": "fetched",
        "inputs": _inputs(schemas),
        "output": _output(schemas),
    }
    return model_spec(f"{owner}/{name}", entry)


def _inputs(schemas: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    schema = _mapping(schemas.get("Input"), "components.schemas.Input")
    properties = _mapping(schema.get("properties", {}), "Input.properties")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaError("Input.required is not a list of names")
    if len(properties) > MAX_INPUTS:
        raise SchemaError(f"Input has {len(properties)} properties, more than {MAX_INPUTS}")
    ordered = sorted(properties.items(), key=lambda item: _order(item[1]))
    inputs = {str(key): _input(str(key), prop, schemas, required=key in required) for key, prop in ordered}
    missing = [r for r in required if r not in inputs]
    if missing:
        raise SchemaError(f"Input.required names '{clean_text(missing[0], limit=40)}', which is not an input")
    return inputs


def _order(prop: Any) -> float:
    order = prop.get("x-order") if isinstance(prop, Mapping) else None
    return float(order) if isinstance(order, int | float) and _is_number(order) else math.inf


def _input(key: str, prop: Any, schemas: Mapping[str, Any], *, required: bool) -> dict[str, Any]:
    if not INPUT_NAME.fullmatch(key):
        raise SchemaError(f"the input name {clean_text(repr(key), limit=40)} is not a plain name")
    merged = _resolved(_mapping(prop, f"input '{key}'"), schemas, f"input '{key}'")
    kind = merged.get("type")
    if kind == "array":
        return _list_input(key, merged, schemas, required=required)
    if kind not in TYPES:
        raise SchemaError(f"input '{key}' has type {_shown(kind)}, which cannot be checked ({CHECKED})")
    entry: dict[str, Any] = {"type": kind}
    if "default" in merged:
        entry["default"] = merged["default"]
    for bound in ("minimum", "maximum"):
        if bound in merged:
            if not _is_number(merged[bound]):
                raise SchemaError(f"input '{key}' has a {bound} that is not a finite number")
            entry[bound] = merged[bound]
    if "enum" in merged:
        entry["choices"] = _choices(key, merged["enum"])
    if merged.get("format") == "uri":
        entry["format"] = "uri"
    description = merged.get("description")
    if isinstance(description, str) and description:
        entry["description"] = clean_text(description, limit=MAX_DESCRIPTION)
    entry["required"] = required
    return entry


def _list_input(
    key: str, merged: Mapping[str, Any], schemas: Mapping[str, Any], *, required: bool
) -> dict[str, Any]:
    """An array input: its items must be of one plain type, without constraints of their own."""
    where = f"input '{key}'"
    items = _resolved(_mapping(merged.get("items"), f"{where}.items"), schemas, f"{where}.items")
    kind = items.get("type")
    constrained = [k for k in ("enum", "minimum", "maximum", "items") if k in items]
    if kind not in TYPES or constrained:
        what = (
            f"items of type {_shown(kind)}" if kind not in TYPES else f"constrained items ({constrained[0]})"
        )
        raise SchemaError(f"{where} is a list with {what}, which cannot be checked ({CHECKED})")
    entry: dict[str, Any] = {"type": "array", "items": {"type": kind}, "required": required}
    if kind == "string" and items.get("format") == "uri":
        entry["items"]["format"] = "uri"
    if isinstance(merged.get("default"), list):
        entry["default"] = merged["default"]
    description = merged.get("description")
    if isinstance(description, str) and description:
        entry["description"] = clean_text(description, limit=MAX_DESCRIPTION)
    return entry


def _shown(value: Any) -> str:
    return clean_text(repr(value), limit=30)


def _choices(key: str, values: Any) -> list[Any]:
    ok = isinstance(values, list) and 0 < len(values) <= MAX_CHOICES
    if not ok or not all(_is_choice(v) for v in values):
        raise SchemaError(f"input '{key}' has an enum that is not a short list of strings and numbers")
    return list(values)


def _is_choice(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_CHOICE_CHARS
    return _is_number(value)


def _output(schemas: Mapping[str, Any]) -> dict[str, Any]:
    """The Output schema in the catalog's shape: an array of uri, a uri, or ``{}`` (any)."""
    raw = schemas.get("Output")
    if raw is None:
        return {"note": "not described by the fetched schema (its shape is not checked)"}
    output = _resolved(_mapping(raw, "components.schemas.Output"), schemas, "Output")
    kind = output.get("type")
    if kind == "array":
        items = _resolved(_mapping(output.get("items", {}), "Output.items"), schemas, "Output.items")
        if items.get("type") == "string" and items.get("format") == "uri":
            entry: dict[str, Any] = {"type": "array", "items": {"type": "string", "format": "uri"}}
            entry["note"] = "a list of file URIs (from the fetched schema)"
            if output.get("x-cog-array-type") == "iterator":
                entry["x-cog-array-type"] = "iterator"
            return entry
        kind = items.get("type")
    elif kind == "string" and output.get("format") == "uri":
        return {"type": "string", "format": "uri", "note": "one file URI (from the fetched schema)"}
    if kind in TYPES:
        raise SchemaError(f"its Output is {kind} values, not files, and only files can be kept")
    return {"note": "not described by the fetched schema (its shape is not checked)"}


def _resolved(prop: Mapping[str, Any], schemas: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``prop`` with what its ``$ref`` or ``allOf`` of refs point to merged under its own keys."""
    merged: dict[str, Any] = {}
    parts = prop.get("allOf", [])
    if not isinstance(parts, list) or len(parts) > 8:
        raise SchemaError(f"{where} has an allOf that is not a short list")
    for part in [*parts, {"$ref": prop["$ref"]} if "$ref" in prop else {}]:
        target = _mapping(part, f"{where}.allOf")
        if "$ref" in target:
            target = _target(target["$ref"], schemas, where)
        merged.update({k: v for k, v in target.items() if k not in ("title", "description")})
    merged.update({k: v for k, v in prop.items() if k not in ("allOf", "$ref")})
    return merged


def _target(ref: Any, schemas: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    match = _REF.fullmatch(ref) if isinstance(ref, str) else None
    if match is None or match["name"] not in schemas:
        raise SchemaError(f"{where} refers to {clean_text(repr(ref), limit=60)}, which is not in the schema")
    target = _mapping(schemas[match["name"]], f"components.schemas.{match['name']}")
    if "$ref" in target or "allOf" in target:
        raise SchemaError(f"{where} refers to a schema that refers further")
    return target


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SchemaError(f"{where} is missing or not an object")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

"""The generic stand-in: what the sandbox serves for an ``owner/name:<version>`` it does not know.

Any such model (whose ``owner/name`` is not one of the curated ones) is a text-to-image model with a
small schema: ``prompt``, ``width``, ``height``, ``num_outputs`` and ``seed``; its predictions draw
images like the catalog's text-to-image stand-ins. So a pipeline naming a model outside the catalog
can be tried offline: the version endpoint hands out this schema, and the pipeline's inputs are checked
against it as they would be against the real model's.
"""

from __future__ import annotations

from typing import Any

from ..catalog import Catalog, ModelSpec, model_spec
from ..modelschema import parse_ref

CONFIDENCE = "sandbox generic stand-in"

_SIZE = {"type": "integer", "default": 512, "minimum": 64, "maximum": 2048}
GENERIC_INPUTS: dict[str, dict[str, Any]] = {
    "prompt": {"type": "string", "required": True, "description": "What to draw"},
    "width": {**_SIZE, "description": "Width of the image in pixels"},
    "height": {**_SIZE, "description": "Height of the image in pixels"},
    "num_outputs": {"type": "integer", "default": 1, "minimum": 1, "maximum": 4, "description": "Images"},
    "seed": {"type": "integer", "minimum": 0, "description": "Random seed; leave blank to randomize"},
}
GENERIC_OUTPUT = {"type": "array", "items": {"type": "string", "format": "uri"}}


def generic_model(ref: str, catalog: Catalog) -> ModelSpec | None:
    """The generic stand-in for ``owner/name:<version>``; None for a curated model or another form."""
    parts = parse_ref(ref)
    if parts is None or catalog.curated(ref):
        return None
    owner, name, version = parts
    entry = {"version": version, "confidence": CONFIDENCE, "inputs": GENERIC_INPUTS, "output": GENERIC_OUTPUT}
    return model_spec(f"{owner}/{name}", entry)


def is_generic(model: ModelSpec) -> bool:
    """Whether ``model`` is the generic stand-in (which draws images whatever its name)."""
    return model.confidence == CONFIDENCE


def stored_version(model: ModelSpec) -> str:
    """What the store records as a prediction's version: the hash of a catalog model, and the whole
    ``owner/name:<version>`` of a generic one (which its hash alone cannot name again)."""
    return model.version_ref if is_generic(model) else model.version

"""The supported models: names, version hashes, input schemas and output kinds.

The facts come from ``data/models.json`` (a copy of the project's ``model_schemas.json``), read once.
A model is named by ``owner/name``, ``owner/name:<hash>`` or the bare 64-hex hash. Models outside the
catalog, whose schemas were fetched (:mod:`.modelschema`), join a copy of it (:meth:`Catalog.with_fetched`)
under their full ``owner/name:<version>``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

from .errors import UnknownModelError

#: ``array``: a list of ``items`` values (only fetched models have such inputs).
InputType = Literal["string", "integer", "number", "boolean", "array"]
#: ``any``: a fetched model whose Output schema does not say (an object, or nothing): not checked.
OutputKind = Literal["list", "single", "any"]


@dataclass(frozen=True)
class InputSpec:
    """One input of a model, as its schema describes it."""

    name: str
    type: InputType
    description: str = ""
    default: Any = None
    has_default: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    allowed_items: tuple[str, ...] | None = None
    required: bool = False
    is_file: bool = False  # a file URL (for an array: each item is one)
    items: InputType | None = None  # the type of an array's items


@dataclass(frozen=True)
class ModelSpec:
    """One supported model version."""

    owner: str
    name: str
    version: str
    inputs: Mapping[str, InputSpec]
    output_kind: OutputKind
    output_note: str = ""
    confidence: str = "high"
    raw_schema: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def streams(self) -> bool:
        """Whether the output is an iterator that grows while the prediction runs (Cog ``iterator``)."""
        return bool(self.raw_schema.get("output", {}).get("x-cog-array-type") == "iterator")

    @property
    def ref(self) -> str:
        """``owner/name``."""
        return f"{self.owner}/{self.name}"

    @property
    def version_ref(self) -> str:
        """``owner/name:<hash>``, what a create request sends as ``version``."""
        return f"{self.ref}:{self.version}"


def _input_spec(name: str, raw: Mapping[str, Any]) -> InputSpec:
    choices = raw.get("choices")
    allowed = raw.get("allowed_items")
    items = raw.get("items") or {}
    return InputSpec(
        name=name,
        type=raw["type"],
        description=raw.get("description", ""),
        default=raw.get("default"),
        has_default="default" in raw,
        minimum=raw.get("minimum"),
        maximum=raw.get("maximum"),
        choices=tuple(choices) if choices is not None else None,
        allowed_items=tuple(allowed) if allowed is not None else None,
        required=bool(raw.get("required", False)),
        is_file=raw.get("format") == "uri" or items.get("format") == "uri",
        items=items.get("type"),
    )


def model_spec(ref: str, raw: Mapping[str, Any]) -> ModelSpec:
    """The ModelSpec of ``owner/name`` from its entry in the shape of ``data/models.json``."""
    owner, name = ref.split("/", 1)
    output = raw["output"]
    kinds: dict[Any, OutputKind] = {"array": "list", "string": "single"}
    return ModelSpec(
        owner=owner,
        name=name,
        version=raw["version"],
        inputs={k: _input_spec(k, v) for k, v in raw["inputs"].items()},
        output_kind=kinds.get(output.get("type"), "any"),
        output_note=output.get("note", ""),
        confidence=raw.get("confidence", "high"),
        raw_schema=raw,
    )


class Catalog:
    """Looks models up by any of the names a pipeline may use."""

    def __init__(
        self, models: Mapping[str, ModelSpec], *, fetched: Mapping[str, ModelSpec] | None = None
    ) -> None:
        self._by_ref = dict(models)
        self._by_version = {m.version: m for m in models.values()}
        self._fetched = dict(fetched or {})  # owner/name:<version> -> a model outside the catalog

    def with_fetched(self, models: Iterable[ModelSpec]) -> Catalog:
        """This catalog plus ``models`` (fetched schemas), each found by its ``owner/name:<version>``."""
        fetched = self._fetched | {m.version_ref: m for m in models}
        return Catalog(self._by_ref, fetched=fetched)

    def curated(self, ref: str) -> bool:
        """Whether ``ref`` names one of the curated models (owner/name, with or without a version)."""
        return ref in self._by_version or ref.partition(":")[0] in self._by_ref

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._by_ref.values())

    def __len__(self) -> int:
        return len(self._by_ref)

    @property
    def refs(self) -> list[str]:
        """All ``owner/name`` references, in catalog order."""
        return list(self._by_ref)

    def find(self, ref: str) -> ModelSpec | None:
        """The model named by ``ref``, or None."""
        if ref in self._fetched:
            return self._fetched[ref]
        if ref in self._by_version:
            return self._by_version[ref]
        name, _, version = ref.partition(":")
        model = self._by_ref.get(name)
        if model is None or (version and version != model.version):
            return None
        return model

    def resolve(self, ref: str) -> ModelSpec:
        """The model named by ``ref``; raises UnknownModelError with a did-you-mean."""
        model = self.find(ref)
        if model is not None:
            return model
        name, _, version = ref.partition(":")
        if name in self._by_ref and version:
            known = self._by_ref[name]
            raise UnknownModelError(ref, known=self.refs, suggestion=known.version_ref)
        close = difflib.get_close_matches(name, self.refs, n=1, cutoff=0.6)
        if not close:  # a model name without its owner: "sdxl"
            close = [r for r in self.refs if r.split("/", 1)[1] == name][:1]
        note = "a model outside them is named with its version: owner/name:<version>" if not version else ""
        raise UnknownModelError(ref, known=self.refs, suggestion=close[0] if close else None, note=note)


@cache
def default_catalog() -> Catalog:
    """The ten seed models shipped with the package."""
    text = resources.files("kkiai_pipeline.data").joinpath("models.json").read_text("utf-8")
    raw: dict[str, Any] = json.loads(text)
    return Catalog({ref: model_spec(ref, spec) for ref, spec in raw.items()})

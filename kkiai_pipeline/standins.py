"""Stand-in outputs: what each step will hand on, in the shape it will have, before anything has run.

Planning renders the templates that read step outputs against these stand-ins, so that a list used
where one file is expected, ``output[5]`` of a step that makes 2 files, or a ``foreach`` over one file
is found before the first paid call instead of after the upstream steps were paid for.

- A single-file model (rembg, object-removal, animate-diff) hands on one URL: a :class:`StandInFile`.
- A list model hands on a :class:`StandInList` of ``num_outputs`` URLs (the input's value, else its
  default; the schema's maximum when a template sets it). The real list can be shorter (filtered
  images are dropped), never longer, so an index past the stand-in's end is wrong for certain.
- A list model without ``num_outputs`` (stable-diffusion-animation: frames, then the video) has no
  known length: its stand-in holds one URL and answers any index.
- A ``foreach`` step hands on the list of its items' outputs.
- A model outside the catalog whose Output schema does not say what it returns (``any``) has no
  stand-in (None): templates reading it are left to run time.

The URLs are ``https://planning.invalid/<step>/<i>.png`` (``.invalid`` never resolves, RFC 2606): they
pass every file-input check. Using a stand-in the way its real value cannot be used (indexing or
looping over one file, indexing past the end of a list) raises :class:`ShapeError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, SupportsIndex

from .catalog import ModelSpec

HOST = "planning.invalid"


class ShapeError(ValueError):
    """A template used a step's output in a way its real output cannot be used.

    A ValueError, not a TypeError or LookupError: Jinja swallows those two on ``x[i]`` (it then tries
    an attribute and yields an undefined value), and this one must reach the renderer with its message.
    """


@dataclass(frozen=True)
class Origin:
    """Where a stand-in comes from, as a message names it."""

    label: str  # how a template reaches it: steps.generate.output[1]
    model: ModelSpec


class StandInFile(str):
    """The URL a single-file model hands on; it refuses to be indexed or looped over like a list."""

    _origin: Origin  # underscored: templates cannot read it (the sandbox hides such attributes)

    def __new__(cls, url: str, origin: Origin) -> StandInFile:
        made = super().__new__(cls, url)
        made._origin = origin
        return made

    def _not_a_list(self) -> str:
        origin = self._origin
        return f"{origin.label} is one file URL ({origin.model.ref} returns a single file), not a list"

    def __getitem__(self, index: SupportsIndex | slice) -> str:
        raise ShapeError(f"{self._not_a_list()}: use it without [{_shown_index(index)}]")

    def __iter__(self) -> Iterator[str]:
        raise ShapeError(f"{self._not_a_list()}: there is nothing to loop over")


class StandInList(list[Any]):
    """A list a step hands on; indexing past its end is a ShapeError when its length is an upper bound.

    ``why`` says where the length comes from (``num_outputs: 2``); ``filler`` makes the entry for any
    index when the length is not known at planning (then no index is refused).
    """

    def __init__(
        self,
        items: Sequence[Any],
        *,
        label: str,
        why: str,
        noun: str = "files",
        filler: Callable[[int], Any] | None = None,
    ) -> None:
        super().__init__(items)
        # underscored: templates cannot read them (the sandbox hides such attributes)
        self._label, self._why, self._noun, self._filler = label, why, noun, filler

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int) and not -len(self) <= index < len(self):
            if self._filler is not None:
                return self._filler(index)
            shown = _count(len(self), self._noun)
            raise ShapeError(f"{self._label} has {shown} ({self._why}), so there is no [{index}]")
        return super().__getitem__(index)


def stand_in(step_id: str, model: ModelSpec, values: Mapping[str, Any], *, index: int | None = None) -> Any:
    """What one prediction of ``model`` with input ``values`` hands on (``index``: a foreach item's);
    None when the model's output shape is not known."""
    if model.output_kind == "any":
        return None
    label = f"steps.{step_id}.output" if index is None else f"steps.{step_id}.output[{index}]"
    base = f"https://{HOST}/{step_id}" if index is None else f"https://{HOST}/{step_id}/{index}"
    origin = Origin(label, model)

    def file(i: int) -> StandInFile:
        return StandInFile(f"{base}/{i}.png", Origin(f"{label}[{i}]", model))

    if model.output_kind == "single":
        return StandInFile(f"{base}/0.png", origin)
    count, why = output_count(model, values)
    if count is None:
        return StandInList([file(0)], label=label, why=why, filler=file)
    return StandInList([file(i) for i in range(count)], label=label, why=why)


def fanned_out(step_id: str, outputs: Sequence[Any], *, bounded: bool) -> StandInList:
    """What a foreach step hands on: its items' outputs, in order."""
    label = f"steps.{step_id}.output"
    filler = None if bounded or not outputs else (lambda i: outputs[0])
    why = "one per item of its foreach" if bounded else "one per item of its foreach, known at run time"
    return StandInList(outputs, label=label, why=why, noun="entries", filler=filler)


def output_count(model: ModelSpec, values: Mapping[str, Any]) -> tuple[int | None, str]:
    """The most files one prediction of a list model returns, and why; None when not known."""
    spec = model.inputs.get("num_outputs")
    if spec is None:
        return None, f"{model.ref} returns a list whose length is known at run time"
    value = values.get("num_outputs")
    if value is None:
        value = spec.default
        return (value, f"num_outputs: {value}, the default") if _is_count(value) else (None, "")
    if _is_count(value):
        return value, f"num_outputs: {value}"
    maximum = spec.maximum
    if maximum is not None and float(maximum).is_integer() and maximum >= 0:
        # a template sets it (or a bad value, reported on its own): the schema's maximum bounds it
        return int(maximum), f"num_outputs is at most {int(maximum)}"
    return None, f"{model.ref} returns a list whose length is known at run time"


def is_bounded(value: Any) -> bool:
    """Whether ``value`` is a stand-in list whose real list is certainly no longer."""
    return isinstance(value, StandInList) and value._filler is None


def plain(value: Any) -> Any:
    """``value`` with every stand-in made a plain str or list (what the input checks expect)."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, list):
        return [plain(v) for v in list.__iter__(value)]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def explain(value: Any) -> str:
    """What a stand-in is and how to use it, for a type problem's message; empty for other values."""
    if isinstance(value, StandInList):
        label = value._label
        what = f"a list of {value._noun} ({value._why})"
        return f"{label} is {what}: take one with {label}[0], or fan out over it with foreach"
    if isinstance(value, StandInFile):
        return f"{value._origin.label} is one file URL ({value._origin.model.ref} returns a single file)"
    return ""


def describe(value: Any) -> str | None:
    """How a message names a stand-in file (``one file URL: steps.a.output, ...``); None otherwise."""
    if isinstance(value, StandInFile):
        return f"one file URL ({value._origin.label}; {value._origin.model.ref} returns a single file)"
    return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"1 {noun[:-3] + 'y' if noun.endswith('ies') else noun[:-1]}"
    return f"{n} {noun}"


def _shown_index(index: SupportsIndex | slice) -> str:
    if isinstance(index, slice):
        parts = ["" if p is None else str(p) for p in (index.start, index.stop)]
        return ":".join(parts) + (f":{index.step}" if index.step is not None else "")
    return str(index)

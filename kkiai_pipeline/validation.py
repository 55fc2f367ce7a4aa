"""Checking one step's input against the model catalog, before anything is sent (or paid for).

``validate_input`` returns every problem, in a fixed order: the keys of the input in their order, then
the missing required inputs. A field gets at most one problem, except ``objects_to_remove`` (one per bad
item). ``to_invalid_fields`` gives the ``invalid_fields`` list of the API's 422 answer. Decisions (the
per-model ones are argued in ``docs/schema-doubts.md``):

* Unknown keys are errors, with a did-you-mean and the accepted inputs: a typo such as ``strength`` for
  ``prompt_strength`` would otherwise be ignored by the model while the run is still paid for.
* Types are strict, like the API's JSON-schema check: booleans are not numbers; an ``int`` is a valid
  ``number``; a ``float`` is never an ``integer``, not even ``9.0`` (Hydra and YAML make a float only
  when the user wrote the decimal point; the message says to write ``9``); NaN and infinities are
  refused; numbers are not strings (an unquoted ``16:9`` is the YAML 1.1 base-60 integer 969, and the
  message says so).
* ``None`` (YAML ``null``) means "not set" for an optional input: accepted, and dropped before sending
  (``omit_unset``). For a required input it is a ``required`` problem, as is a blank string.
* Bounds are inclusive. ``EXTRA_*`` tables and ``FIELD_RULES`` add what the schemas lack.
* ``pending`` inputs (unrendered templates) count as present; their values are not checked.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .catalog import InputSpec, ModelSpec

SD = "stability-ai/stable-diffusion"
SDXL = "stability-ai/sdxl"
INPAINTING = "stability-ai/stable-diffusion-inpainting"
IMG2IMG = "stability-ai/stable-diffusion-img2img"
FLUX_SCHNELL = "lucataco/flux-schnell-lora"
FLUX_DEV = "lucataco/flux-dev-lora"
ANIMATION = "andreasjansson/stable-diffusion-animation"
ANIMATE_DIFF = "lucataco/animate-diff"

#: The largest image the stable-diffusion predictor accepts (1024x768); it raises above that.
SD_MAX_PIXELS = 786432


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with one input field.

    ``kind`` is one of ``unknown``, ``type``, ``range``, ``choice``, ``required``, ``format`` or
    ``items``; ``field`` is the input name, or ``input`` for a problem with the input as a whole.
    """

    field: str
    kind: str
    message: str


@dataclass(frozen=True)
class _Context:
    """What a check may look at besides the value: the model and the whole input."""

    model: ModelSpec
    values: Mapping[str, Any]
    pending: Collection[str]

    def effective(self, name: str) -> Any:
        """The value the model will see for ``name``: given, else the default; None if pending."""
        if name in self.pending:
            return None
        value = self.values.get(name)
        return value if value is not None else self.model.inputs[name].default


FieldRule = Callable[[_Context, str, Any], FieldProblem | None]


# --- rules the schema does not carry (data first, the checks below read these tables) ---------------

#: Inputs that are optional in the schema but always needed: a demo default prompt is never wanted.
EXTRA_REQUIRED: Mapping[str, tuple[str, ...]] = {
    SD: ("prompt",),
    SDXL: ("prompt",),
    INPAINTING: ("prompt",),
    IMG2IMG: ("prompt",),
    ANIMATE_DIFF: ("prompt",),
}

#: Inclusive (minimum, maximum) for inputs whose schema has no bounds.
EXTRA_BOUNDS: Mapping[tuple[str, str], tuple[float, float]] = {
    (IMG2IMG, "prompt_strength"): (0, 1),
    (ANIMATION, "prompt_strength"): (0, 1),
    (SDXL, "width"): (128, 1536),
    (SDXL, "height"): (128, 1536),
    (ANIMATE_DIFF, "seed"): (0, 2147483647),
}

#: Integer inputs that must be a multiple of a step (the latent space is 8x smaller than the image).
MULTIPLE_OF: Mapping[tuple[str, str], int] = {(SDXL, "width"): 8, (SDXL, "height"): 8}

#: A sentence added to the "unknown input" message where a plain did-you-mean would mislead.
UNKNOWN_HINTS: Mapping[tuple[str, str], str] = {
    (FLUX_SCHNELL, "guidance_scale"): "flux-schnell has no guidance scale (it is fixed at 0)",
    (IMG2IMG, "width"): "the output size follows the input image",
    (IMG2IMG, "height"): "the output size follows the input image",
}


def required_inputs(model: ModelSpec) -> list[str]:
    """The inputs a step must give for ``model``: the schema's plus ``EXTRA_REQUIRED``."""
    extra = EXTRA_REQUIRED.get(model.ref, ())
    return [name for name, spec in model.inputs.items() if spec.required or name in extra]


def bounds(model: ModelSpec, name: str) -> tuple[float | None, float | None]:
    """The inclusive (minimum, maximum) enforced for an input; None where there is no limit."""
    spec = model.inputs[name]
    if spec.minimum is not None or spec.maximum is not None:
        return spec.minimum, spec.maximum
    return EXTRA_BOUNDS.get((model.ref, name), (None, None))


def multiple_of(model: ModelSpec, name: str) -> int | None:
    """The step an integer input must be a multiple of, if any."""
    return MULTIPLE_OF.get((model.ref, name))


# --- the public entry points ------------------------------------------------------------------------


def validate_input(
    model: ModelSpec, values: Mapping[str, Any], *, pending: Collection[str] = ()
) -> list[FieldProblem]:
    """Every problem of one step's input; `pending` names fields whose values are templates not yet
    rendered: they count as present (for required) but their values are not checked."""
    if not isinstance(values, Mapping):
        got = describe(values)
        return [FieldProblem("input", "type", f"the input must be a mapping of names to values, got {got}")]
    ctx = _Context(model, values, frozenset(pending))
    problems: list[FieldProblem] = []
    for key, value in values.items():
        problems += _check_key(ctx, str(key), value)
    for name in required_inputs(model):
        if name not in values and name not in ctx.pending:
            message = f"{name} is required by {model.ref} but is missing"
            problems.append(FieldProblem(name, "required", message))
    return problems


def to_invalid_fields(problems: Sequence[FieldProblem]) -> list[dict[str, str]]:
    """The API's 422 shape: [{"type": kind, "field": "input.<name>", "description": message}]."""
    fields = [(p, "input" if p.field == "input" else f"input.{p.field}") for p in problems]
    return [{"type": p.kind, "field": field, "description": p.message} for p, field in fields]


def omit_unset(values: Mapping[str, Any]) -> dict[str, Any]:
    """The input without its ``None`` values, which mean "not set" and are not sent."""
    return {key: value for key, value in values.items() if value is not None}


# --- one key ----------------------------------------------------------------------------------------


def _check_key(ctx: _Context, name: str, value: Any) -> list[FieldProblem]:
    spec = ctx.model.inputs.get(name)
    if spec is None:
        return [_unknown(ctx.model, name)]
    if name in ctx.pending:
        return []
    problem = _check_value(ctx, spec, value)
    if problem is not None:
        return [problem]
    if spec.allowed_items is not None:
        return list(_check_items(name, value, spec.allowed_items))
    return []


def _check_value(ctx: _Context, spec: InputSpec, value: Any) -> FieldProblem | None:
    blank = isinstance(value, str) and not value.strip()
    if value is None or (blank and spec.name in required_inputs(ctx.model)):
        return _check_unset(ctx, spec, value)
    checks = (
        _check_type,
        _check_length,
        _check_range,
        _check_multiple,
        _check_choice,
        _check_file,
        _check_list,
    )
    for check in checks:
        problem = check(ctx, spec, value)
        if problem is not None:
            return problem
    rule = FIELD_RULES.get((ctx.model.ref, spec.name))
    return rule(ctx, spec.name, value) if rule is not None and not blank else None


def _unknown(model: ModelSpec, name: str) -> FieldProblem:
    hint = UNKNOWN_HINTS.get((model.ref, name))
    close = difflib.get_close_matches(name, list(model.inputs), n=1, cutoff=0.6)
    if hint is None and close:
        hint = f"did you mean '{close[0]}'?"
    head = f"unknown input '{name}'" + (f"; {hint}" if hint else "")
    return FieldProblem(name, "unknown", f"{head} ({model.ref} accepts: {', '.join(model.inputs)})")


def _check_unset(ctx: _Context, spec: InputSpec, value: Any) -> FieldProblem | None:
    """None (not set) is fine for an optional input; None or blank is a problem for a required one."""
    if spec.name not in required_inputs(ctx.model):
        return None
    what = "null" if value is None else "empty"
    return FieldProblem(spec.name, "required", f"{spec.name} is required by {ctx.model.ref} but is {what}")


_EXPECTED = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
}


def _check_type(ctx: _Context, spec: InputSpec, value: Any) -> FieldProblem | None:
    if _has_type(spec.type, value):
        return None
    message = f"{spec.name} must be {_EXPECTED[spec.type]}, got {describe(value)}"
    return FieldProblem(spec.name, "type", message + _type_hint(spec, value))


#: The longest text (not file) input sent: prompts are read as a few hundred tokens at most, so a longer
#: one is a mistake (a template gone wrong), and it must not become a request of megabytes.
MAX_TEXT_CHARS = 100_000


def _check_length(ctx: _Context, spec: InputSpec, value: Any) -> FieldProblem | None:
    if spec.is_file or not isinstance(value, str) or len(value) <= MAX_TEXT_CHARS:
        return None
    message = f"{spec.name} is {len(value):,} characters long; text inputs are limited to {MAX_TEXT_CHARS:,}"
    return FieldProblem(spec.name, "range", message)


def _has_type(expected: str, value: Any) -> bool:
    if expected == "array":
        return isinstance(value, list)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "string":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if expected == "integer":
        return isinstance(value, int)
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _type_hint(spec: InputSpec, value: Any) -> str:
    if spec.type == "integer" and isinstance(value, float) and value.is_integer():
        return f"; write {int(value)} without the decimal point"
    if spec.type == "string" and not spec.is_file and _has_type("integer", value):
        ratio = _sexagesimal(value, spec.choices or ())
        if ratio is not None:
            return f"; YAML reads an unquoted {ratio} as the number {value}, so quote it: '{ratio}'"
        return "; quote it in YAML"
    if isinstance(value, float) and not math.isfinite(value):
        return "; NaN and infinity are not allowed"
    return ""


def _sexagesimal(value: int, choices: Sequence[Any]) -> str | None:
    """The ``a:b`` choice that YAML 1.1 turned into the integer ``a*60+b``, if there is one."""
    pairs = {c: pair for c in choices if (pair := _pair(c)) is not None}
    return next((c for c, (a, b) in pairs.items() if a * 60 + b == value), None)


def _check_range(ctx: _Context, spec: InputSpec, value: Any) -> FieldProblem | None:
    if spec.type not in ("integer", "number"):
        return None
    low, high = bounds(ctx.model, spec.name)
    if (low is None or value >= low) and (high is None or value <= high):
        return None
    if low is not None and high is not None:
        allowed = f"between {_num(low)} and {_num(high)} (inclusive)"
    else:
        allowed = f"at least {_num(low)}" if high is None else f"at most {_num(high)}"
    return FieldProblem(spec.name, "range", f"{spec.name} must be {allowed}, got {_num(value)}")


def _check_multiple(ctx: _Context, spec: InputSpec, value: Any) -> FieldProblem | None:
    step = multiple_of(ctx.model, spec.name)
    if step is None or value % step == 0:
        return None
    below = value - value % step
    low, high = bounds(ctx.model, spec.name)
    near = [n for n in (below, below + step) if (low is None or n >= low) and (high is None or n <= high)]
    hint = f"; try {' or '.join(str(n) for n in near)}" if near else ""
    return FieldProblem(spec.name, "range", f"{spec.name} must be a multiple of {step}, got {value}{hint}")


def _check_choice(ctx: _Context, spec: InputSpec, value: Any) -> FieldProblem | None:
    if spec.choices is None or value in spec.choices:
        return None
    allowed = ", ".join(str(c) for c in spec.choices)
    message = f"{spec.name} must be one of {allowed}; got {_show(value)}"
    guess = _closest_choice(value, spec.choices)
    hint = f"; did you mean {_show(guess)}?" if guess is not None else ""
    return FieldProblem(spec.name, "choice", message + hint)


def _closest_choice(value: Any, choices: Sequence[Any]) -> Any:
    wanted = _ratio(value)
    shapes = {c: r for c in choices if (r := _ratio(c)) is not None}
    if wanted is not None and len(shapes) == len(choices):  # aspect ratios: the nearest shape
        return min(shapes, key=lambda c: abs(math.log(shapes[c] / wanted)))
    if isinstance(value, str):
        return _closest_name(value, [str(c) for c in choices])
    numbers = [c for c in choices if isinstance(c, (int, float))]
    return min(numbers, key=lambda c: abs(c - value)) if numbers else None


def _check_file(ctx: _Context, spec: InputSpec, value: Any) -> FieldProblem | None:
    if not spec.is_file or not isinstance(value, str) or _is_url(value) or value.startswith("data:"):
        return None
    message = f"{spec.name} must be an http:// or https:// URL or a data: URI, got {_show(value)}"
    return FieldProblem(spec.name, "format", message)


def _check_list(ctx: _Context, spec: InputSpec, value: Any) -> FieldProblem | None:
    """An array input: each item of its ``items`` type and, for files, a URL (the first bad one is named)."""
    if spec.type != "array" or spec.items is None:
        return None
    for index, item in enumerate(value):
        where = f"{spec.name}[{index}]"
        if not _has_type(spec.items, item):
            return FieldProblem(
                spec.name, "type", f"{where} must be {_EXPECTED[spec.items]}, got {describe(item)}"
            )
        if spec.is_file and isinstance(item, str) and not (_is_url(item) or item.startswith("data:")):
            message = f"{where} must be an http:// or https:// URL or a data: URI, got {_show(item)}"
            return FieldProblem(spec.name, "format", message)
    return None


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _check_items(name: str, value: str, allowed: Sequence[str]) -> Iterator[FieldProblem]:
    """objects_to_remove: comma-separated names, no spaces after commas, each one of ``allowed``."""
    rule = "names are comma-separated without spaces and case-sensitive"
    if not value.strip():
        yield FieldProblem(name, "items", f"{name} is empty; name at least one of: {', '.join(allowed)}")
        return
    for item in value.split(","):
        if item in allowed:
            continue
        if not item.strip():
            message = f"{name} has an empty item in {_show(value)}; {rule}"
        elif item.strip() in allowed:
            message = f"{name} item {_show(item)} has a space; {rule}: write '{item.strip()}'"
        else:
            guess = _closest_name(item.strip(), list(allowed))
            hint = f"did you mean '{guess}'?" if guess is not None else f"allowed: {', '.join(allowed)}"
            message = f"{name} item {_show(item)} is not a known class; {hint} ({rule})"
        yield FieldProblem(name, "items", message)


# --- model-specific rules on one field --------------------------------------------------------------


def _sdxl_mask_needs_image(ctx: _Context, name: str, value: Any) -> FieldProblem | None:
    if "image" in ctx.pending or ctx.values.get("image") is not None:
        return None
    message = f"{name} is used only together with image; add an image or drop the {name}"
    return FieldProblem(name, "required", message)


def _sd_area(ctx: _Context, name: str, value: Any) -> FieldProblem | None:
    """Reported once, at whichever of width and height comes last in the input."""
    if [key for key in ctx.values if key in ("width", "height")][-1] != name:
        return None
    width, height = ctx.effective("width"), ctx.effective("height")
    if not (_has_type("integer", width) and _has_type("integer", height)) or width * height <= SD_MAX_PIXELS:
        return None
    message = (
        f"width x height = {width}x{height} ({width * height} pixels) is more than {ctx.model.ref} allows: "
        f"at most {SD_MAX_PIXELS} pixels, e.g. 1024x768 or 768x1024"
    )
    return FieldProblem(name, "range", message)


def _lora_ref(ctx: _Context, name: str, value: Any) -> FieldProblem | None:
    owner, sep, repo = value.partition("/")
    if _is_url(value) or (sep and owner and repo and "/" not in repo and " " not in value):
        return None
    message = f"{name} must be a Hugging Face repo (owner/name) or an http(s) URL, got {_show(value)}"
    return FieldProblem(name, "format", message)


def _weights_url(ctx: _Context, name: str, value: Any) -> FieldProblem | None:
    if _is_url(value):
        return None
    message = f"{name} must be an http:// or https:// URL of a LoRA weights tar, got {_show(value)}"
    return FieldProblem(name, "format", message)


FIELD_RULES: Mapping[tuple[str, str], FieldRule] = {
    (SDXL, "mask"): _sdxl_mask_needs_image,
    (SDXL, "replicate_weights"): _weights_url,
    (SD, "width"): _sd_area,
    (SD, "height"): _sd_area,
    (FLUX_SCHNELL, "hf_lora"): _lora_ref,
    (FLUX_DEV, "hf_lora"): _lora_ref,
}


# --- small helpers ----------------------------------------------------------------------------------


def _closest_name(value: str, names: Sequence[str]) -> str | None:
    folded = {n.casefold(): n for n in names}
    if value.casefold() in folded:
        return folded[value.casefold()]
    close = difflib.get_close_matches(value.casefold(), list(folded), n=1, cutoff=0.6)
    if close:
        return folded[close[0]]
    # one word of a longer name: "tv" for "tv/monitor", "table" for "dining table"
    words = [n for n in names if value.casefold() in n.casefold().replace("/", " ").split()]
    return words[0] if words else None


def _pair(value: Any) -> tuple[int, int] | None:
    """``"16:9"`` as (16, 9); None for anything that is not a string ``a:b`` of two numbers."""
    head, sep, tail = str(value).partition(":")
    ok = isinstance(value, str) and sep and head.isdigit() and tail.isdigit()
    return (int(head), int(tail)) if ok else None


def _ratio(value: Any) -> float | None:
    pair = _pair(value)
    return pair[0] / pair[1] if pair is not None and pair[0] and pair[1] else None


def _num(value: float | None) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _show(value: Any, limit: int = 60) -> str:
    """A value as a message quotes it; long ones (data: URIs) are cut."""
    text = repr(value)
    closing = text[-1] if isinstance(value, str) else ""
    return text if len(text) <= limit else f"{text[: limit - 4]}...{closing}"


def describe(value: Any) -> str:
    """A value as a type problem names it: ``2 (an integer)``, ``the string 'x'``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value!r} (a float)"
    if isinstance(value, str):
        return f"the string {_show(value)}"
    return "a mapping" if isinstance(value, Mapping) else f"a {type(value).__name__}"

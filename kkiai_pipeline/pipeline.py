"""The declarative model of a pipeline file: Pipeline and Step, and turning YAML into them.

A pipeline file::

    name: product_shots
    description: ...
    params: {subject: "a ceramic mug"}
    steps:
      generate:
        model: stability-ai/sdxl
        input: {prompt: "{{ params.subject }} on marble", num_outputs: 2}
        needs: []            # optional extra dependencies
        timeout: 600         # optional: cancel the prediction after this many seconds
        retries: 1           # optional: run a failed prediction again, up to this many times
        cache: false         # optional: never reuse a cached result for this step
        foreach: "{{ steps.generate.output }}"   # optional: one prediction per item ({{ item }}, {{ index }})
        backend: cog         # optional: run on a self-hosted Cog server (cog.servers) instead of the API

Loading collects every problem of the file (unknown keys with a did-you-mean, a step without a model,
wrong shapes) and raises them together as one PipelineError.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import pipeline_yaml
from .errors import PipelineError, Problem

PIPELINE_KEYS = ("name", "description", "params", "steps")
STEP_KEYS = ("model", "input", "needs", "description", "timeout", "retries", "cache", "foreach", "backend")
BACKENDS = ("api", "cog")
MAX_RETRIES = 10
STEP_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Step:
    """One prediction to make: a model and its (possibly templated) input."""

    id: str
    model: str
    input: Mapping[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    description: str = ""
    timeout: float | None = None  # seconds; None means the run's default
    retries: int = 0  # how many times a *failed* prediction is run again
    cache: bool = True  # False: always run, never store
    foreach: Any = None  # a list, or a template giving one: one prediction per item
    backend: str | None = None  # "api" or "cog"; None: the run's default (cog with api=cog)


@dataclass(frozen=True)
class Pipeline:
    """A named set of steps; ``source`` is the file it came from (for messages and local files)."""

    name: str
    steps: Mapping[str, Step]
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    source: Path | None = None


def read_pipeline_file(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path``, read bounded and strict (see pipeline_yaml); every problem becomes a
    PipelineError naming the file and, where the file has one, the line."""
    text = ""
    try:
        text = pipeline_yaml.read_text(path)
        data = pipeline_yaml.load(text)
    except pipeline_yaml.YAMLProblem as exc:
        syntax = "YAML syntax error: " if text else ""
        hint = _quote_hint(_line(text, exc.line))
        raise PipelineError([Problem(f"{syntax}{exc.message}{hint}", file=path, line=exc.line)]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PipelineError([Problem("a pipeline file must be a mapping (name, params, steps)", file=path)])
    try:
        pipeline_yaml.check_interpolations(data)
    except pipeline_yaml.YAMLProblem as exc:
        raise PipelineError([Problem(exc.message, file=path, field=exc.field)]) from exc
    for dotted, value in pipeline_yaml.interpolated(data):
        try:
            OmegaConf.create({"value": value})  # what Hydra will do with it: an invalid ${...} fails here
        except OmegaConfBaseException as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            problem = Problem(f"invalid ${{...}} interpolation: {reason}", file=path, field=dotted)
            raise PipelineError([problem]) from exc
    return data


def _line(text: str, line: int | None) -> str:
    """Line ``line`` (1-based) of ``text``; empty past the end (an error at the end of the file)."""
    lines = text.splitlines()
    return lines[line - 1] if line is not None and 0 < line <= len(lines) else ""


def _quote_hint(line: str) -> str:
    # An unquoted {{ ... }} starts a YAML flow mapping: by far the most common cause, so say so.
    if re.search(r":\s*\{\{", line):
        return ' (a value that starts with a template must be quoted: prompt: "{{ params.subject }}")'
    return ""


def parse_pipeline(
    data: Mapping[str, Any], *, source: Path | None = None, default_name: str = ""
) -> Pipeline:
    """Build a Pipeline from a plain mapping; every problem is collected, then raised together."""
    problems: list[Problem] = []
    problems += _unknown_keys(data, PIPELINE_KEYS, "pipeline", source=source)
    name = data.get("name") or default_name
    if not isinstance(name, str) or not name:
        problems.append(Problem("'name' must be a non-empty string", file=source, field="name"))
        name = default_name
    params = data.get("params") or {}
    if not isinstance(params, Mapping):
        problems.append(Problem("'params' must be a mapping of names to values", file=source, field="params"))
        params = {}
    raw_steps = data.get("steps")
    steps: dict[str, Step] = {}
    if not isinstance(raw_steps, Mapping) or not raw_steps:
        problems.append(
            Problem("'steps' must be a non-empty mapping of step ids", file=source, field="steps")
        )
    else:
        for step_id, raw in raw_steps.items():
            step = _parse_step(str(step_id), raw, source=source, problems=problems)
            if step is not None:
                steps[step.id] = step
    if problems:
        raise PipelineError(problems, pipeline=name or None)
    description = data.get("description") or ""
    return Pipeline(name=name, steps=steps, params=dict(params), description=str(description), source=source)


def _parse_step(step_id: str, raw: Any, *, source: Path | None, problems: list[Problem]) -> Step | None:
    def problem(message: str, field: str | None = None) -> None:
        problems.append(Problem(message, file=source, step=step_id, field=field))

    if not isinstance(raw, Mapping):
        problem("a step must be a mapping with 'model' and 'input'")
        return None
    found = len(problems)
    if not STEP_ID.fullmatch(step_id):
        problem("a step id uses letters, digits, '_' and '-', and starts with a letter or '_'")
    problems += _unknown_keys(raw, STEP_KEYS, "step", source=source, step=step_id)
    model = raw.get("model")
    if not isinstance(model, str) or not model.strip():
        problem("missing 'model' (owner/name of a supported model)")
    inputs = raw.get("input") or {}
    if not isinstance(inputs, Mapping):
        problem("'input' must be a mapping", "input")
    needs = raw.get("needs") or []
    needs = [needs] if isinstance(needs, str) else needs
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        problem("'needs' must be a list of step ids", "needs")
    timeout = raw.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        problem(f"'timeout' must be a number of seconds > 0, not {timeout!r}", "timeout")
    retries = raw.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        problem(f"'retries' must be a whole number from 0 to {MAX_RETRIES}, not {retries!r}", "retries")
    cache = raw.get("cache", True)
    if not isinstance(cache, bool):
        problem(f"'cache' must be true or false, not {cache!r}", "cache")
    backend = raw.get("backend")
    if backend is not None and backend not in BACKENDS:
        problem(f"'backend' must be one of {', '.join(BACKENDS)}, not {backend!r}", "backend")
    foreach = raw.get("foreach")
    if foreach is not None and not isinstance(foreach, str | list):
        problem("'foreach' must be a list or a template giving one", "foreach")
    if len(problems) > found:
        return None
    return Step(
        id=step_id,
        model=str(model).strip(),
        input=dict(inputs),
        needs=tuple(needs),
        description=str(raw.get("description") or ""),
        timeout=float(timeout) if timeout is not None else None,
        retries=retries,
        cache=cache,
        foreach=foreach,
        backend=backend,
    )


def _unknown_keys(
    data: Mapping[str, Any],
    known: tuple[str, ...],
    what: str,
    *,
    source: Path | None,
    step: str | None = None,
) -> list[Problem]:
    problems = []
    for key in data:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f" (a {what} has: {', '.join(known)})"
        shown = _shown(str(key))
        problems.append(Problem(f"unknown key '{shown}'{hint}", file=source, step=step, field=shown))
    return problems


def _shown(text: str, limit: int = 60) -> str:
    """A name as messages quote it: long ones (a hostile file's) are cut."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."

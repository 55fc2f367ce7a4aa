"""Pipeline -> Plan: resolve models, compile templates, build the DAG; every error found, raised once.

The plan holds the steps in a topological order with their level (0 for steps without dependencies,
1 + the deepest dependency otherwise). Dependencies are the ``steps.<id>`` references found by walking
each template's syntax tree, plus the step's ``needs``.
"""

from __future__ import annotations

import difflib
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import standins
from .catalog import Catalog, ModelSpec
from .errors import PipelineError, Problem, UnknownModelError
from .pipeline import Pipeline, Step
from .rowfiles import Rows
from .templating import Template, TemplateProblem, Templates, is_template, shorten
from .validation import describe, validate_input

CONTEXT_NAMES = frozenset({"steps", "params"})
ITEM_NAMES = frozenset({"item", "index"})  # what a foreach step's input templates may read besides
#: How many items of a foreach list the shape check renders a step's input with (the first ones).
CHECKED_ITEMS = 100
#: How many bad items of a foreach over known items (a list, or a file's rows) are named for one field;
#: the rest are counted.
ROW_PROBLEMS_SHOWN = 20
#: What the shape check may spend on one pipeline; it leaves what it has not reached to run time
#: (each rendering has its own budget, but a hostile file may hold thousands of slow templates).
SHAPE_CHECK_SECONDS = 10.0


@dataclass(frozen=True)
class PlannedStep:
    """A step whose model is known and whose templates are compiled."""

    step: Step
    model: ModelSpec
    input: Mapping[str, Any]  # static values, with Template objects where a template stood
    depends_on: frozenset[str]
    level: int
    foreach: Any = None  # None, a static list, or the Template giving the list

    @property
    def id(self) -> str:
        return self.step.id

    @property
    def templated_fields(self) -> frozenset[str]:
        """Top-level input names whose value is (or contains) a template."""
        return frozenset(k for k, v in self.input.items() if _contains_template(v))


@dataclass(frozen=True)
class Plan:
    """The executable form of a pipeline: steps in dependency order."""

    pipeline: Pipeline
    steps: tuple[PlannedStep, ...]

    def __getitem__(self, step_id: str) -> PlannedStep:
        return next(s for s in self.steps if s.id == step_id)

    def dependents(self, step_id: str) -> Iterator[PlannedStep]:
        """Every step that depends on ``step_id``, directly or not."""
        reached = {step_id}
        for step in self.steps:
            if step.depends_on & reached:
                reached.add(step.id)
                yield step


def plan(pipeline: Pipeline, *, catalog: Catalog, templates: Templates, seed: int | None = None) -> Plan:
    """Check and order ``pipeline``; raises PipelineError listing all problems.

    Templates that read only ``params`` (and local files) are rendered here, so that their values are
    checked like literal ones. With a ``seed``, every step whose model takes a ``seed`` input and does
    not set one gets a seed derived from (seed, step id).
    """
    problems: list[Problem] = []
    compiled: dict[str, tuple[ModelSpec | None, dict[str, Any], set[str]]] = {}
    foreachs: dict[str, Any] = {}
    for step in pipeline.steps.values():
        compiled[step.id] = _compile_step(pipeline, step, catalog, templates, problems)
        if step.foreach is not None:
            foreachs[step.id] = _compile_foreach(pipeline, step, templates, compiled[step.id][2], problems)
        model, values, _ = compiled[step.id]
        if model is not None:
            if seed is not None and "seed" in model.inputs and "seed" not in values:
                values["seed"] = derive_seed(seed, step.id)
            _validate_static(pipeline, step, model, values, problems)
    deps = {sid: frozenset(refs) for sid, (_, _, refs) in compiled.items()}
    order = _topological_order(pipeline, deps, problems)
    _check_shapes(pipeline, order, compiled, foreachs, problems)
    if problems:
        raise PipelineError(problems, pipeline=pipeline.name)
    levels: dict[str, int] = {}
    planned = []
    for sid in order:
        levels[sid] = 1 + max((levels[d] for d in deps[sid]), default=-1)
        model, values, _ = compiled[sid]
        assert model is not None
        foreach = foreachs.get(sid)
        planned.append(PlannedStep(pipeline.steps[sid], model, values, deps[sid], levels[sid], foreach))
    return Plan(pipeline, tuple(planned))


def _compile_step(
    pipeline: Pipeline, step: Step, catalog: Catalog, templates: Templates, problems: list[Problem]
) -> tuple[ModelSpec | None, dict[str, Any], set[str]]:
    def problem(message: str, field: str | None = None) -> None:
        problems.append(Problem(message, file=pipeline.source, step=step.id, field=field))

    model: ModelSpec | None = None
    try:
        model = catalog.resolve(step.model)
    except UnknownModelError as exc:
        problem(str(exc), "model")
    refs: set[str] = set()
    for need in step.needs:
        if need not in pipeline.steps:
            problem(f"'needs' names unknown step '{need}'{_did_you_mean(need, pipeline.steps)}", "needs")
        refs.add(need)
    values = {}
    for name, value in step.input.items():
        known_problems = len(problems)
        errors: list[str] = []
        found: list[Template] = []
        values[name] = _compile_value(value, templates, errors=errors, found=found)
        for message in errors:
            problem(message, f"input.{name}")
        allowed = CONTEXT_NAMES | ITEM_NAMES if step.foreach is not None else CONTEXT_NAMES
        for template in found:
            _check_template(pipeline, template, f"input.{name}", refs, problem, allowed=allowed)
        reads_item = any(t.references.names & ITEM_NAMES for t in found)
        if (
            found
            and len(problems) == known_problems
            and not reads_item
            and not any(t.references.steps for t in found)
        ):
            # Only params (and local files) are read: render now, so the value is checked like a literal.
            try:
                values[name] = _render_value(values[name], {"params": pipeline.params, "steps": {}})
            except TemplateProblem as exc:
                problem(str(exc), f"input.{name}")
    return model, values, refs


def _validate_static(
    pipeline: Pipeline, step: Step, model: ModelSpec, values: Mapping[str, Any], problems: list[Problem]
) -> None:
    pending = {k for k, v in values.items() if _contains_template(v)}
    for found in validate_input(model, values, pending=pending):
        problems.append(
            Problem(found.message, file=pipeline.source, step=step.id, field=f"input.{found.field}")
        )


def _check_shapes(
    pipeline: Pipeline,
    order: list[str],
    compiled: Mapping[str, tuple[ModelSpec | None, dict[str, Any], set[str]]],
    foreachs: Mapping[str, Any],
    problems: list[Problem],
) -> None:
    """Render what reads step outputs against stand-ins of the right shape (see :mod:`.standins`).

    Reports only what the shapes decide: a list where one value is expected (or the reverse), an
    index past the end of a list, a ``foreach`` over something that is not a list. A template that
    cannot be rendered on stand-ins for any other reason is left to run time, as is every step whose
    model or upstream step is unknown.
    """
    outputs: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + SHAPE_CHECK_SECONDS
    for sid in order:
        model, values, _ = compiled[sid]
        if time.monotonic() > deadline:
            return
        if model is not None:
            context = {"params": pipeline.params, "steps": outputs}
            output = _checked_step(pipeline, sid, model, values, foreachs.get(sid), context, problems)
            if output is not None:
                outputs[sid] = {"output": output}


def _checked_step(
    pipeline: Pipeline,
    sid: str,
    model: ModelSpec,
    values: Mapping[str, Any],
    foreach: Any,
    context: Mapping[str, Any],
    problems: list[Problem],
) -> Any:
    """Check one step's templated inputs on stand-ins; returns its own stand-in output (None: unknown)."""

    def problem(message: str, field: str) -> None:
        problems.append(Problem(message, file=pipeline.source, step=sid, field=field))

    if pipeline.steps[sid].foreach is None:
        if any(_contains_template(v) for v in values.values()):
            _check_rendered(model, values, context, problem)
        return standins.stand_in(sid, model, values)
    found = _foreach_items(foreach, context, problem)
    if found is None:
        return None
    items, bounded = found
    exact = not isinstance(foreach, Template) or not foreach.references.steps  # the run's very items
    if exact:
        _check_rows(model, values, items, context, problem)
    else:
        reported: set[str] = set()
        for index, item in enumerate(items[:CHECKED_ITEMS]):
            scope = {**context, "item": item, "index": index}
            _check_rendered(model, values, scope, problem, prefix=f"item {index}: ", reported=reported)
    each = [standins.stand_in(sid, model, values, index=i) for i in range(len(items))]
    if any(output is None for output in each):  # an output of unknown shape: left to run time
        return None
    return standins.fanned_out(sid, each, bounded=bounded)


def _check_rows(
    model: ModelSpec,
    values: Mapping[str, Any],
    items: list[Any],
    context: Mapping[str, Any],
    problem: Callable[[str, str], None],
) -> None:
    """Check the input of every item of a ``foreach`` whose items are known (a list, or rows read from
    a file): the fields that read no step output are checked in full, as they will be sent; the others
    on stand-ins, as for one step. Each bad row is named (``prompts.txt line 17``), at most
    ``ROW_PROBLEMS_SHOWN`` a field, the rest counted."""
    exact = frozenset(k for k, v in values.items() if _contains_template(v) and not _reads_steps(v))
    counts: dict[str, int] = {}
    reported: set[str] = set()
    where = items.where if isinstance(items, Rows) else None
    deadline = time.monotonic() + SHAPE_CHECK_SECONDS
    for index, item in enumerate(items):
        if index % 256 == 0 and time.monotonic() > deadline:
            break  # a pathological template: what is left is checked item by item before sending

        def row_problem(message: str, field: str, index: int = index) -> None:
            counts[field] = counts.get(field, 0) + 1
            if counts[field] <= ROW_PROBLEMS_SHOWN:
                row = f"{where(index)} (item {index})" if where else f"item {index}"
                problem(f"{row}: {message}", field)

        scope = {**context, "item": item, "index": index}
        _check_rendered(model, values, scope, row_problem, reported=reported, exact=exact)
    for field, count in counts.items():
        if count > ROW_PROBLEMS_SHOWN:
            problem(f"... and {count - ROW_PROBLEMS_SHOWN:,} more items with a problem here", field)


def _foreach_items(
    foreach: Any, context: Mapping[str, Any], problem: Callable[[str, str], None]
) -> tuple[list[Any], bool] | None:
    """A foreach step's items on stand-ins, and whether their count is certain; None when unknown."""
    if not isinstance(foreach, Template):
        return (foreach, True) if isinstance(foreach, list) else None
    shown = shorten(foreach.source)
    try:
        items = foreach.render(context)
    except TemplateProblem as exc:
        if isinstance(exc.__cause__, standins.ShapeError):
            problem(f"{exc.__cause__} (in '{shown}')", "foreach")
        elif not foreach.references.steps:  # params and files only: it fails the same way at run time
            problem(str(exc), "foreach")
        return None
    if not isinstance(items, list):
        what = standins.describe(items) or describe(items)
        problem(f"foreach must give a list, but '{shown}' gives {what}", "foreach")
        return None
    # A count made from stand-ins through filters may differ at run time (their URLs are made up).
    bounded = not foreach.references.steps or standins.is_bounded(items)
    return items, bounded


def _check_rendered(
    model: ModelSpec,
    values: Mapping[str, Any],
    context: Mapping[str, Any],
    problem: Callable[[str, str], None],
    *,
    prefix: str = "",
    reported: set[str] | None = None,
    exact: frozenset[str] = frozenset(),
) -> None:
    """Render the templated inputs on stand-ins; report shape errors and type problems, once a field.

    The ``exact`` fields read no step output: their rendered value is the one sent, and every problem
    with it is reported, each time.
    """
    reported = set() if reported is None else reported
    rendered: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    unknown: set[str] = set()
    for name, value in values.items():
        if not _contains_template(value):
            rendered[name] = value
            continue
        try:
            raw[name] = _render_value(value, context)
        except TemplateProblem as exc:
            unknown.add(name)
            if name in exact:
                problem(f"{prefix}{exc}", f"input.{name}")
            elif isinstance(exc.__cause__, standins.ShapeError) and name not in reported:
                reported.add(name)
                problem(f"{prefix}{exc.__cause__} (in '{_source(value)}')", f"input.{name}")
            continue
        rendered[name] = standins.plain(raw[name])
    for found in validate_input(model, rendered, pending=unknown):
        if found.field in exact:
            hint = _number_hint(model, found.field, rendered.get(found.field)) if found.kind == "type" else ""
            problem(f"{prefix}{found.message}{hint}", f"input.{found.field}")
            continue
        if found.kind != "type" or found.field not in raw or found.field in reported:
            continue
        reported.add(found.field)
        hint = standins.explain(raw[found.field])
        problem(f"{prefix}{found.message}" + (f"; {hint}" if hint else ""), f"input.{found.field}")


def _number_hint(model: ModelSpec, name: str, value: Any) -> str:
    """For a text where a number is expected (CSV values are texts): the filter that converts it."""
    spec = model.inputs.get(name)
    if spec is None or spec.type not in ("integer", "number") or not isinstance(value, str):
        return ""
    convert = "int" if spec.type == "integer" else "float"
    return f"; texts (such as CSV values) become numbers with | {convert}"


def _source(value: Any) -> str:
    """The (first) template text in an input value, as messages quote it."""
    if isinstance(value, Template):
        return shorten(value.source)
    inner = value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else ()
    return next((s for s in (_source(v) for v in inner) if s), "")


def derive_seed(seed: int, step_id: str) -> int:
    """A seed for one step, the same for the same (seed, step id) on every machine."""
    digest = hashlib.sha256(f"{seed}:{step_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _compile_foreach(
    pipeline: Pipeline, step: Step, templates: Templates, refs: set[str], problems: list[Problem]
) -> Any:
    """The step's ``foreach``: a static list, or a template (its step references become dependencies)."""

    def problem(message: str, field: str = "foreach") -> None:
        problems.append(Problem(message, file=pipeline.source, step=step.id, field=field))

    if isinstance(step.foreach, list):
        return step.foreach
    try:
        template = templates.parse(step.foreach)
    except TemplateProblem as exc:
        problem(str(exc))
        return None
    _check_template(pipeline, template, "foreach", refs, problem, allowed=CONTEXT_NAMES)
    return template


def _compile_value(value: Any, templates: Templates, *, errors: list[str], found: list[Template]) -> Any:
    """``value`` with its template strings parsed; syntax errors go to ``errors``."""
    if isinstance(value, Mapping):
        return {k: _compile_value(v, templates, errors=errors, found=found) for k, v in value.items()}
    if isinstance(value, list):
        return [_compile_value(v, templates, errors=errors, found=found) for v in value]
    if not is_template(value):
        return value
    try:
        template = templates.parse(value)
    except TemplateProblem as exc:
        errors.append(str(exc))
        return value
    found.append(template)
    return template


def _check_template(
    pipeline: Pipeline,
    template: Template,
    field: str,
    refs: set[str],
    problem: Callable[[str, str], None],
    *,
    allowed: frozenset[str],
) -> None:
    for unknown in sorted(template.references.names - allowed):
        names = ", ".join(sorted(allowed, key=["steps", "params", "item", "index"].index))
        problem(f"unknown name '{unknown}' in '{template.source}' (templates can use: {names})", field)
    for sid in sorted(template.references.steps):
        if sid == "*":
            problem(f"step references must name the step: '{template.source}'", field)
        elif sid not in pipeline.steps:
            problem(f"reference to unknown step '{sid}'{_did_you_mean(sid, pipeline.steps)}", field)
        else:
            refs.add(sid)
    for key in sorted(template.references.params - {"*"}):
        if key not in pipeline.params:
            problem(f"reference to unknown param '{key}'{_did_you_mean(key, pipeline.params)}", field)


def _topological_order(
    pipeline: Pipeline, deps: Mapping[str, frozenset[str]], problems: list[Problem]
) -> list[str]:
    """Steps in file order, each after its dependencies; a cycle is reported with its path.

    A depth-first walk with an explicit stack, not recursion: a chain of 10,000 steps written in
    reverse order, or a cycle through all of them, is an ordinary input.
    """
    order: list[str] = []
    done: set[str] = set()
    for root in deps:
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root: 0}  # step -> its index in path
        pending = [iter(sorted(deps[root]))]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:  # every dependency of path[-1] is placed: place it
                sid = path.pop()
                pending.pop()
                del on_path[sid]
                done.add(sid)
                order.append(sid)
            elif dep in on_path:
                cycle = [*path[on_path[dep] :], dep]
                problems.append(
                    Problem(f"dependency cycle: {_shown_cycle(cycle)}", file=pipeline.source, step=dep)
                )
            elif dep in deps and dep not in done:
                on_path[dep] = len(path)
                path.append(dep)
                pending.append(iter(sorted(deps[dep])))
    return order


def _shown_cycle(cycle: list[str], keep: int = 8) -> str:
    """``a → b → a``; a long cycle keeps its first and last steps and says how many are left out."""
    if len(cycle) <= 2 * keep + 1:
        return " → ".join(cycle)
    left_out = len(cycle) - 2 * keep
    return " → ".join([*cycle[:keep], f"… ({left_out} more) …", *cycle[-keep:]])


def _did_you_mean(name: str, known: Mapping[str, Any]) -> str:
    # difflib costs O(len(known)) per name: with thousands of steps, many bad references would be slow.
    if len(known) > 1000:
        return ""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _reads_steps(value: Any) -> bool:
    """Whether a compiled input value has a template that reads a step's output."""
    if isinstance(value, Template):
        return bool(value.references.steps)
    if isinstance(value, Mapping):
        return any(_reads_steps(v) for v in value.values())
    if isinstance(value, list):
        return any(_reads_steps(v) for v in value)
    return False


def _contains_template(value: Any) -> bool:
    if isinstance(value, Template):
        return True
    if isinstance(value, Mapping):
        return any(_contains_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_template(v) for v in value)
    return False


def render_input(step: PlannedStep, context: Mapping[str, Any]) -> dict[str, Any]:
    """The step's input with every template rendered against ``context``; raises TemplateProblem."""
    return {name: _render_value(value, context) for name, value in step.input.items()}


def _render_value(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, Template):
        return value.render(context)
    if isinstance(value, Mapping):
        return {k: _render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, context) for v in value]
    return value

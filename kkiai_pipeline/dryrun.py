"""The plan as a person reads it (text) and as files keep it (``plan.json``, Mermaid ``plan.mmd``).

Inputs are shown as they would be sent; a field that waits on an earlier step's output is shown as its
template. ``data:`` URIs are shortened to their media type and size.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .api.prediction import output_urls
from .artifacts import describe_url
from .backends import BACKENDS, default_backend
from .ledger import LEDGER_FILE, Ledger, prediction_key
from .orchestrator import make_plan
from .pipeline import Pipeline
from .planning import Plan, PlannedStep, render_input
from .pricing import Prices, estimate_line, estimate_total
from .rundir import write_json_atomic
from .settings import Settings
from .templating import Template, TemplateProblem
from .validation import omit_unset


def plan_data(
    plan: Plan,
    *,
    seed: int | None,
    cache: Mapping[str, str] | None = None,
    prices: Prices | None = None,
) -> dict[str, Any]:
    """The plan as JSON-ready data; ``cache`` holds each step's hit/miss verdict; with ``prices``, the
    estimated cost of what it would pay for."""
    source = plan.pipeline.source
    verdicts = cache or {}
    return {
        "pipeline": plan.pipeline.name,
        "source": str(source) if source else None,
        "seed": seed,
        "predictions": sum(
            s.foreach is None and not verdicts.get(s.id, "").startswith("hit") for s in plan.steps
        ),
        "foreach_steps": sum(s.foreach is not None for s in plan.steps),
        **_cost(plan, verdicts, prices),
        "steps": [_step_data(step, verdicts.get(step.id)) for step in plan.steps],
    }


def _cost(plan: Plan, verdicts: Mapping[str, str], prices: Prices | None) -> dict[str, Any]:
    """``estimated_cost`` and the sentence saying it (with a price table only)."""
    if not prices:
        return {}
    counts: dict[str, int] = {}
    for step in plan.steps:  # what "predictions" counts, by model
        if step.foreach is None and not verdicts.get(step.id, "").startswith("hit"):
            counts[step.model.ref] = counts.get(step.model.ref, 0) + 1
    foreach = sum(s.foreach is not None for s in plan.steps)
    more = f"plus the items of {foreach} foreach step{'s' if foreach != 1 else ''}" if foreach else ""
    return {
        "estimated_cost": estimate_total(prices, counts),
        "estimated_cost_text": estimate_line(prices, counts, more=more),
    }


def _step_data(step: PlannedStep, cache: str | None) -> dict[str, Any]:
    return {
        "id": step.id,
        "level": step.level,
        "model": step.model.ref,
        "version": step.model.version,
        "depends_on": sorted(step.depends_on),
        "input": _shown(step.input),
        "templated": sorted(step.templated_fields),
        "foreach": _shown(step.foreach),
        "cache": cache,
    }


def dry_run(pipeline: Pipeline, settings: Settings) -> str:
    """Plan ``pipeline``, say per step whether it would be reused or paid, write plan.json and plan.mmd."""
    the_plan = make_plan(pipeline, settings)
    verdicts = ledger_verdicts(the_plan, settings)
    write_plan(the_plan, settings.run_dir, seed=settings.seed, cache=verdicts, prices=settings.prices)
    return plan_text(the_plan, seed=settings.seed, cache=verdicts, prices=settings.prices)


def ledger_verdicts(plan: Plan, settings: Settings) -> dict[str, str]:
    """Per step: will the ledger answer it ("hit: ...") or will it be paid ("miss: why")?

    The keys are computed exactly as execution computes them; steps downstream of hits are rendered
    with the stored outputs, as the run would. The dry run only reads: it never creates the ledger.
    """
    root = settings.cache_dir
    ledger = Ledger(root) if root is not None and (root / LEDGER_FILE).exists() else None
    verdicts: dict[str, str] = {}
    outputs: dict[str, Any] = {}
    known: dict[str, str] = {}
    try:
        for step in plan.steps:
            verdicts[step.id] = _verdict(plan, step, settings, ledger, outputs, known)
    finally:
        if ledger is not None:
            ledger.close()
    return verdicts


def _verdict(
    plan: Plan,
    step: PlannedStep,
    settings: Settings,
    ledger: Ledger | None,
    outputs: dict[str, Any],
    known: dict[str, str],
) -> str:
    if not settings.cache:
        return "miss: the cache is off (cache=false)"
    if not step.step.cache:
        return "miss: this step has cache: false"
    if step.foreach is not None:
        return "per item: each item of foreach is looked up when the items are known"
    waiting = sorted(d for d in step.depends_on if d not in outputs)
    if waiting:
        return f"miss: it reads {', '.join(waiting)}, which will run first"
    context = {"params": plan.pipeline.params, "steps": {d: {"output": outputs[d]} for d in step.depends_on}}
    try:
        rendered = omit_unset(render_input(step, context))
    except TemplateProblem as exc:
        return f"miss: {exc}"
    backend = step.step.backend or default_backend(settings)
    base_url = settings.api.base_url or ""
    identity = BACKENDS[backend].identity(settings, base_url, step.model.version_ref)
    key = prediction_key(identity=identity, version=step.model.version_ref, input=rendered, known=known)
    entry = ledger.get_now(key.digest) if ledger is not None else None
    if entry is None or not ledger or not ledger.intact(entry):
        return f"miss: nothing stored for this input (key {key.digest[:12]})"
    outputs[step.id] = entry.output
    known.update(zip(output_urls(entry.output), (f.sha256 for f in entry.files), strict=False))
    return f"hit: prediction {entry.prediction_id} of {entry.completed_at} (key {key.digest[:12]})"


def _shown(value: Any) -> Any:
    if isinstance(value, Template):
        return value.source
    if isinstance(value, Mapping):
        return {k: _shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v) for v in value]
    if isinstance(value, str) and value.startswith("data:"):
        return describe_url(value)
    return value


def plan_text(
    plan: Plan, *, seed: int | None, cache: Mapping[str, str] | None = None, prices: Prices | None = None
) -> str:
    """A readable listing: steps in order with level, model@version, cache verdict and inputs."""
    data = plan_data(plan, seed=seed, cache=cache, prices=prices)
    count = data["predictions"]
    per_item = (
        f", plus one per item of {data['foreach_steps']} foreach steps" if data["foreach_steps"] else ""
    )
    lines = [
        f"Plan for pipeline '{data['pipeline']}' ({data['source'] or 'no file'}): "
        f"{len(plan.steps)} steps, {count} prediction{'s' if count != 1 else ''}{per_item} would be created."
    ]
    if "estimated_cost_text" in data:
        lines.append(data["estimated_cost_text"] + ".")
    if seed is not None:
        lines.append(f"Seed {seed}: steps without their own seed get one derived from it.")
    for step in data["steps"]:
        after = f"  (after {', '.join(step['depends_on'])})" if step["depends_on"] else ""
        lines.append("")
        lines.append(f"[level {step['level']}] {step['id']}: {step['model']}@{step['version'][:12]}{after}")
        if step["foreach"] is not None:
            lines.append(
                f"    foreach {json.dumps(step['foreach'], ensure_ascii=False)}: one prediction per item"
            )
        if step["cache"]:
            lines.append(f"    cache {step['cache']}")
        for name, value in step["input"].items():
            marker = "  (template, rendered at run time)" if name in step["templated"] else ""
            lines.append(f"    {name}: {json.dumps(value, ensure_ascii=False)}{marker}")
    lines.append("")
    lines.append("Dry run: nothing was sent to the API.")
    return "\n".join(lines)


def plan_mermaid(plan: Plan) -> str:
    """The DAG as a Mermaid flowchart."""
    node = {step.id: f"s{i}" for i, step in enumerate(plan.steps)}  # step ids may hold '-'
    lines = ["flowchart LR"]
    for step in plan.steps:
        lines.append(f'    {node[step.id]}["{step.id}<br/>{step.model.ref}"]')
    for step in plan.steps:
        for dep in sorted(step.depends_on):
            lines.append(f"    {node[dep]} --> {node[step.id]}")
    return "\n".join(lines) + "\n"


def write_plan(
    plan: Plan,
    run_dir: Path,
    *,
    seed: int | None,
    cache: Mapping[str, str] | None = None,
    prices: Prices | None = None,
) -> None:
    """``plan.json`` and ``plan.mmd`` in ``run_dir``."""
    write_json_atomic(run_dir / "plan.json", plan_data(plan, seed=seed, cache=cache, prices=prices))
    (run_dir / "plan.mmd").write_text(plan_mermaid(plan), encoding="utf-8")

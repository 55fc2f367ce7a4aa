"""The plan as a person reads it (text) and as files keep it (``plan.json``, Mermaid ``plan.mmd``).

Inputs are shown as they would be sent; a field that waits on an earlier step's output is shown as its
template. ``data:`` URIs are shortened to their media type and size.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .artifacts import describe_url
from .budget import Budget, count, open_ledger
from .orchestrator import make_plan
from .pipeline import Pipeline
from .planning import Plan, PlannedStep
from .pricing import Prices, estimate_line, estimate_total
from .rundir import write_json_atomic
from .settings import Settings
from .templating import Template


def plan_data(
    plan: Plan, *, seed: int | None, budget: Budget | None = None, prices: Prices | None = None
) -> dict[str, Any]:
    """The plan as JSON-ready data; ``budget`` holds each step's count and hit/miss verdict; with
    ``prices``, the estimated cost of what it would pay for."""
    source = plan.pipeline.source
    counted = budget or Budget()
    verdicts = {s.step: s.verdict for s in counted.steps}
    return {
        "pipeline": plan.pipeline.name,
        "source": str(source) if source else None,
        "seed": seed,
        "predictions": counted.to_create,
        "reused": counted.to_reuse,
        "upper_bound": counted.upper_bound,
        "unknown_length": list(counted.unknown),
        "foreach_steps": sum(s.foreach is not None for s in plan.steps),
        **_cost(counted, prices),
        "steps": [_step_data(step, verdicts.get(step.id)) for step in plan.steps],
    }


def _cost(budget: Budget, prices: Prices | None) -> dict[str, Any]:
    """``estimated_cost`` and the sentence saying it (with a price table only)."""
    if not prices:
        return {}
    counts = budget.by_model()
    if budget.unknown:
        more = "or more: a foreach list's length is known only when it runs"
    elif budget.upper_bound:
        more = "at most: foreach items counted from num_outputs"
    else:
        more = ""
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


def dry_run(pipeline: Pipeline, settings: Settings, *, budgets: list[Budget] | None = None) -> str:
    """Plan ``pipeline``, count what it would create and reuse, write plan.json and plan.mmd.

    The budget is appended to ``budgets`` when given (a sweep sums its jobs' budgets).
    """
    the_plan = make_plan(pipeline, settings)
    counted = count_plan(the_plan, settings)
    if budgets is not None:
        budgets.append(counted)
    prices = settings.prices
    write_plan(the_plan, settings.run_dir, seed=settings.seed, budget=counted, prices=prices)
    return plan_text(the_plan, seed=settings.seed, budget=counted, prices=prices)


def count_plan(plan: Plan, settings: Settings) -> Budget:
    """The plan's budget against the ledger, if there is one (the dry run never creates it)."""
    ledger = open_ledger(settings)
    try:
        return count(plan, settings, ledger=ledger)
    finally:
        if ledger is not None:
            ledger.close()


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
    plan: Plan, *, seed: int | None, budget: Budget | None = None, prices: Prices | None = None
) -> str:
    """A readable listing: steps in order with level, model@version, cache verdict and inputs."""
    counted = budget or Budget()
    data = plan_data(plan, seed=seed, budget=counted, prices=prices)
    lines = [
        f"Plan for pipeline '{data['pipeline']}' ({data['source'] or 'no file'}): "
        f"{len(plan.steps)} steps: {counted.summary()}."
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
    if counted.over_limit:
        lines.append(f"Over the budget: {counted.refusal()}.")
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
    budget: Budget | None = None,
    prices: Prices | None = None,
) -> None:
    """``plan.json`` and ``plan.mmd`` in ``run_dir``."""
    write_json_atomic(run_dir / "plan.json", plan_data(plan, seed=seed, budget=budget, prices=prices))
    (run_dir / "plan.mmd").write_text(plan_mermaid(plan), encoding="utf-8")

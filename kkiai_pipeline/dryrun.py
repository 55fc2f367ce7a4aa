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
from .planning import Plan, PlannedStep
from .rundir import write_json_atomic
from .templating import Template


def plan_data(plan: Plan, *, seed: int | None) -> dict[str, Any]:
    """The plan as JSON-ready data."""
    source = plan.pipeline.source
    return {
        "pipeline": plan.pipeline.name,
        "source": str(source) if source else None,
        "seed": seed,
        "predictions": len(plan.steps),
        "steps": [_step_data(step) for step in plan.steps],
    }


def _step_data(step: PlannedStep) -> dict[str, Any]:
    return {
        "id": step.id,
        "level": step.level,
        "model": step.model.ref,
        "version": step.model.version,
        "depends_on": sorted(step.depends_on),
        "input": _shown(step.input),
        "templated": sorted(step.templated_fields),
    }


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


def plan_text(plan: Plan, *, seed: int | None) -> str:
    """A readable listing: steps in order with level, model@version and inputs."""
    data = plan_data(plan, seed=seed)
    count = data["predictions"]
    lines = [
        f"Plan for pipeline '{data['pipeline']}' ({data['source'] or 'no file'}): "
        f"{len(plan.steps)} steps, {count} prediction{'s' if count != 1 else ''} would be created."
    ]
    if seed is not None:
        lines.append(f"Seed {seed}: steps without their own seed get one derived from it.")
    for step in data["steps"]:
        after = f"  (after {', '.join(step['depends_on'])})" if step["depends_on"] else ""
        lines.append("")
        lines.append(f"[level {step['level']}] {step['id']}: {step['model']}@{step['version'][:12]}{after}")
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


def write_plan(plan: Plan, run_dir: Path, *, seed: int | None) -> None:
    """``plan.json`` and ``plan.mmd`` in ``run_dir``."""
    write_json_atomic(run_dir / "plan.json", plan_data(plan, seed=seed))
    (run_dir / "plan.mmd").write_text(plan_mermaid(plan), encoding="utf-8")

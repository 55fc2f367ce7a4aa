"""What a sweep paid for, job by job and in all: the accounting in ``sweep.json`` and ``summary.csv``.

Each job's figures are its run's :meth:`~kkiai_pipeline.rundir.RunRecord.totals` (predictions created
and reused, the predict time paid, the estimated cost), so a sweep counts exactly as a run does: a
prediction two jobs share is paid by one of them and reused by the other. A dry-run job has no run: its
``estimated_cost`` comes from its ``plan.json``.

``summary.csv`` is meant to open as a table: one row a job, one column per swept key (the keys whose
value differs between jobs, parsed from the job's ``key=value`` overrides), then the metrics, and a
last row ``total``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .pricing import format_cost
from .report.sweep import parse_overrides
from .rundir import RunRecord, Totals

TOTAL_ROW = "total"
METRICS = ("status", "created", "reused", "predict_time", "cost", "seconds")
_AFTER = ("started_at", "finished_at", "run_dir", "outputs", "error", "overrides")


def job_totals(run: RunRecord | None) -> dict[str, Any]:
    """A job's ``created``, ``reused``, ``predict_time`` and ``cost`` (zeros and null without a run)."""
    return asdict(run.totals() if run is not None else Totals())


def planned_cost(job_dir: Path, plan_file: str) -> dict[str, Any]:
    """A dry-run job's ``estimated_cost`` from its plan file (nothing when it has none)."""
    try:
        plan = json.loads((job_dir / plan_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(plan, dict) or "estimated_cost" not in plan:
        return {}
    cost = plan["estimated_cost"]
    return {"estimated_cost": cost if _number(cost) else None}


def sweep_totals(jobs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The sweep's ``created``, ``reused``, ``predict_time`` and ``cost`` (null when a job paid for a
    prediction without a price, or nothing is priced), and a dry run's ``estimated_cost``."""
    created = sum(_count(job.get("created")) for job in jobs)
    reused = sum(_count(job.get("reused")) for job in jobs)
    predict_time = sum(float(job["predict_time"]) for job in jobs if _number(job.get("predict_time")))
    costs = [job.get("cost") for job in jobs if _count(job.get("created")) or _number(job.get("cost"))]
    cost = _sum(costs) if costs else None
    totals: dict[str, Any] = {
        "created": created,
        "reused": reused,
        "predict_time": round(predict_time, 3),
        "cost": cost,
    }
    planned = [job for job in jobs if job.get("status") == "planned"]
    if any("estimated_cost" in job for job in planned):
        totals["estimated_cost"] = _sum([job.get("estimated_cost") for job in planned])
    return totals


def swept_keys(jobs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The override keys whose value differs between jobs, in the order met (a lone job: all its keys)."""
    parsed = [parse_overrides(job.get("overrides") or []) for job in jobs]
    keys = list(dict.fromkeys(key for overrides in parsed for key in overrides))
    varying = [k for k in keys if len({o.get(k) for o in parsed}) > 1]
    return varying if varying or len(jobs) > 1 else keys


def write_summary_csv(path: Path, jobs: Sequence[Mapping[str, Any]], totals: Mapping[str, Any]) -> None:
    """``summary.csv``: a row a job (its swept values, then its metrics), then the ``total`` row."""
    keys = swept_keys(jobs)
    taken = {"job", *METRICS, "estimated_cost", *_AFTER}
    names = {key: f"override:{key}" if key in taken else key for key in keys}
    estimated = ["estimated_cost"] if "estimated_cost" in totals else []
    columns = ["job", *names.values(), *METRICS, *estimated, *_AFTER]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for job in jobs:
            values = parse_overrides(job.get("overrides") or [])
            row = {names[key]: values.get(key, "") for key in keys}
            writer.writerow({**_cells(job), **row})
        writer.writerow({**_cells(totals), "job": TOTAL_ROW, "status": ""})


def _cells(values: Mapping[str, Any]) -> dict[str, Any]:
    """A job's (or the totals') values as CSV cells: lists joined, null empty, numbers as numbers."""
    cells = {
        **values,
        "seconds": values.get("duration_s"),
        "overrides": " ".join(values.get("overrides") or []),
        "outputs": ";".join(values.get("outputs") or []),
    }
    return {key: "" if value is None else value for key, value in cells.items()}


def totals_line(totals: Mapping[str, Any]) -> str:
    """The sweep's totals in one line, for the terminal."""
    line = (
        f"paid for {totals['created']} prediction{'s' if totals['created'] != 1 else ''} "
        f"({totals['predict_time']:.1f} s predict time), reused {totals['reused']}"
    )
    if totals.get("cost") is not None:
        line += f", estimated cost {format_cost(totals['cost'])}"
    if "estimated_cost" in totals:
        line += f"; dry run: estimated cost {format_cost(totals['estimated_cost'])}"
    return line


def _sum(values: Sequence[Any]) -> float | None:
    """The sum of ``values`` if every one is a number, else None (part of it is unknown)."""
    numbers = [float(v) for v in values if _number(v)]
    return round(sum(numbers), 6) if len(numbers) == len(values) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

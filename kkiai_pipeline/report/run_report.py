"""``report.html``: one page telling what a run asked, sent, received and stored.

It is made from run.json alone (and the files beside it), so it can be written for any run that left a
directory: one that succeeded, failed, was canceled, or crashed half way. It shows the run's summary,
the DAG of its steps, and for each step the model, the inputs sent, the status, timings, metrics, the
prediction id and the outputs (images, animations, videos); failed, unresolved and skipped steps
stand out. run.json is read through :func:`kkiai_pipeline.rundir.read_record`, like every reader.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from ..api.prediction import parse_timestamp
from ..rundir import Reading, RunRecord, StepRecord, read_record
from .dag import Node, dag_svg
from .html import (
    BAD_STATUSES,
    badge,
    esc,
    kind_of,
    kv_table,
    media,
    output_file,
    page,
    relative_url,
    short_value,
    write_text_atomic,
)
from .items import cost_row, items_table, logs_block, totals_rows

REPORT = "report.html"


def write_run_report(run_dir: Path) -> Path:
    """Read ``run_dir/run.json`` and write ``run_dir/report.html``; returns the report's path.

    Odd contents (no run.json, missing fields, missing output files) give a page that says so; only a
    failure to write the file itself raises (``OSError``).
    """
    target = run_dir / REPORT
    write_text_atomic(target, render_run(read_record(run_dir)))
    return target


def render_run(reading: Reading) -> str:
    """The whole report page for what :func:`~kkiai_pipeline.rundir.read_record` found."""
    run, run_dir = reading.record, reading.run_dir
    status = run.status if run else "unknown"
    name = (run.pipeline if run else "") or run_dir.name
    parts = [f"<h1>{esc(name)} {badge(status)}</h1>", f'<p class="muted mono">{esc(run_dir.name)}</p>']
    if reading.problem:
        where = "" if run is None else "run.json: "
        parts.append(f'<div class="error">{esc(where + reading.problem)}</div>')
    if run is not None:
        parts.append(_summary(run))
        parts.extend(_steps(run))
    return page(f"{name}: {status}", "\n".join(parts))


def _steps(run: RunRecord) -> list[str]:
    if not run.steps:
        return []
    anchors = {sid: f"step-{i}" for i, sid in enumerate(run.steps)}
    known = _known_outputs(run)
    nodes = [Node(sid, s.depends_on, s.status, s.model, anchors[sid]) for sid, s in run.steps.items()]
    parts = [f'<h2>Steps</h2><div class="dag">{dag_svg(nodes)}</div>']
    parts += [_step(run, sid, step, anchors[sid], known) for sid, step in run.steps.items()]
    return parts


def _summary(run: RunRecord) -> str:
    counts = Counter(step.status for step in run.steps.values())
    rows = [
        ("status", badge(run.status)),
        ("run id", f'<span class="mono">{esc(run.run_id)}</span>' if run.run_id else ""),
        ("steps", esc(", ".join(f"{n} {status}" for status, n in counts.items()) or "none")),
        ("source", esc(run.source or "")),
        ("seed", esc("not set" if run.seed is None else short_value(run.seed))),
        ("API", esc(" ".join(str(run.api.get(k, "")) for k in ("kind", "base_url")).strip())),
        ("started", esc(run.started_at or "")),
        ("finished", esc(run.finished_at or "")),
        ("duration", esc(_duration(run.started_at, run.finished_at))),
        *totals_rows(run),
    ]
    return kv_table([(k, v) for k, v in rows if v])


def _step(run: RunRecord, sid: str, step: StepRecord, anchor: str, known: Mapping[str, str]) -> str:
    css = "step bad" if step.status in BAD_STATUSES else f"step {esc(step.status)}"
    head = (
        f'<header><h3>{esc(sid)}</h3>{badge(step.status)}<span class="mono">{esc(step.model)}</span></header>'
    )
    error = ""
    if step.error:
        note = " skipnote" if step.status == "skipped" else ""
        error = f'<div class="error{note}">{esc(step.error)}</div>'
    columns = (
        f'<div class="cols"><div><strong>Inputs sent</strong>{_inputs(step, known)}</div>'
        f"<div><strong>Prediction</strong>{_details(run, step)}{logs_block(run.run_dir, step)}</div></div>"
    )
    shown = items_table(run, sid, step) if step.items else _outputs(run.run_dir, step)
    return f'<section id="{anchor}" class="{css}">{head}{error}{columns}{shown}</section>'


def _inputs(step: StepRecord, known: Mapping[str, str]) -> str:
    if step.items:
        return '<p class="muted">one input per item: see the items below</p>'
    if step.input is None:
        return '<p class="muted">nothing was sent</p>'
    rows = []
    for key, value in step.input.items():
        shown = esc(short_value(value))
        if isinstance(value, str) and value in known:
            shown += f'<br><span class="muted">= {known[value]}</span>'
        rows.append((str(key), shown))
    return kv_table(rows) if rows else '<p class="muted">no inputs</p>'


def _details(run: RunRecord, step: StepRecord) -> str:
    rows = [
        ("model", esc(step.model)),
        ("version", f'<span class="mono">{esc(step.version)}</span>'),
        ("prediction", f'<span class="mono">{esc(step.prediction_id)}</span>' if step.prediction_id else ""),
        ("obtained", esc(step.obtained or "")),
        ("note", esc(step.note or "")),
        ("key", f'<span class="mono">{esc(step.key)}</span>' if step.key else ""),
        ("took", esc(_duration(step.started, step.ended))),
        ("items", esc(_items(step))),
        ("created", esc(step.created_at or "")),
        ("queued", esc(_duration(step.created_at, step.started_at))),
        ("ran", esc(_duration(step.started_at, step.completed_at))),
        cost_row(run, step),
    ]
    rows += [(f"metrics.{k}", esc(short_value(v))) for k, v in step.metrics.items()]
    if len(step.attempts) > 1:
        rows.append(("attempts", esc("\n".join(_attempt(a) for a in step.attempts))))
    return kv_table([(k, v) for k, v in rows if v])


def _attempt(attempt: Mapping[str, Any]) -> str:
    text = f"{attempt.get('prediction_id') or '?'}: {attempt.get('status') or '?'}"
    return f"{text} ({attempt['error']})" if attempt.get("error") else text


def _items(step: StepRecord) -> str:
    """A foreach step's items by status (``3 succeeded, 1 failed``)."""
    counts = Counter(item.status for item in step.items)
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def _outputs(run_dir: Path, step: StepRecord) -> str:
    figures = []
    for out in step.outputs:
        file = output_file(run_dir, out.path)
        size = f", {out.bytes:,} bytes"
        caption = f"{out.path} ({out.content_type or 'unknown type'}{size})"
        shown = media(relative_url(file, run_dir), kind_of(out), alt=out.path, exists=file.is_file())
        figures.append(f"<figure>{shown}<figcaption>{esc(caption)}</figcaption></figure>")
    if figures:
        return f'<div class="outputs">{"".join(figures)}</div>'
    if step.output is not None:
        return f'<p><strong>Output</strong></p><div class="value mono">{esc(short_value(step.output))}</div>'
    return ""


def _known_outputs(run: RunRecord) -> dict[str, str]:
    """URL of each stored output -> HTML naming it, to show which input came from which step."""
    known = {}
    for sid, step in run.steps.items():
        for i, out in enumerate(step.outputs):
            if out.url:
                url = esc(relative_url(output_file(run.run_dir, out.path), run.run_dir))
                known[out.url] = f'<a href="{url}">output {i} of {esc(sid)}</a>'
    return known


def _duration(start: str | None, end: str | None) -> str:
    begin, finish = _time(start), _time(end)
    if begin is None or finish is None:
        return ""
    seconds = (finish - begin).total_seconds()
    if seconds < 0:
        return ""
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _time(text: str | None) -> datetime | None:
    try:
        return parse_timestamp(text)
    except (TypeError, ValueError):
        return None

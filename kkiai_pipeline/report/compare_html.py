"""``compare.html``: two runs side by side, what differs first, then their outputs step by step.

One offline page (no script), files linked by relative URLs from where the page is written.
"""

from __future__ import annotations

from pathlib import Path

from ..pricing import format_cost
from ..rundir import StepRecord
from ..runs_compare import Comparison, Difference, Side
from .html import badge, esc, kind_of, kv_table, media, output_file, page, relative_url, write_text_atomic
from .run_report import REPORT

COMPARE = "compare.html"

_CSS = """
table.diff{border-collapse:collapse;margin:4px 0 12px;width:100%}
table.diff th,table.diff td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
table.diff th{background:#f6f8fa}
table.diff td.value{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
table.sides{border-collapse:collapse;width:100%;table-layout:fixed}
table.sides th,table.sides td{border:1px solid #d0d7de;padding:8px;vertical-align:top}
table.sides th.sid{width:140px;text-align:left}
"""


def write_compare(target: Path, comparison: Comparison) -> Path:
    """Write the side-by-side page to ``target``; returns ``target``."""
    write_text_atomic(target, render_compare(target.parent, comparison))
    return target


def render_compare(base: Path, comparison: Comparison) -> str:
    """The page, its links relative to the folder ``base``."""
    a, b = comparison.a, comparison.b
    parts = [
        "<h1>Compare two runs</h1>",
        f'<div class="cols"><div><h2>A</h2>{_side(base, a)}</div><div><h2>B</h2>{_side(base, b)}</div></div>',
    ]
    sections = [
        ("Overrides that differ", comparison.overrides),
        ("Settings that differ", comparison.settings),
    ]
    for title, diffs in sections:
        if diffs:
            parts.append(f"<h2>{esc(title)}</h2>{_diff_table(diffs)}")
    if comparison.same:
        parts.append('<p class="muted">no setting or step input differs</p>')
    parts.append("<h2>Steps</h2>")
    rows = []
    for sid in comparison.step_ids:
        diffs = comparison.steps.get(sid, [])
        table = _diff_table(diffs) if diffs else '<p class="muted">same model and inputs</p>'
        cells = "".join(f"<td>{_outputs(base, side, side.run.steps.get(sid))}</td>" for side in (a, b))
        rows.append(f'<tr><th class="sid" rowspan="2">{esc(sid)}</th>{cells}</tr>')
        rows.append(f'<tr><td colspan="2">{table}</td></tr>')
    head = '<tr><th class="sid"></th><th>A</th><th>B</th></tr>'
    parts.append(f'<table class="sides">{head}{"".join(rows)}</table>')
    parts.append(f"<style>{_CSS}</style>")
    return page(f"compare {a.path.name} · {b.path.name}", "\n".join(parts))


def _side(base: Path, side: Side) -> str:
    run, totals = side.run, side.run.totals()
    report = side.path / REPORT
    name = esc(side.path)
    if report.is_file():
        name = f'<a href="{esc(relative_url(report, base))}">{name}</a>'
    rows = [
        ("run", f'<span class="mono">{name}</span>'),
        ("pipeline", esc(run.pipeline)),
        ("status", badge(run.status)),
        ("started", esc(run.started_at)),
        ("predictions", esc(f"{totals.created} created, {totals.reused} reused")),
        ("predict time", esc(f"{totals.predict_time:g} s")),
        ("estimated cost", esc(format_cost(totals.cost)) if totals.cost is not None else ""),
    ]
    return kv_table([(k, v) for k, v in rows if v])


def _diff_table(diffs: list[Difference]) -> str:
    rows = "".join(
        f'<tr><th class="mono">{esc(d.key)}</th><td class="value">{esc(d.a)}</td>'
        f'<td class="value">{esc(d.b)}</td></tr>'
        for d in diffs
    )
    return f'<table class="diff"><tr><th>key</th><th>A</th><th>B</th></tr>{rows}</table>'


def _outputs(base: Path, side: Side, step: StepRecord | None) -> str:
    if step is None:
        return '<span class="muted">no such step</span>'
    shown = [badge(step.status)]
    if step.error:
        shown.append(f'<div class="error">{esc(step.error)}</div>')
    figures = []
    for out in step.outputs:
        file = output_file(side.path, out.path)
        shown_file = media(relative_url(file, base), kind_of(out), alt=out.path, exists=file.is_file())
        figures.append(f"<figure>{shown_file}<figcaption>{esc(out.path)}</figcaption></figure>")
    if figures:
        shown.append(f'<div class="outputs">{"".join(figures)}</div>')
    return "".join(shown)

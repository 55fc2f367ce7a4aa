"""``grid.html``: the sweep as tables of thumbnails, one per Z value, linking into the job directories."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .cells import Cell
from .html import badge, esc, media, page, placeholder, relative_url
from .sweep import Axis, Grid, Plot


def render_grid(
    sweep_dir: Path, plot: Plot, cells: Mapping[str, Cell], *, step: str, shown: int, total: int
) -> str:
    """The page for ``plot``; ``cells`` maps job names to what they show."""
    failed = sum(1 for cell in cells.values() if cell.bad)
    facts = [f"{total} job{'s' if total != 1 else ''}", f"{failed} failed", f"step: {step}"]
    parts = [
        f"<h1>Sweep {esc(sweep_dir.name)}</h1>",
        f"<p>{esc(' · '.join(facts))}</p>",
        _axes_legend(plot),
    ]
    if shown < total:
        parts.append(f'<p class="error">showing the first {shown} of {total} jobs (max_cells)</p>')
    if plot.common:
        same = ", ".join(f"{k}={v}" for k, v in plot.common.items())
        parts.append(f'<p class="muted">the same in every job: <span class="mono">{esc(same)}</span></p>')
    for grid in plot.grids:
        if grid.fixed:
            parts.append(f"<h2>{esc(', '.join(f'{a.label} = {v}' for a, v in grid.fixed))}</h2>")
        parts.append(_table(sweep_dir, plot, grid, cells))
    if not plot.grids:
        parts.append(placeholder("no jobs", "this directory has no numbered job directories"))
    return page(f"sweep {sweep_dir.name}", "\n".join(parts))


def _axes_legend(plot: Plot) -> str:
    named = [("X (columns)", plot.x), ("Y (rows)", plot.y), *(("Z (grids)", z) for z in plot.z)]
    rows = [
        f'<tr><th>{esc(role)}</th><td>{esc(axis.label)}</td><td class="mono muted">{esc(axis.key)}</td>'
        f"<td>{esc(', '.join(axis.values))}</td></tr>"
        for role, axis in named
        if axis is not None
    ]
    if not rows:
        return '<p class="muted">no override varies between the jobs</p>'
    return f'<table class="kv">{"".join(rows)}</table>'


def _table(sweep_dir: Path, plot: Plot, grid: Grid, cells: Mapping[str, Cell]) -> str:
    corner = " \\ ".join(a.label for a in (plot.y, plot.x) if a is not None)
    head = f"<tr><th>{esc(corner)}</th>" + "".join(
        f"<th>{_label(plot.x, value)}</th>" for value in plot.columns
    )
    rows = [head + "</tr>"]
    for r, row_value in enumerate(plot.rows):
        tds = []
        for c in range(len(plot.columns)):
            job = grid.cells.get((r, c))
            cell = cells.get(job.name) if job else None
            tds.append(_td(sweep_dir, cell))
        rows.append(f"<tr><th>{_label(plot.y, row_value)}</th>{''.join(tds)}</tr>")
    return f'<table class="grid">{"".join(rows)}</table>'


def _label(axis: Axis | None, value: str) -> str:
    return f"{esc(axis.label)} = {esc(value)}" if axis else ""


def _td(sweep_dir: Path, cell: Cell | None) -> str:
    if cell is None:
        return f"<td>{placeholder('no job')}</td>"
    if cell.file is not None:
        url = relative_url(cell.file, sweep_dir)
        shown = media(url, cell.kind, alt=f"job {cell.job}: {cell.step}", exists=True)
    else:
        shown = placeholder(cell.headline if cell.bad else "no picture", cell.note)
    report = sweep_dir / cell.job / "report.html"
    job = f"job {esc(cell.job)}"
    if report.is_file():
        job = f'<a href="{esc(relative_url(report, sweep_dir))}">{job}</a>'
    note = f" · {esc(cell.note)}" if cell.note and cell.file is not None else ""
    css = ' class="bad"' if cell.bad else ""
    return f'<td{css}>{shown}<div class="cellnote">{job} {badge(cell.status)}{note}</div></td>'

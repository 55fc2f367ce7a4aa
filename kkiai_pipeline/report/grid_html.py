"""``grid.html``: the sweep as tables of thumbnails, one per Z value, linking into the job directories.

A cell shows one picture per chosen step (``grid_steps``), side by side. Clicking a picture opens it at
full size (shrunk to the window if larger) over the grid (a CSS ``:target`` overlay: no script), with a
link to the file itself; clicking the overlay closes it and returns to the cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .cells import Cell
from .html import badge, esc, media, page, placeholder, relative_url
from .sweep import Axis, Grid, Plot


def render_grid(
    sweep_dir: Path,
    plot: Plot,
    cells: Mapping[str, Sequence[Cell]],
    *,
    step: str,
    shown: int,
    total: int,
) -> str:
    """The page for ``plot``; ``cells`` maps job names to what they show (a picture per step)."""
    failed = sum(1 for row in cells.values() if any(cell.bad for cell in row))
    steps = "steps" if "," in step else "step"
    facts = [f"{total} job{'s' if total != 1 else ''}", f"{failed} failed", f"{steps}: {step}"]
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
    parts.extend(_overlay(sweep_dir, row) for row in cells.values())
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


def _table(sweep_dir: Path, plot: Plot, grid: Grid, cells: Mapping[str, Sequence[Cell]]) -> str:
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


def _td(sweep_dir: Path, row: Sequence[Cell] | None) -> str:
    if not row:
        return f"<td>{placeholder('no job')}</td>"
    first = row[0]
    several = len(row) > 1
    pictures = "".join(_picture(sweep_dir, cell, i, labelled=several) for i, cell in enumerate(row))
    if several:
        pictures = f'<div class="cellrow">{pictures}</div>'
    report = sweep_dir / first.job / "report.html"
    job = f"job {esc(first.job)}"
    if report.is_file():
        job = f'<a href="{esc(relative_url(report, sweep_dir))}">{job}</a>'
    notes = [_note(cell, several) for cell in row if cell.note and cell.file is not None]
    note = "".join(f" · {n}" for n in notes)
    worst = next((cell for cell in row if cell.bad), first)
    css = ' class="bad"' if worst.bad else ""
    return (
        f'<td{css} id="{_anchor(first)}">{pictures}'
        f'<div class="cellnote">{job} {badge(worst.status)}{note}</div></td>'
    )


def _picture(sweep_dir: Path, cell: Cell, index: int, *, labelled: bool) -> str:
    """One step's picture in a cell: its thumbnail opens the overlay; or why there is none."""
    if cell.file is None:
        shown = placeholder(cell.headline if cell.bad else "no picture", cell.note)
    elif cell.kind == "image":
        alt = esc(f"job {cell.job}: {cell.step}")
        src = esc(relative_url(cell.file, sweep_dir))
        shown = (
            f'<a href="#{_overlay_id(cell, index)}" title="open full size">'
            f'<img class="thumb" src="{src}" alt="{alt}"></a>'
        )
    else:
        shown = media(
            relative_url(cell.file, sweep_dir), cell.kind, alt=f"job {cell.job}: {cell.step}", exists=True
        )
    if not labelled:
        return shown
    return f'<figure>{shown}<figcaption class="mono">{esc(cell.step)}</figcaption></figure>'


def _note(cell: Cell, several: bool) -> str:
    return esc(f"{cell.step}: {cell.note}" if several else cell.note)


def _overlay(sweep_dir: Path, row: Sequence[Cell]) -> str:
    """The full-size views of a job's pictures: hidden until their thumbnail is clicked (``:target``).

    Each picture is at its own size, or as large as the window when it is larger; ``loading="lazy"``
    keeps the browser from fetching it until it is shown.
    """
    views = []
    for index, cell in enumerate(row):
        if cell.file is None or cell.kind != "image":
            continue
        url = esc(relative_url(cell.file, sweep_dir))
        back = f"#{_anchor(cell)}"
        label = esc(f"job {cell.job}: {cell.step}")
        views.append(
            f'<div class="lightbox" id="{_overlay_id(cell, index)}">'
            f'<a class="shut" href="{back}" title="close"><img class="full" loading="lazy" src="{url}" '
            f'alt="{label}"></a><p class="lightnote">{label} · <a href="{url}">open the file</a> · '
            f'<a href="{back}">close</a></p></div>'
        )
    return "".join(views)


def _anchor(cell: Cell) -> str:
    return esc(f"job-{cell.job}")


def _overlay_id(cell: Cell, index: int) -> str:
    return esc(f"full-{cell.job}-{index}")

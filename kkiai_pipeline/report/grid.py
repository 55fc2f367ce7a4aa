"""The sweep grid: ``grid.html`` and ``grid.png`` at the root of a Hydra multirun.

:mod:`.sweep` finds the jobs and lays them out on the swept keys, :mod:`.cells` decides what each job
shows (one picture per chosen step), and :mod:`.grid_html` and :mod:`.grid_png` draw the same layout as
a page and as a picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .cells import cells_for
from .grid_html import render_grid
from .grid_png import render_png, save_png
from .html import write_text_atomic
from .sweep import layout, read_jobs, task_order

GRID_HTML = "grid.html"
GRID_PNG = "grid.png"


def write_sweep_grid(
    sweep_dir: Path, *, step: Sequence[str] | str | None = None, max_cells: int = 400
) -> tuple[Path, Path]:
    """Write ``sweep_dir/grid.html`` and ``sweep_dir/grid.png``; returns both paths.

    Each cell shows the first output of each step of ``step`` (a step id or several, side by side;
    ``None``: each job's last step) in one job. Only the first ``max_cells`` jobs are drawn. Jobs
    without a run, failed steps, missing or non-image files give marked or placeholder pictures; only
    a failure to write the two files raises (``OSError``).
    """
    steps = (step,) if isinstance(step, str) else tuple(step or ())
    jobs = read_jobs(sweep_dir)
    shown = jobs[: max(max_cells, 0)]
    plot = layout(shown, task_order(sweep_dir))
    cells = {job.name: cells_for(job, steps) for job in shown}
    found = sorted({cell.step for row in cells.values() for cell in row if cell.step})
    step_label = ", ".join(steps) if steps else (", ".join(found) or "the last step")
    html_path, png_path = sweep_dir / GRID_HTML, sweep_dir / GRID_PNG
    page = render_grid(sweep_dir, plot, cells, step=step_label, shown=len(shown), total=len(jobs))
    write_text_atomic(html_path, page)
    title = f"{sweep_dir.name}: {step_label}"
    if len(shown) < len(jobs):
        title += f" (first {len(shown)} of {len(jobs)} jobs)"
    save_png(render_png(plot, cells, title=title), png_path)
    return html_path, png_path

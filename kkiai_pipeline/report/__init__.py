"""Human-readable views of what the runs produced.

- :func:`write_run_report`: ``report.html`` in a run directory (:mod:`.run_report`);
- :func:`write_sweep_grid`: ``grid.html`` and ``grid.png`` at a multirun's sweep root, an X/Y/Z plot of
  one step's first output per job (:mod:`.grid`).

Both read only what the runs wrote (run.json, Hydra's overrides, the output files), never raise on odd
contents, and write self-contained pages (no script, no remote resource) that reference the files by
relative paths, so a run or sweep directory can be moved or archived as a whole.
"""

from __future__ import annotations

from .grid import write_sweep_grid
from .run_report import write_run_report

__all__ = ["write_run_report", "write_sweep_grid"]

"""kkiai-pipeline: YAML pipelines of image-generation predictions on the kkiai API.

The Python API (see README, "Python API")::

    import kkiai_pipeline
    result = kkiai_pipeline.run("product_shots", overrides=["api=sandbox"])
    swept = kkiai_pipeline.sweep("product_shots", overrides=["api=sandbox", "seed=1,2"])

``run``, ``run_async``, ``run_sweep`` and their result types (:mod:`.python_api`) are imported on first
use, so that importing any submodule (the CLI, the emulator) does not pay for Hydra's compose machinery.

``sweep`` is ``run_sweep``; the multirun machinery of ``kkiai-run`` lives in :mod:`.multirun`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .python_api import (
        Output,
        RunResult,
        StepResult,
        SweepJob,
        SweepResult,
        run,
        run_async,
        run_sweep,
    )

    sweep = run_sweep

_PYTHON_API = frozenset(
    {"Output", "RunResult", "StepResult", "SweepJob", "SweepResult", "run", "run_async", "run_sweep"}
)

__all__ = [
    "Output",
    "RunResult",
    "StepResult",
    "SweepJob",
    "SweepResult",
    "__version__",
    "run",
    "run_async",
    "run_sweep",
    "sweep",
]


def __getattr__(name: str) -> Any:
    if name in _PYTHON_API:
        from . import python_api

        return getattr(python_api, name)
    if name == "sweep":
        from .python_api import run_sweep

        return run_sweep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""kkiai-pipeline: YAML pipelines of image-generation predictions on the kkiai API.

The Python API (see README, "Python API")::

    import kkiai_pipeline
    result = kkiai_pipeline.run("product_shots", overrides=["api=sandbox"])
    swept = kkiai_pipeline.sweep("product_shots", overrides=["api=sandbox", "seed=1,2"])

``run``, ``run_async``, ``run_sweep`` and their result types (:mod:`.python_api`) are imported on first
use, so that importing any submodule (the CLI, the emulator) does not pay for Hydra's compose machinery.

``kkiai_pipeline.sweep`` is also the multirun module (:mod:`.sweep`): Python binds a submodule to the
package's attribute of its name when it is imported, whatever ``__init__`` put there. So the module
itself is made callable, as ``run_sweep``, whenever it is bound (:class:`_Package`), and
``kkiai_pipeline.sweep.end_sweep`` and friends keep working.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Sequence
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
    if name == "sweep":  # not imported yet: importing it binds it (callable) to this package
        return importlib.import_module(f"{__name__}.sweep")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _SweepModule(types.ModuleType):
    """The multirun module, callable as :func:`.python_api.run_sweep`."""

    def __call__(
        self, pipeline: str, overrides: Sequence[str] = (), *, progress: bool = False, verbose: bool = False
    ) -> SweepResult:
        from .python_api import run_sweep

        return run_sweep(pipeline, overrides, progress=progress, verbose=verbose)


class _Package(types.ModuleType):
    """This package: the sweep module is made callable when the import system binds it here."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "sweep" and type(value) is types.ModuleType:
            value.__class__ = _SweepModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

"""Finding pipeline files and offering them to Hydra as the config group ``pipeline``.

``pipeline=NAME`` loads ``NAME.yaml`` from, in order: each directory of ``KKIAI_PIPELINE_PATH``
(os.pathsep-separated), ``./pipelines/`` in the working directory, the pipelines shipped with the package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from hydra.core.config_store import ConfigStore

from .errors import PipelineError
from .paths import shipped_dir
from .pipeline import read_pipeline_file

PATH_VARIABLE = "KKIAI_PIPELINE_PATH"


def search_path(environ: Mapping[str, str], cwd: Path) -> list[Path]:
    """The directories searched for pipelines, highest priority first."""
    dirs = [Path(p) for p in environ.get(PATH_VARIABLE, "").split(os.pathsep) if p]
    return [*dirs, cwd / "pipelines", shipped_dir("pipelines")]


def available(dirs: list[Path]) -> dict[str, Path]:
    """Pipeline name -> file; a name found in several directories comes from the first."""
    found: dict[str, Path] = {}
    for folder in dirs:
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else ():
            found.setdefault(path.stem, path.resolve())
    return found


def register(pipelines: Mapping[str, Path]) -> None:
    """Store each pipeline in Hydra's ConfigStore under the group ``pipeline``.

    A file that does not parse is stored empty; the run that selects it reports the syntax error with
    file and line, and every other pipeline stays usable.
    """
    store = ConfigStore.instance()
    for name, path in pipelines.items():
        try:
            node = read_pipeline_file(path)
        except PipelineError:
            node = {}
        store.store(group="pipeline", name=name, node=node)

"""Finding pipeline files and offering them to Hydra as the config group ``pipeline``.

``pipeline=NAME`` loads ``NAME.yaml`` from, in order: each directory of ``KKIAI_PIPELINE_PATH``
(os.pathsep-separated), ``./pipelines/`` in the working directory, the pipelines shipped with the package.

Only the pipelines the command line selects are read; every other file in the search path is known by
name only (stored empty), so a broken or hostile file never affects a run of another pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob

from .errors import PipelineError
from .paths import shipped_dir
from .pipeline import read_pipeline_file

PATH_VARIABLE = "KKIAI_PIPELINE_PATH"
GROUP = "pipeline"


def search_path(environ: Mapping[str, str], cwd: Path) -> list[Path]:
    """The directories searched for pipelines, highest priority first."""
    dirs = [Path(p) for p in environ.get(PATH_VARIABLE, "").split(os.pathsep) if p]
    return [*dirs, cwd / "pipelines", shipped_dir("pipelines")]


def available(dirs: list[Path]) -> dict[str, Path]:
    """Pipeline name -> file; a name found in several directories comes from the first."""
    found: dict[str, Path] = {}
    for folder in dirs:
        try:
            paths = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
        except OSError:  # an unreadable directory in the search path hides nothing else
            paths = []
        for path in paths:
            found.setdefault(path.stem, _resolved(path))
    return found


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: keep the name; reading it reports the problem
        return path.absolute()


def selected(args: Iterable[str], names: Iterable[str]) -> set[str]:
    """The pipeline names that the command-line overrides ``args`` select (sweeps and globs included)."""
    known = sorted(names)
    parser = OverridesParser.create()
    chosen: set[str] = set()
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue  # Hydra's flags (-m, --cfg job, ...) and their values
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # Hydra reports a bad override itself
            continue
        if override.key_or_group != GROUP or override.is_delete():
            continue
        value = override.value()
        if isinstance(value, Glob):
            chosen.update(value.filter(known))
        elif override.is_sweep_override():
            chosen.update(override.sweep_string_iterator())
        else:
            chosen.add(override.get_value_element_as_str())
    return chosen


def register(pipelines: Mapping[str, Path], *, load: Iterable[str] | None = None) -> None:
    """Store each pipeline in Hydra's ConfigStore under the group ``pipeline``.

    Only the names in ``load`` (all when None) are read; the others are stored empty, known by name. A
    file that does not load is stored empty too; the run that selects it reports why (load_pipeline).
    """
    wanted = set(pipelines) if load is None else set(load)
    store = ConfigStore.instance()
    for name, path in pipelines.items():
        node = {}
        if name in wanted:
            try:
                node = read_pipeline_file(path)
            except PipelineError:
                node = {}
            # A pipeline file is the node `pipeline`, never a defaults list that composes other configs.
            node.pop("defaults", None)
        store.store(group=GROUP, name=name, node=node)

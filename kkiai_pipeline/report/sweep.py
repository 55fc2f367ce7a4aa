"""A Hydra multirun read as an X/Y/Z plot: its jobs, the keys that vary, and where each job goes.

The sweep root holds ``multirun.yaml`` and one numbered directory per job, each with
``.hydra/overrides.yaml`` (that job's ``key=value`` overrides). The axes are the keys whose values differ
between jobs, in the order they were written on the command line (``hydra.overrides.task``): the first
is X (columns), the second Y (rows), and each combination of the others (Z) gets a grid of its own.
Values keep the order in which the jobs met them, which is the sweeper's order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import yaml

UNSET = "(unset)"  # the value of a key that a job's overrides do not mention


@dataclass(frozen=True)
class Job:
    """One job directory of the sweep and its overrides (``key -> value`` as written, unescaped)."""

    name: str
    path: Path
    overrides: Mapping[str, str]


@dataclass(frozen=True)
class Axis:
    """A swept key: its full name, the short label shown in the grid, and its values in sweep order."""

    key: str
    label: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Grid:
    """One X/Y table: the Z values it stands for, and the job of each (row, column), if any."""

    fixed: tuple[tuple[Axis, str], ...]
    cells: Mapping[tuple[int, int], Job]


@dataclass(frozen=True)
class Plot:
    """The whole sweep laid out: X and Y (either may be missing), the Z axes, and the grids."""

    x: Axis | None
    y: Axis | None
    z: tuple[Axis, ...]
    grids: tuple[Grid, ...]
    common: Mapping[str, str]  # overrides that every job shares

    @property
    def columns(self) -> tuple[str, ...]:
        return self.x.values if self.x else ("",)

    @property
    def rows(self) -> tuple[str, ...]:
        return self.y.values if self.y else ("",)


def read_jobs(sweep_dir: Path) -> list[Job]:
    """The sweep's job directories (numbered), in job order; a job's unreadable overrides are empty."""
    try:
        names = [p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    except OSError:
        return []
    return [Job(n, sweep_dir / n, _job_overrides(sweep_dir / n)) for n in sorted(names, key=int)]


def task_order(sweep_dir: Path) -> list[str]:
    """The keys of ``hydra.overrides.task`` in ``multirun.yaml``, as written (empty if unreadable)."""
    task = _nested(load_yaml(sweep_dir / "multirun.yaml"), "hydra", "overrides", "task")
    if not isinstance(task, list):
        return []
    return [_key(item.split("=", 1)[0]) for item in task if isinstance(item, str) and "=" in item]


def layout(jobs: Sequence[Job], order: Sequence[str]) -> Plot:
    """Lay ``jobs`` out on the keys that vary among them (``order`` first, then first met)."""
    axes = swept_axes(jobs, order)
    x, y, z = (axes[0] if axes else None), (axes[1] if len(axes) > 1 else None), tuple(axes[2:])
    grids = []
    for fixed in product(*(axis.values for axis in z)):
        cells: dict[tuple[int, int], Job] = {}
        for job in jobs:
            if all(value_of(job, axis) == value for axis, value in zip(z, fixed, strict=True)):
                cells.setdefault((_index(job, y), _index(job, x)), job)
        if cells:
            grids.append(Grid(tuple(zip(z, fixed, strict=True)), cells))
    varying = {axis.key for axis in axes}
    return Plot(x, y, z, tuple(grids), _common(jobs, varying))


def swept_axes(jobs: Sequence[Job], order: Sequence[str]) -> list[Axis]:
    """The keys whose value differs between jobs, with short unique labels and ordered values."""
    keys: list[str] = []
    for key in [*order, *(k for job in jobs for k in job.overrides)]:
        if key not in keys and len({job.overrides.get(key, UNSET) for job in jobs}) > 1:
            keys.append(key)
    labels = short_labels(keys)
    return [Axis(key, labels[key], _values(jobs, key)) for key in keys]


def short_labels(keys: Sequence[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other key ends with (``a.b.seed`` -> ``seed``)."""
    labels = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            label = ".".join(parts[-n:])
            if not any(other != key and (other == label or other.endswith("." + label)) for other in keys):
                break
        labels[key] = label
    return labels


def value_of(job: Job, axis: Axis) -> str:
    """The job's value on ``axis``."""
    return job.overrides.get(axis.key, UNSET)


def _index(job: Job, axis: Axis | None) -> int:
    return axis.values.index(value_of(job, axis)) if axis else 0


def _values(jobs: Sequence[Job], key: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(job.overrides.get(key, UNSET) for job in jobs))


def _common(jobs: Sequence[Job], varying: set[str]) -> dict[str, str]:
    if not jobs:
        return {}
    first = jobs[0].overrides
    return {k: v for k, v in first.items() if k not in varying and all(j.overrides.get(k) == v for j in jobs)}


def _job_overrides(job_dir: Path) -> dict[str, str]:
    raw = load_yaml(job_dir / ".hydra" / "overrides.yaml")
    return parse_overrides(raw) if isinstance(raw, list) else {}


def parse_overrides(items: Sequence[Any]) -> dict[str, str]:
    """Hydra's ``key=value`` overrides as ``key -> value`` (prefixes dropped, values unescaped)."""
    pairs = (item.split("=", 1) for item in items if isinstance(item, str) and "=" in item)
    return {_key(key): _unescape(value) for key, value in pairs}


def _key(text: str) -> str:
    """A key without Hydra's add/delete prefixes, so that ``+seed=1,2`` and ``+seed=1`` match."""
    return text.strip().lstrip("+~")


def _unescape(value: str) -> str:
    """Hydra's escaped form of a value (``a\\ mug``, ``'quoted'``) as the user meant it."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1].replace("\\" + value[0], value[0])
    return re.sub(r"\\(.)", r"\1", value)


def load_yaml(path: Path) -> Any:
    """The YAML file's data; None when it is missing or unreadable."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _nested(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data

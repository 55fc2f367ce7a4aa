"""Two runs (or two jobs of sweeps) side by side: the settings and step inputs that differ.

Settings are the composed config Hydra kept (``.hydra/config.yaml``) and the overrides typed
(``.hydra/overrides.yaml``; ``hydra.run.dir`` and ``hydra.sweep.dir`` are left out, as every run has a
directory of its own). Steps are compared from run.json (read by
:func:`kkiai_pipeline.rundir.read_record`): model, version, status and each input sent. An input that
is the URL of an earlier step's output is shown as that output and its sha256, so two runs that
handed the same picture on compare equal, and two that did not say so; and a step whose ledger key is
the same in both runs (the key hashes every input file by content) was sent the same input.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError
from .multirun import SWEEP_FILE
from .pricing import format_cost
from .report.html import short_value
from .report.sweep import load_yaml
from .rundir import RunRecord, StepRecord, read_record

ABSENT = "(absent)"
_OWN_DIR = frozenset({"hydra.run.dir", "hydra.sweep.dir"})


@dataclass(frozen=True)
class Difference:
    """One key whose value differs: where it is, and A's and B's values as text."""

    key: str
    a: str
    b: str


@dataclass(frozen=True)
class Side:
    """One of the two runs: its record and its Hydra files (None when missing or unreadable)."""

    path: Path
    run: RunRecord
    config: Mapping[str, Any] | None
    overrides: list[str] | None


@dataclass(frozen=True)
class Comparison:
    """What differs between ``a`` and ``b``: overrides, settings, and each step (in A's order, then B's)."""

    a: Side
    b: Side
    overrides: list[Difference]
    settings: list[Difference]
    steps: dict[str, list[Difference]]

    @property
    def step_ids(self) -> list[str]:
        return list(self.steps)

    @property
    def same(self) -> bool:
        return not (self.overrides or self.settings or any(self.steps.values()))

    def to_json(self) -> dict[str, Any]:
        """The differences for ``kkiai-runs --compare --json``: each as ``{key, a, b}``."""
        return {
            "a": str(self.a.path),
            "b": str(self.b.path),
            "overrides": [asdict(d) for d in self.overrides],
            "settings": [asdict(d) for d in self.settings],
            "steps": {sid: [asdict(d) for d in diffs] for sid, diffs in self.steps.items() if diffs},
        }


def load_side(path: Path) -> Side:
    """The run in ``path``; raises UsageError (exit 2) when it is not a run directory."""
    if not path.is_dir():
        raise UsageError(f"{path} is not a run: no such directory")
    reading = read_record(path)
    if reading.record is None:
        hint = ""
        if (path / SWEEP_FILE).is_file() or (path / "multirun.yaml").is_file():
            hint = f" ({path} is a sweep: compare two of its jobs, e.g. {path / '0'} {path / '1'})"
        raise UsageError(f"{path} is not a run: {reading.problem}{hint}")
    config = load_yaml(path / ".hydra" / "config.yaml")
    overrides = load_yaml(path / ".hydra" / "overrides.yaml")
    return Side(
        path,
        reading.record,
        config if isinstance(config, Mapping) else None,
        [str(o) for o in overrides] if isinstance(overrides, list) else None,
    )


def compare(a: Path, b: Path) -> Comparison:
    """Read both runs and tell what differs; raises UsageError if either is not a run."""
    left, right = load_side(a), load_side(b)
    steps = {
        sid: _step_differences(left.run, right.run, sid)
        for sid in dict.fromkeys([*left.run.steps, *right.run.steps])
    }
    return Comparison(
        left,
        right,
        _diff(_overrides(left.overrides), _overrides(right.overrides)),
        _diff(_flat(left.config), _flat(right.config)),
        steps,
    )


def render_text(comparison: Comparison) -> str:
    """The differences as a person reads them: each key, then A's and B's value on lines of their own."""
    a, b = comparison.a, comparison.b
    lines = [f"A  {a.path}  ({_describe(a.run)})", f"B  {b.path}  ({_describe(b.run)})"]
    sections = [
        ("overrides that differ (.hydra/overrides.yaml)", comparison.overrides),
        ("settings that differ (.hydra/config.yaml)", comparison.settings),
        *((f"step {sid}", diffs) for sid, diffs in comparison.steps.items()),
    ]
    for title, diffs in sections:
        if diffs:
            lines += ["", f"{title}:"]
            for diff in diffs:
                lines += [f"  {diff.key}", f"    A  {diff.a}", f"    B  {diff.b}"]
    for side, name in ((a, "A"), (b, "B")):
        if side.config is None:
            lines.append(f"note: {name} has no readable .hydra/config.yaml: its settings are not compared")
    if comparison.same:
        lines += ["", "no setting or step input differs"]
    return "\n".join(lines)


def _describe(run: RunRecord) -> str:
    totals = run.totals()
    cost = f", estimated cost {format_cost(totals.cost)}" if totals.cost is not None else ""
    return f"{run.pipeline}, {run.status}, {totals.created} created, {totals.reused} reused{cost}"


def _step_differences(a: RunRecord, b: RunRecord, sid: str) -> list[Difference]:
    left, right = a.steps.get(sid), b.steps.get(sid)
    if left is None or right is None:
        return [Difference("step", "present" if left else ABSENT, "present" if right else ABSENT)]
    return _diff(_step_view(left, right, _known(a)), _step_view(right, left, _known(b)))


def _step_view(step: StepRecord, other: StepRecord, known: Mapping[str, str]) -> dict[str, str]:
    """What is compared of a step; inputs whose ledger key equals the other side's are left out."""
    view = {"model": step.model, "version": step.version, "status": step.status}
    if not step.items:
        if not _same_key(step, other):
            view.update(_flat(_named(step.input, known), "input."))
        return view
    view["items"] = str(len(step.items))
    others = {item.index: item for item in other.items}
    for item in step.items:
        twin = others.get(item.index)
        if twin is None or not _same_key(item, twin):
            view.update(_flat(_named(item.input, known), f"items[{item.index}].input."))
    return view


def _same_key(a: StepRecord, b: StepRecord) -> bool:
    """The key hashes the service, the version and the input with every file by its sha256: equal keys
    mean the same input was sent, even where run.json shows one file as a URL and the other as data."""
    return a.key is not None and a.key == b.key


def _known(run: RunRecord) -> dict[str, str]:
    """URL of each stored output -> which output it is, and its content (so equal files compare equal)."""
    named = {}
    for sid, step in run.steps.items():
        for i, out in enumerate(step.outputs):
            if out.url:
                named[out.url] = f"output {i} of {sid} (sha256 {out.sha256[:12]})"
    return named


def _named(value: Any, known: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return known.get(value, value)
    if isinstance(value, list):
        return [_named(v, known) for v in value]
    if isinstance(value, Mapping):
        return {k: _named(v, known) for k, v in value.items()}
    return value


def _overrides(listed: list[str] | None) -> dict[str, str]:
    pairs = (o.split("=", 1) for o in listed or [] if "=" in o)
    return {k: v for k, v in pairs if k.lstrip("+~") not in _OWN_DIR}


def _flat(value: Any, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists and scalars are leaves, shown as short values."""
    return dict(_leaves(value, prefix)) if value is not None else {}


def _leaves(value: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            yield from _leaves(inner, f"{prefix}{key}.")
    elif prefix:
        yield prefix.rstrip("."), short_value(value)


def _diff(a: Mapping[str, str], b: Mapping[str, str]) -> list[Difference]:
    keys = list(dict.fromkeys([*a, *b]))
    return [Difference(k, a.get(k, ABSENT), b.get(k, ABSENT)) for k in keys if a.get(k) != b.get(k)]

"""``kkiai-run --rerun RUN_DIR [overrides]``: a past run's exact configuration, again, in a new directory.

The configuration is what the run saved, not what the files say today: the composed config in
``RUN_DIR/.hydra/config.yaml`` (its ``pipeline`` node with the run's overrides applied, the seed and
every setting), the config group choices in ``.hydra/hydra.yaml`` (which ``api``) and, from ``run.json``,
the model version each step used (pinned as ``owner/name:<version>``). So a rerun needs neither the
original pipeline file nor the original command line, and its requests are the original's: with the cache
on, the ledger reuses every prediction; with ``cache=false`` they are made again with the same bodies.

How it is composed: the saved ``pipeline`` node is stored in Hydra's ConfigStore as the pipeline of the
run's name (in place of any file of that name), the other saved settings as the config ``kkiai_rerun``
(package ``_global_``), appended after the primary config. The command line becomes
``pipeline=NAME api=CHOICE +kkiai_rerun=saved`` then the extra overrides, which Hydra applies last, on
top. The shipped primary config stays the base, so Hydra's settings (callbacks, run directory, logging)
are this version's. ``file("...")`` in a template is read at run time relative to the original pipeline
file's folder (``source`` in run.json); if it is gone, the run stops on that step's input.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .discovery import GROUP
from .errors import ConfigError
from .rundir import read_record

OPTION = "--rerun"
SAVED_GROUP = "kkiai_rerun"
# Settings a rerun does not take from the run it repeats: it starts afresh in its own directory.
NOT_CARRIED = ("resume",)
_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Rerun:
    """What a rerun composes from: the saved pipeline, the other saved settings and the group choices."""

    run_dir: Path
    name: str
    pipeline: dict[str, Any]
    settings: dict[str, Any]
    choices: dict[str, str]
    source: Path | None

    def overrides(self, *, chosen: Collection[str] = ()) -> list[str]:
        """The command-line words that compose the saved configuration (the user's come after).

        ``chosen``: the config groups the user's words choose anew (``api=kkiai``): theirs win.
        """
        choices = [f"{group}={value}" for group, value in sorted(self.choices.items()) if group not in chosen]
        return [f"{GROUP}={self.name}", *choices, f"+{SAVED_GROUP}=saved"]

    def register(self, *, chosen: Collection[str] = ()) -> None:
        """Store the saved pipeline under its name (in place of a file's) and the saved settings, less
        those of the groups in ``chosen`` (another ``api`` takes its own settings, not the saved ones)."""
        store = ConfigStore.instance()
        store.store(group=GROUP, name=self.name, node=self.pipeline)
        settings = {k: v for k, v in self.settings.items() if k not in chosen}
        store.store(group=SAVED_GROUP, name="saved", node=settings, package="_global_")


def split_args(args: Sequence[str]) -> tuple[Path | None, list[str]]:
    """``(RUN_DIR, the other words)`` for ``--rerun RUN_DIR`` or ``--rerun=RUN_DIR``; None without it."""
    rest: list[str] = []
    run_dir: Path | None = None
    words = iter(args)
    for word in words:
        if word == OPTION:
            value = next(words, None)
            # An override (key=value) where the directory should be: the directory was left out.
            if value is None or value.startswith("-") or ("=" in value and not Path(value).exists()):
                usage = f"kkiai-run {OPTION} RUN_DIR [KEY=VALUE ...]"
                raise ConfigError(f"{OPTION} needs a run directory: {usage}")
            run_dir = Path(value)
        elif word.startswith(OPTION + "="):
            run_dir = Path(word.split("=", 1)[1])
        else:
            rest.append(word)
    return run_dir, rest


def load_rerun(run_dir: Path) -> Rerun:
    """The saved configuration of the run in ``run_dir``; ConfigError if it has none."""
    run_dir = run_dir.expanduser().absolute()
    saved = _read_yaml(run_dir / ".hydra" / "config.yaml", run_dir)
    hydra_cfg = _read_yaml(run_dir / ".hydra" / "hydra.yaml", run_dir).get("hydra")
    choices = hydra_cfg.get("runtime", {}).get("choices", {}) if isinstance(hydra_cfg, dict) else {}
    name = choices.get(GROUP) if isinstance(choices, dict) else None
    pipeline = saved.get(GROUP)
    if not isinstance(name, str) or not name or not isinstance(pipeline, dict):
        raise ConfigError(f"{run_dir} holds no pipeline in .hydra/: it is not a kkiai-run run directory")
    record = read_record(run_dir).record
    versions = {sid: (step.model, step.version) for sid, step in record.steps.items()} if record else {}
    settings = {k: v for k, v in saved.items() if k != GROUP and k not in NOT_CARRIED}
    source = Path(record.source) if record is not None and record.source else None
    return Rerun(
        run_dir=run_dir,
        name=name,
        pipeline=pin_versions(pipeline, versions),
        settings=settings,
        choices={"api": str(choices["api"])} if choices.get("api") else {},
        source=source,
    )


def pin_versions(pipeline: dict[str, Any], versions: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """``pipeline`` with each step's ``model: owner/name`` made ``owner/name:<the version it ran>``.

    A step the run did not record (it never started), or whose model names a version already, is left.
    """
    steps = pipeline.get("steps")
    if not isinstance(steps, dict):
        return pipeline
    pinned: dict[str, Any] = {}
    for sid, step in steps.items():
        model, version = versions.get(str(sid), ("", ""))
        named = step.get("model") if isinstance(step, dict) else None
        if isinstance(named, str) and model and version and ":" not in named and not _HASH.fullmatch(named):
            step = {**step, "model": f"{model}:{version}"}
        pinned[sid] = step
    return {**pipeline, "steps": pinned}


def _read_yaml(path: Path, run_dir: Path) -> dict[str, Any]:
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{run_dir} is not the directory of a kkiai-run run (no .hydra/{path.name}): "
            f"{OPTION} takes a run directory such as outputs/<pipeline>/<timestamp>"
        ) from exc
    except (OSError, yaml.YAMLError, OmegaConfBaseException) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"cannot read {path}: not a mapping")
    return {str(k): v for k, v in data.items()}

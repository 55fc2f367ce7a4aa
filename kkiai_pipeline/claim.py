"""The run directory's claim: one directory belongs to one run (or one sweep) at a time.

Hydra writes ``.hydra/`` and opens ``run.log`` in the output directory inside ``run_job``, before the
task function and before any ``on_job_start`` callback; only ``on_run_start`` and ``on_multirun_start``
come earlier. So the claim is a Hydra callback on those two: it resolves ``hydra.run.dir`` (a sweep:
``hydra.sweep.dir``, claimed once for all its jobs), creates the directory and takes an exclusive,
non-blocking ``flock`` on ``.kkiai.lock`` in it. The lock is held until the process ends; the OS drops
it then, also on ``kill -9``, so a crashed run never leaves a stale lock behind.

Refused, with exit code 2 and nothing in the directory changed:

- a directory whose lock another process holds ("in use by another run (pid N)");
- a directory holding a run (``run.json``; a sweep: ``sweep.json`` or a job's ``run.json``) without
  ``resume=true``. A dry run writes no record and is not refused for this.

Default directories never collide. When the user did not choose the directory (no ``hydra.run.dir=`` /
``hydra.sweep.dir=`` override, and no ``resume=true``, which always means the directory named), its name
is a timestamp meant to be fresh: if it already exists, the claim takes ``<name>-2``, ``<name>-3``, ...
with an atomic ``os.mkdir``, so two runs started in the same second get two directories. A suffix rather
than a finer timestamp: microseconds or a pid only make a collision unlikely and make every name longer;
the suffix keeps the readable name of the common case, and the atomic mkdir makes the choice safe
between processes.

The directory claimed is then written into the config (``hydra.run.dir`` as a plain string; a sweep
also gets a ``hydra.sweep.dir`` override, which Hydra replays into each job's config), so the directory
``run_job`` uses is the one locked, whatever the ``now`` resolver would answer later.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from .errors import ConfigError, KkiaiError, RunDirInUse
from .rundir import MANIFEST

LOCK_FILE = ".kkiai.lock"
SWEEP_RECORD = (
    "sweep.json"  # the sweep's own record (see multirun.py); not imported, to keep this module light
)

_HELD: list[Claim] = []  # claims of this process: their descriptors stay open until it exits


@dataclass(frozen=True)
class Claim:
    """A directory this process holds; ``fd`` is the open, locked lock file."""

    path: Path
    fd: int

    def release(self) -> None:
        """Unlock now rather than at exit (for tests and embedders; the CLI keeps it to the end)."""
        if self in _HELD:
            _HELD.remove(self)
            os.close(self.fd)


def claim_dir(path: Path, *, fresh: bool, refuse_existing: bool, sweep: bool = False) -> Claim:
    """Create and lock ``path`` (``fresh``: a free ``path-N`` if taken) for the rest of the process.

    ``refuse_existing``: a directory already holding a run is refused (ConfigError). Raises
    RunDirInUse when another process holds the lock. Nothing is written when refused.
    """
    if fresh:
        path = _fresh_dir(path)
    else:
        if refuse_existing and _holds_a_run(path, sweep=sweep):
            _refuse_existing(path, sweep=sweep)
        path.mkdir(parents=True, exist_ok=True)
    fd = _lock(path)
    if refuse_existing and _holds_a_run(path, sweep=sweep):  # a run finished between the look and the lock
        os.close(fd)
        _refuse_existing(path, sweep=sweep)
    claim = Claim(path, fd)
    _HELD.append(claim)
    return claim


def _fresh_dir(path: Path) -> Path:
    """``path``, or the first of ``path-2``, ``path-3``, ... that this call created (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        candidate = path if n == 1 else path.with_name(f"{path.name}-{n}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


def _lock(path: Path) -> int:
    """The descriptor of ``path``'s lock file, locked; writes our pid into it for whoever is refused."""
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunDirInUse(path, pid=_holder(path)) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holder(path: Path) -> int | None:
    """The pid the holder wrote into the lock file (None if it has not yet, or it is unreadable)."""
    try:
        return int((path / LOCK_FILE).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _holds_a_run(path: Path, *, sweep: bool) -> bool:
    if sweep:
        return (path / SWEEP_RECORD).exists() or any(path.glob(f"*/{MANIFEST}"))
    return (path / MANIFEST).exists()


def _refuse_existing(path: Path, *, sweep: bool) -> NoReturn:
    """Raise: in use if a live run holds ``path`` (looked at without creating anything), else taken."""
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    else:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise RunDirInUse(path, pid=_holder(path)) from None
        finally:
            os.close(fd)
    what = "a sweep" if sweep else "a run"
    raise ConfigError(
        f"{path} already holds {what}: resume it with resume=true, "
        f"or choose another {'hydra.sweep.dir' if sweep else 'hydra.run.dir'}"
    )


class ClaimCallback(Callback):
    """Claims ``hydra.run.dir`` (a multirun: ``hydra.sweep.dir``) before Hydra writes anything there.

    A refusal prints one line, ``kkiai-run: error: ...``, and exits 2 (Hydra turns exceptions raised in
    callbacks into warnings, so the callback exits itself).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config, key="run.dir", sweep=False)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._claim(config, key="sweep.dir", sweep=True)

    def _claim(self, config: DictConfig, *, key: str, sweep: bool) -> None:
        HydraConfig.instance().set_config(config)  # what run_job does first: ${hydra:...} resolves
        wanted = Path(str(OmegaConf.select(config, f"hydra.{key}")))
        resume = _flag(config, "resume")
        # resume=true means an existing directory: never swap it for a fresh one, however it was set.
        fresh = not resume and not _user_chose(config, f"hydra.{key}")
        refuse = not fresh and not resume and not _flag(config, "dry_run")
        try:
            claim = claim_dir(wanted, fresh=fresh, refuse_existing=refuse, sweep=sweep)
        except KkiaiError as exc:
            print(f"kkiai-run: error: {exc}", file=sys.stderr)
            raise SystemExit(exc.exit_code) from None
        _pin(config, key=key, path=claim.path, replay=sweep and claim.path != wanted)


def _user_chose(config: DictConfig, key: str) -> bool:
    """Whether a command-line override set ``key`` (else it is our timestamped default)."""
    lines = [str(line) for line in OmegaConf.select(config, "hydra.overrides.hydra", default=[]) or []]
    overrides = OverridesParser.create().parse_overrides(lines)
    return any(o.key_or_group == key for o in overrides)


def _flag(config: DictConfig, key: str) -> bool:
    """A boolean setting of the primary config, read leniently (settings.py checks it properly later)."""
    value = OmegaConf.select(config, key, default=False)
    return value is True or str(value).lower() == "true"


def _pin(config: DictConfig, *, key: str, path: Path, replay: bool) -> None:
    """Write the claimed directory into the config; ``replay``: also into the jobs' configs of a sweep."""
    literal = str(path).replace("${", "\\${")  # a plain string, never an interpolation again
    section, name = key.split(".")
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra[section][name] = literal
        if replay:  # jobs recompose their config from these overrides (Hydra's load_sweep_config)
            config.hydra.overrides.hydra.append(f"hydra.{key}={_override_value(str(path))}")


def _override_value(text: str) -> str:
    if re.fullmatch(r"[\w./+-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

"""Sweeps that start fast: each job's config made from one composed config, not composed anew.

Under Hydra's basic sweeper and launcher, Hydra composes every job's config twice (once to validate
the batch, once to launch the job: defaults list, YAML files, merges, ~0.1 s each) and then, for each
job, deep-copies it twice more, before our task function even starts to check the job. For a sweep of
1,000 jobs that is minutes before the first prediction, although the jobs differ only in the few values
swept on the command line.

:func:`fast_sweeps` (entered by ``kkiai-run`` around Hydra) keeps Hydra's multirun, its basic sweeper
(the job list, ``multirun.yaml``, batches, callbacks) and replaces, on the sweeper Hydra instantiates
for this process, two methods when :meth:`FastJobs.plan` finds that every swept override can be applied
exactly without Hydra:

- ``validate_batch_is_legal``: applies each job's swept overrides (the same Hydra function that applies
  them after composing, so a bad value fails as it would) instead of composing the job;
- ``launcher.launch``: for each job, in order, sets the job's values, number, overrides and directory on
  one working config, writes ``.hydra/overrides.yaml``, takes ``config.yaml`` and ``hydra.yaml`` as
  data (written by a thread once every job is prepared, while the first predictions run), points the
  job's log file at its directory and calls the task function, as Hydra's ``run_job`` does, without
  composing or copying the config.

The working config is one Hydra composition of the first job without its swept overrides. An override
qualifies when it is a plain ``key=value`` (no ``+``/``++``/``~``, no package), its key is not a config
group, not under ``hydra.`` and shares no path with another override, and every value it takes (and the
value it replaces) is a scalar: then applying it last, onto any job's state, gives what Hydra's
composition gives. As a last guard the last job is also composed by Hydra and compared, whole; any
difference, or anything else (another sweeper or launcher, ``hydra.sweeper.params``, batches,
``hydra.job.chdir``, ``env_set``, a callback acting on each job), leaves the sweep to Hydra as it was.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.core.plugins import Plugins
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    configure_log,
    filter_overrides,
    setup_globals,
)
from hydra.experimental.callback import Callback
from hydra.types import HydraContext, TaskFunction
from omegaconf import Container, DictConfig, OmegaConf, open_dict, read_write

from .jobfiles import HydraFiles, JobLogs, write_yaml
from .multirun import BASIC_LAUNCHER, BASIC_SWEEPER

log = logging.getLogger(__name__)
hydra_log = logging.getLogger("hydra._internal.core_plugins.basic_launcher")  # the lines Hydra logs


@contextmanager
def fast_sweeps() -> Iterator[None]:
    """While inside, a multirun that Hydra starts in this process gets :class:`FastJobs` if it can.

    Leaving waits until every ``.hydra/`` file of its jobs is written: keep the sweep's run inside.
    """
    plugins = Plugins.instance()
    original = plugins.instantiate_sweeper
    made: list[FastJobs] = []

    def instantiate_sweeper(
        *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> Any:
        sweeper = original(hydra_context=hydra_context, task_function=task_function, config=config)
        reason = FastJobs.refused(sweeper, hydra_context, config)
        if reason is None:
            made.append(FastJobs(sweeper, hydra_context, task_function, config))
            made[-1].install()
        else:
            log.debug("each job of the sweep is composed by Hydra: %s", reason)
        return sweeper

    plugins.instantiate_sweeper = instantiate_sweeper  # type: ignore[method-assign]
    try:
        yield
    finally:
        del plugins.instantiate_sweeper  # the class's method again
        for jobs in made:
            jobs.files.close()


def _overrides_each_job(callbacks: Any) -> bool:
    for callback in getattr(callbacks, "callbacks", []):
        kind = type(callback)
        if kind.on_job_start is not Callback.on_job_start or kind.on_job_end is not Callback.on_job_end:
            return True
    return False


class FastJobs:
    """The jobs of one basic-launcher sweep, made from one working config (see the module's doc)."""

    def __init__(
        self, sweeper: Any, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper = sweeper
        self.context = hydra_context
        self.task_function = task_function
        self.config = config  # the multirun's config (Hydra's "master" config)
        self.parser = OverridesParser.create()
        self.parsed: dict[str, Override] = {}
        self.working: DictConfig | None = None  # None: Hydra composes each job (see plan)
        self.swept: list[int] = []  # positions, in a job's overrides, of those applied here
        self.planned = False
        self.task: DictConfig | None = None  # the task function's config: the working one without hydra
        self.hydra_data: Any = None  # the working config's hydra node as data, patched for each job
        self.checked_data = False  # whether the patched data was compared with the whole node once
        self.naming: tuple[str, str, list[str]] | None = None  # hydra.job.config.override_dirname
        self.fixed: _Fixed | None = None
        self.files = HydraFiles()
        self.logs = JobLogs()

    @staticmethod
    def refused(sweeper: Any, hydra_context: HydraContext, config: DictConfig) -> str | None:
        """Why this multirun is left to Hydra as it is; None when :class:`FastJobs` may plan it."""
        hydra = config.hydra
        if config.get("fast_sweep") is False:
            return "fast_sweep=false"
        if hydra.sweeper.get("_target_") != BASIC_SWEEPER or hydra.launcher.get("_target_") != BASIC_LAUNCHER:
            return "not Hydra's basic sweeper and launcher"
        if hydra.sweeper.get("params") or hydra.sweeper.get("max_batch_size") is not None:
            return "hydra.sweeper.params or max_batch_size is set"
        if not hasattr(sweeper, "validate_batch_is_legal") or not hasattr(sweeper, "launcher"):
            return "the sweeper is not the one known"
        if hydra.job.get("chdir") or hydra.job.get("env_set"):
            return "hydra.job.chdir or hydra.job.env_set is set"
        if _overrides_each_job(hydra_context.callbacks):
            return "a callback acts on each job"
        return None

    def install(self) -> None:
        self.sweeper.validate_batch_is_legal = self.validate
        self.sweeper.launcher.launch = self.launch

    # -- planning -------------------------------------------------------------------------------------

    def _parse(self, line: str) -> Override:
        found = self.parsed.get(line)
        if found is None:
            [found] = self.parser.parse_overrides([line])
            self.parsed[line] = found
        return found

    def plan(self, batch: Sequence[Sequence[str]]) -> None:
        """Decide, once, whether the jobs are made here: compose the working config if so."""
        self.planned = True
        reason = self._refused_overrides(batch)
        if reason is None:
            first = [line for i, line in enumerate(batch[0]) if i not in self.swept]
            self.working = self._compose(first)
            last = self._compose(list(batch[-1]))  # the guard: the last job as Hydra composes it
            self._set_job(self.working, batch[-1], None)
            if _plain(self.working) != _plain(last):
                reason = "the guard job differs from Hydra's composition"
            else:
                self.task = _task_config(self.working)
                self.hydra_data = _plain(self.working.hydra)
        if reason is not None:
            log.debug("each job of the sweep is composed by Hydra: %s", reason)
            self.working = None

    def _compose(self, overrides: list[str]) -> DictConfig:
        cfg: DictConfig = self.context.config_loader.load_sweep_config(self.config, overrides)
        return cfg

    def _refused_overrides(self, batch: Sequence[Sequence[str]]) -> str | None:
        size = len(batch[0])
        if any(len(job) != size for job in batch):
            return "the jobs have different overrides"
        self.swept = [i for i in range(size) if len({job[i] for job in batch}) > 1]
        keys = [self._parse(line).key_or_group for line in batch[0]]
        hydra_keys = [self._parse(str(line)).key_or_group for line in self.config.hydra.overrides.hydra or []]
        repository = getattr(self.context.config_loader, "repository", None)
        if repository is None:
            return "the config loader is not the one known"
        for i in self.swept:
            values = {job[i] for job in batch}
            for line in values:
                override = self._parse(line)
                if override.type != OverrideType.CHANGE or override.package is not None:
                    return f"{line} is not a plain key=value"
                if isinstance(override.value(), (dict, list)):
                    return f"{line} sets a list or mapping"
            key = keys[i]
            if key.startswith("hydra.") or key == "hydra" or repository.group_exists(key):
                return f"{key} is a config group or Hydra's own"
            others = [k for j, k in enumerate(keys) if j != i and not repository.group_exists(k)]
            others += [k for k in hydra_keys if not repository.group_exists(k)]
            if any(_overlap(key, other) for other in others):
                return f"{key} shares a path with another override"
        return None

    def _apply(self, cfg: DictConfig, job: Sequence[str]) -> None:
        """The job's swept values: as Hydra applies its overrides after composing."""
        overrides = [self._parse(job[i]) for i in self.swept]
        for override in overrides:
            current = OmegaConf.select(cfg, override.key_or_group, throw_on_missing=False)
            if isinstance(current, Container):
                raise _NotScalar(override.key_or_group)
        ConfigLoaderImpl._apply_overrides_to_config(overrides, cfg)

    def _set_job(self, cfg: DictConfig, job: Sequence[str], idx: int | None) -> str:
        """The job's values, then what Hydra's composition and launcher set from its overrides and
        number; returns its ``override_dirname``."""
        self._apply(cfg, job)
        hydra = cfg.hydra
        task, job_node = hydra.overrides.task, hydra.job
        if self.naming is None:
            naming = job_node.config.override_dirname
            self.naming = (str(naming.kv_sep), str(naming.item_sep), list(naming.exclude_keys))
        kv_sep, item_sep, exclude_keys = self.naming
        dirname = get_overrides_dirname(
            overrides=[self._parse(line) for line in job if not self._parse(line).is_hydra_override()],
            kv_sep=kv_sep,
            item_sep=item_sep,
            exclude_keys=exclude_keys,
        )
        with read_write(hydra), open_dict(hydra):
            if len(task) == len(job):  # set before: only the swept words change
                for i in self.swept:
                    task[i] = job[i]
            else:
                hydra.overrides.task = list(job)
            job_node.override_dirname = dirname
            if idx is not None:
                job_node.id = idx
                job_node.num = idx
        return dirname

    # -- what replaces Hydra's methods ------------------------------------------------------------------

    def validate(self, batch: Sequence[Sequence[str]]) -> None:
        """``validate_batch_is_legal``: every job's overrides apply (a bad value fails as in Hydra)."""
        if not self.planned:
            try:
                self.plan(batch)
            except _NotScalar as exc:
                log.debug("each job of the sweep is composed by Hydra: %s holds a mapping or list", exc)
                self.working = None
        if self.working is None:
            for overrides in batch:
                self._compose(list(overrides))
            return
        for overrides in batch:
            self._apply(self.working, overrides)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """``BasicLauncher.launch`` with each job's config set on the working config."""
        if self.working is None:
            launcher = self.sweeper.launcher
            return type(launcher).launch(launcher, job_overrides, initial_job_idx)  # type: ignore[no-any-return]
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = self.config.hydra.sweep.dir
        Path(str(sweep_dir)).mkdir(parents=True, exist_ok=True)
        hydra_log.info(f"Launching {len(job_overrides)} jobs locally")
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):  # all at once, first
            hydra_log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        runs: list[JobReturn] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            runs.append(self._run_job(self.working, list(overrides), idx))
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        self.files.start()
        return runs

    def _hydra_node(self, hydra: DictConfig, job: list[str], idx: int, dirname: str, output_dir: str) -> Any:
        """The job's hydra node as data: the working one's, with what differs between jobs replaced."""
        base = self.hydra_data
        if base is None:
            return _plain(hydra)
        data = dict(base)
        data["overrides"] = {**base["overrides"], "task": job}
        data["job"] = {**base["job"], "override_dirname": dirname, "id": str(idx), "num": idx}  # id: a str
        data["runtime"] = {**base["runtime"], "output_dir": output_dir}
        if not self.checked_data:  # once: nothing else differs
            self.checked_data = True
            whole = _plain(hydra)
            if data != whole:
                log.debug("the hydra node of a sweep job differs in more than its number and overrides")
                self.hydra_data = None
                return whole
        return data

    def _run_job(self, cfg: DictConfig, overrides: list[str], idx: int) -> JobReturn:
        """What Hydra's ``run_job`` does for one job, on the working config instead of copies of it.

        The ``.hydra/`` files are taken as data now and written by :attr:`files` once every job is
        prepared (overrides.yaml at once: the sweep's files find the jobs by it). What is the same for
        every job is read from the config once (:class:`_Fixed`).
        """
        dirname = self._set_job(cfg, overrides, idx)
        task_cfg = self.task
        assert task_cfg is not None
        self._apply(task_cfg, overrides)
        hydra = cfg.hydra
        fixed = self.fixed = self.fixed or _Fixed.read(hydra)
        instance = HydraConfig.instance()
        saved = instance.cfg
        instance.cfg = cfg  # type: ignore[assignment]  # ${hydra:...} resolves against this job
        try:
            subdir = str(idx) if fixed.subdir_is_num else str(hydra.sweep.subdir)
            output_dir = os.path.abspath(os.path.join(fixed.sweep_dir, subdir))
            with read_write(hydra), open_dict(hydra):
                hydra.runtime.output_dir = output_dir
            # The jobs share the task config (each job's values set on it in turn): not kept per job.
            ret = JobReturn(overrides=overrides, cfg=None, working_dir=os.getcwd())
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            self.logs.configure(hydra, output_dir, fixed.job_name)
            if fixed.output_subdir is not None:
                folder = Path(output_dir) / fixed.output_subdir
                # overrides.yaml now: the sweep's files find the jobs by it
                write_yaml(folder / "overrides.yaml", list(overrides))
                self.files.write(folder / "config.yaml", _plain(task_cfg))
                node = self._hydra_node(hydra, list(overrides), idx, dirname, output_dir)
                self.files.write(folder / "hydra.yaml", {"hydra": node})
            self.context.callbacks.on_job_start(config=cfg, task_function=self.task_function)
            try:
                ret.return_value = self.task_function(task_cfg)
                ret.status = JobStatus.COMPLETED
            except Exception as exc:
                ret.return_value = exc
                ret.status = JobStatus.FAILED
            ret.task_name = JobRuntime.instance().get("name")
            self.context.callbacks.on_job_end(config=cfg, job_return=ret)
            return ret
        finally:
            instance.cfg = saved


@dataclass(frozen=True)
class _Fixed:
    """What every job of the sweep shares, read from the hydra node once."""

    sweep_dir: str
    subdir_is_num: bool  # hydra.sweep.subdir is ${hydra.job.num} (ours and Hydra's default)
    output_subdir: str | None
    job_name: str

    @staticmethod
    def read(hydra: DictConfig) -> _Fixed:
        subdir = OmegaConf.to_container(hydra.sweep, resolve=False)
        assert isinstance(subdir, dict)
        output_subdir = hydra.output_subdir
        return _Fixed(
            str(hydra.sweep.dir),
            subdir.get("subdir") == "${hydra.job.num}",
            None if output_subdir is None else str(output_subdir),
            str(hydra.job.name),
        )


def _task_config(cfg: DictConfig) -> DictConfig:
    """The config without its hydra node, as Hydra's ``run_job`` gives the task function."""
    task = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
    OmegaConf.set_struct(task, True)
    OmegaConf.copy_cache(from_config=cfg, to_config=task)
    return task


class _NotScalar(Exception):
    """A swept key whose value, before the override, is a mapping or a list."""


def _overlap(key: str, other: str) -> bool:
    return key == other or key.startswith(other + ".") or other.startswith(key + ".")


def _plain(cfg: DictConfig) -> Any:
    return OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)

"""What a fast sweep (:mod:`.fastsweep`) does for each job instead of Hydra's ``run_job``: its
``.hydra/`` files (the same YAML, written later on a thread) and its log file (Hydra's job logging,
pointed at the job's directory)."""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import configure_log
from omegaconf import DictConfig, OmegaConf
from omegaconf._utils import get_omega_conf_dumper

log = logging.getLogger(__name__)

_DUMPER = get_omega_conf_dumper()


class HydraFiles:
    """Writes ``.hydra/`` files as Hydra does (``OmegaConf.to_yaml`` of the same data), on a thread
    started once every job is prepared, so that writing them does not delay the first prediction."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Any]] = []
        self.thread: threading.Thread | None = None

    def write(self, path: Path, data: Any) -> None:
        self.pending.append((path, data))

    def start(self) -> None:
        """Write what is pending, from now on, on a thread."""
        if self.thread is None and self.pending:
            self.pending.reverse()  # popped from the end
            self.thread = threading.Thread(target=self._drain, name="kkiai-hydra-files", daemon=True)
            self.thread.start()

    def close(self) -> None:
        """Wait until every file is written."""
        self.start()
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    def _drain(self) -> None:
        while self.pending:
            path, data = self.pending.pop()
            try:
                write_yaml(path, data)
            except OSError as exc:
                log.error("could not write %s: %s", path, exc)


def write_yaml(path: Path, data: Any) -> None:
    """``hydra.core.utils._save_config``: ``OmegaConf.to_yaml`` of the config the data came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(data, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=_DUMPER)
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


class JobLogs:
    """Each job's logging, as Hydra's ``configure_log`` sets it up, without redoing it for every job.

    When the only interpolations of ``hydra.job_logging`` are in its handlers' ``filename`` (as in
    ours: ``${hydra.runtime.output_dir}/${hydra.job.name}.log``), the first job configures logging and
    the next ones point those file handlers at their own files; otherwise each job configures it anew.
    """

    def __init__(self) -> None:
        self.retarget: dict[str, logging.FileHandler] | None = None  # None: not set up yet
        self.names: dict[str, str] = {}  # the handlers' file names, unresolved

    def configure(self, hydra: DictConfig, output_dir: str, job_name: str) -> None:
        node = hydra.job_logging
        if not self.retarget:
            configure_log(node, hydra.verbose)
            if self.retarget is None:
                self.retarget, self.names = _file_handlers(node)
            return
        for name, handler in self.retarget.items():
            handler.close()
            filename = _filename(self.names[name], output_dir, job_name)
            if filename is None:
                filename = str(OmegaConf.select(node, f"handlers.{name}.filename"))
            handler.baseFilename = os.path.abspath(filename)
            handler.stream = handler._open()


_OUTPUT_DIR, _JOB_NAME = "${hydra.runtime.output_dir}", "${hydra.job.name}"


def _filename(template: str, output_dir: str, job_name: str) -> str | None:
    """A handler's file name for this job when it only interpolates the job's directory and name (as
    ours does); None when OmegaConf must resolve it."""
    rest = re.sub(r"\$\{hydra\.(runtime\.output_dir|job\.name)\}", "", template)
    if "\\" in template or "$" in rest:
        return None
    return template.replace(_OUTPUT_DIR, output_dir).replace(_JOB_NAME, job_name)


def _file_handlers(node: DictConfig | None) -> tuple[dict[str, logging.FileHandler], dict[str, str]]:
    """The file handlers that configuring ``node`` made, by name, if the file names are all that may
    differ between jobs (its only interpolations), and their unresolved file names; else none."""
    if node is None:
        return {}, {}
    raw = OmegaConf.to_container(node, resolve=False)
    shape, files = _split_filenames(raw)
    if not files or "${" in repr(shape):
        return {}, {}
    found = {h.get_name(): h for h in _handlers() if isinstance(h, logging.FileHandler)}
    if not all(name in found for name in files):
        return {}, {}
    return {name: found[name] for name in files}, files


def _split_filenames(conf: Any) -> tuple[Any, dict[str, str]]:
    """A logging config without its handlers' ``filename``; and those file names by handler."""
    if not isinstance(conf, dict):
        return conf, {}
    handlers = conf.get("handlers") or {}
    files = {
        name: str(h["filename"]) for name, h in handlers.items() if isinstance(h, dict) and "filename" in h
    }
    shape = dict(conf)
    shape["handlers"] = {
        name: {k: v for k, v in h.items() if k != "filename"} if isinstance(h, dict) else h
        for name, h in handlers.items()
    }
    return shape, files


def _handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    found: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            found[id(handler)] = handler
    return list(found.values())

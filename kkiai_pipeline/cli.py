"""The Hydra entry point ``kkiai-run``: compose -> settings -> run; nothing else.

Exit codes: 0 all steps succeeded; 1 a step did not succeed; 2 bad input (config, pipeline, overrides),
nothing sent; 130 interrupted.
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import discovery, rerun, secrets
from .config_schema import grid_steps
from .dryrun import dry_run
from .errors import ConfigError, KkiaiError, PipelineError, Problem
from .fastsweep import fast_sweeps
from .multirun import Sweep, note_error, runs_deferred
from .orchestrator import Job, Orchestrator, prepare
from .paths import shipped_dir
from .pipeline import Pipeline, parse_pipeline, read_pipeline_file
from .rundir import RunRecord
from .settings import check_command_line, check_pipeline_values, load_settings, refuse
from .terminal import ProgressBar, help_page, summary

log = logging.getLogger("kkiai_pipeline")


class _Job:
    """Whether Hydra got as far as calling our task function (else its own errors are usage errors)."""

    started = False


_TOKEN_OVERRIDE = re.compile(r"^[+~]{0,2}api\.token(=|$)")
_TOKEN_ENV_OVERRIDE = re.compile(r"^[+~]{0,2}api\.token_env=")


def main() -> None:
    """Console script ``kkiai-run``."""
    answer_help_or_version(sys.argv[1:])
    try:
        rerun_dir, sys.argv[1:] = rerun.split_args(sys.argv[1:])
    except ConfigError as exc:
        refuse(exc)
    refuse_token_words(sys.argv[1:], os.environ)
    if any(_TOKEN_OVERRIDE.match(arg) for arg in sys.argv[1:]):
        # Refuse before Hydra composes anything: it would save the override, token and all, in .hydra/.
        print(
            "kkiai-run: error: api.token is not a setting: the token is read only from the environment "
            "(KKIAI_API_TOKEN) so that it is never written to disk",
            file=sys.stderr,
        )
        raise SystemExit(2)
    try:
        check_command_line(sys.argv[1:])  # before Hydra, which would append a misspelled +key
    except ConfigError as exc:
        refuse(exc)
    pipelines = discovery.available(discovery.search_path(os.environ, Path.cwd()))
    discovery.register(pipelines, load=discovery.selected(sys.argv[1:], pipelines))
    if rerun_dir is not None:
        sys.argv[1:] = start_rerun(rerun_dir, sys.argv[1:])
    orchestrator, sweep = Orchestrator(), Sweep()

    @hydra.main(version_base="1.3", config_path=str(shipped_dir("conf")), config_name="config")
    def task(cfg: DictConfig) -> int:
        _Job.started = True
        code = run_job(cfg, orchestrator=orchestrator, sweep=sweep)
        if HydraConfig.get().mode == RunMode.RUN and code:
            sys.exit(code)
        return code

    with fast_sweeps():  # a sweep's jobs made from one composed config (kkiai_pipeline/fastsweep.py)
        try:
            task()
        except KkiaiError:
            raise
        except Exception as exc:  # Hydra's own errors outside its error reporting (e.g. --help): no traceback
            hint = " (e.g. kkiai-run --help pipeline=product_shots)" if "pipeline" in str(exc) else ""
            print(f"kkiai-run: error: {secrets.redact(str(exc))}{hint}", file=sys.stderr)
            raise SystemExit(2) from None
        except SystemExit as exc:
            # Hydra exits 1 for a bad override or a missing pipeline=; that is a usage error for us.
            if exc.code == 1 and not _Job.started:
                raise SystemExit(2) from None
            raise
        if sweep.sweep_dir is not None:  # a multirun under the basic launcher: its jobs run now, together
            code = sweep.finish(orchestrator=orchestrator)
            if code:
                raise SystemExit(code)


def answer_help_or_version(args: Sequence[str]) -> None:
    """``--help`` (the tool's page, no pipeline= needed) and ``--version``: print, exit 0, before Hydra."""
    if "--version" in args:
        try:
            version = importlib.metadata.version("kkiai-pipeline")
        except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
            version = "unknown"
        print(f"kkiai-pipeline {version}")
        raise SystemExit(0)
    if "--help" in args or "-h" in args:
        page = yaml.safe_load((shipped_dir("conf") / "hydra" / "help" / "kkiai.yaml").read_text("utf-8"))
        pipelines = discovery.available(discovery.search_path(os.environ, Path.cwd()))
        print(help_page(str(page["template"]), pipelines))
        raise SystemExit(0)


class _Rerun:
    """Set by ``--rerun``: the pipeline's original file, which file("...") reads relative to."""

    active = False
    source: Path | None = None
    run_dir: Path | None = None  # the run repeated
    words: ClassVar[list[str]] = []  # the overrides that compose its saved config (rerun.Rerun.overrides)


def start_rerun(run_dir: Path, args: list[str]) -> list[str]:
    """Register the saved configuration of ``run_dir``; the command-line words that compose it, then
    ``args`` (see kkiai_pipeline/rerun.py). Exit 2 if ``run_dir`` holds no run."""
    try:
        saved = rerun.load_rerun(run_dir)
    except ConfigError as exc:
        refuse(exc)
    keys = {word.split("=", 1)[0].lstrip("+~") for word in args if "=" in word and not word.startswith("-")}
    chosen = {key for key in keys if key in saved.choices or key == discovery.GROUP}  # groups: api=...
    if discovery.GROUP in chosen:
        refuse(ConfigError(f"{rerun.OPTION} repeats the pipeline of the run; pipeline= cannot be changed"))
    saved.register(chosen=chosen)
    _Rerun.active, _Rerun.source, _Rerun.run_dir = True, saved.source, saved.run_dir
    _Rerun.words = saved.overrides(chosen=chosen)
    # Hydra's flags (-m, --cfg job, -cd DIR) first: its parser takes the overrides as one run of words.
    flags = [w for w in args if w.startswith("-") or "=" not in w]
    return [*flags, *_Rerun.words, *[w for w in args if w not in flags]]


def refuse_token_words(args: Sequence[str], environ: Mapping[str, str]) -> None:
    """Exit 2 if a command-line word holds the API token's value, before Hydra runs (see
    :func:`check_token_words`)."""
    try:
        check_token_words(args, environ, what="command-line argument")
    except ConfigError as exc:
        print(f"kkiai-run: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


def check_token_words(args: Sequence[str], environ: Mapping[str, str], *, what: str = "override") -> None:
    """Raise ConfigError if an override sets ``api.token`` or holds the API token's value.

    Hydra would write the word to ``.hydra/overrides.yaml`` (and the composed config), and might echo
    it in an error, whatever its key: ``api.token_env=<token>``, ``'+api={token:<token>}'``,
    ``pipeline.params.x=<token>``. The token is looked up where ``api.token_env`` (default, or as
    overridden in ``args``) says, and registered, so nothing later prints it either. Shared by
    ``kkiai-run`` and the Python API, which both check before composing anything.
    """
    names = ["KKIAI_API_TOKEN"]
    names += [arg.split("=", 1)[1] for arg in args if _TOKEN_ENV_OVERRIDE.match(arg)]
    for name in names:
        secrets.register(environ.get(name))
    for position, arg in enumerate(args, start=1):
        if not secrets.contains(arg):
            continue
        key = arg.split("=", 1)[0] if "=" in arg else ""
        shown = f"'{key.lstrip('+~')}'" if key and not secrets.contains(key) else f"number {position}"
        raise ConfigError(
            f"{what} {shown} holds the API token: the token is read only "
            "from the environment (KKIAI_API_TOKEN, or the variable api.token_env names), so that it is "
            "never written to disk. Nothing was run"
        )
    if any(_TOKEN_OVERRIDE.match(arg) for arg in args):
        raise ConfigError(
            "api.token is not a setting: the token is read only from the environment "
            "(KKIAI_API_TOKEN) so that it is never written to disk"
        )


def run_job(cfg: DictConfig, *, orchestrator: Orchestrator, sweep: Sweep) -> int:
    """Run (or, in a sweep, queue) the pipeline of one composed config; returns the exit code.

    Errors are printed, not raised.
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    deferred = runs_deferred()
    if deferred:
        sweep.sweep_dir = Path(str(hydra_cfg.sweep.dir))
    try:
        settings = load_settings(cfg, environ=os.environ, run_dir=run_dir)  # checks grid_step(s) too
        if deferred:
            sweep.grid_step = grid_steps(cfg)
        pipeline = load_pipeline(cfg, name=str(hydra_cfg.runtime.choices.get("pipeline")))
        check_pipeline_values(cfg.get("pipeline"), token_env=settings.api.token_env)  # each job's own
        if settings.dry_run:
            print(dry_run(pipeline, settings, budgets=sweep.planned if deferred else None))
            return 0
        job = prepare(pipeline, settings)
        if deferred:
            job.num = hydra_cfg.job.num
            sweep.queued.append(job)  # the sweep's jobs run together when the multirun ends
            return 0
        record = _run_one(job, orchestrator)
    except KkiaiError as exc:
        log.error("%s", exc)  # also into run.log; the console handler prints it
        if hydra_cfg.mode == RunMode.MULTIRUN:
            note_error(str(exc))
        return exc.exit_code
    print(summary(record), file=sys.stderr)
    if record.status != "succeeded":
        print(
            f"to resume this run: {resume_command(list(hydra_cfg.overrides.task), run_dir)}", file=sys.stderr
        )
    return {"succeeded": 0, "canceled": 130}.get(record.status, 1)


def _run_one(job: Job, orchestrator: Orchestrator) -> RunRecord:
    progress = ProgressBar(len(job.plan.steps), enabled=job.settings.progress)
    job.progress = progress
    try:
        [record] = orchestrator.run([job])
    finally:
        progress.close()
    return record


def resume_command(overrides: list[str], run_dir: Path) -> str:
    """The exact command that continues the run in ``run_dir`` with the same overrides."""
    prefix: list[str] = []
    if _Rerun.active and overrides[: len(_Rerun.words)] == _Rerun.words:  # the saved config's words
        prefix, overrides = [rerun.OPTION, str(_Rerun.run_dir)], overrides[len(_Rerun.words) :]
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("resume=", "hydra.run.dir="))]
    words = ["kkiai-run", *prefix, *kept, f"hydra.run.dir={run_dir}", "resume=true"]
    return " ".join(shlex.quote(w) for w in words)


def load_pipeline(cfg: DictConfig, *, name: str) -> Pipeline:
    """The composed ``pipeline`` node (overrides applied) as a Pipeline, checked against its file."""
    if _Rerun.active:  # the saved pipeline: its file may be gone or changed since
        source, from_file = _Rerun.source, {}
        log.info("rerun of %s (its saved config)", _Rerun.run_dir)
    else:
        source = discovery.available(discovery.search_path(os.environ, Path.cwd())).get(name)
        from_file = _pipeline_file(source) if source is not None else {}  # registered empty: say why
        source = source or found_by_hydra(name)  # Hydra composed it (from_file stays: Hydra read it)
    try:
        data = OmegaConf.to_container(cfg.pipeline, resolve=True)
    except (OmegaConfBaseException, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PipelineError([Problem(f"cannot resolve the pipeline config: {reason}", file=source)]) from exc
    assert isinstance(data, dict)
    if not data:  # not selected on the command line (e.g. chosen by a sweeper config): the file as is
        data = dict(from_file)
    if "defaults" in from_file:  # never given to Hydra (discovery.register): still an unknown key
        data["defaults"] = from_file["defaults"]
    return parse_pipeline({str(k): v for k, v in data.items()}, source=source, default_name=name)


#: The pipeline files read by this process, by (path, size, mtime): a sweep's jobs read one file once.
_READ: dict[tuple[Path, int, int], dict[str, Any]] = {}


def _pipeline_file(path: Path) -> dict[str, Any]:
    """:func:`read_pipeline_file`, read again only when the file changed (a copy each time)."""
    try:
        stat = path.stat()
    except OSError:
        return read_pipeline_file(path)  # says what is wrong with it
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _READ:
        _READ.clear()
        _READ[key] = read_pipeline_file(path)
    return copy.deepcopy(_READ[key])


def found_by_hydra(name: str) -> Path | None:
    """The file ``pipeline/<name>.yaml`` that Hydra found in a folder of its search path
    (``--config-dir``, ``hydra.searchpath``), so that file("...") reads relative to it; None if none."""
    for entry in HydraConfig.get().runtime.config_sources:
        if entry.schema != "file" or not entry.path:
            continue
        candidate = Path(entry.path) / discovery.GROUP / f"{name}.yaml"
        if candidate.is_file():
            return candidate.resolve()
    return None

"""DictConfig -> typed, frozen settings, once, at the edge.

Nothing below this module reads ``os.environ`` or a DictConfig. The API token is taken from the
environment variable that ``api.token_env`` names (``KKIAI_API_TOKEN``); it never enters the config
tree, so Hydra cannot write it to ``.hydra/``. Its value is registered with :mod:`.secrets` as soon as
it is read, so that nothing printed or written shows it, and a pipeline whose values hold it is refused
(:func:`check_pipeline_values`). A plain-http ``api.base_url`` to another machine is refused unless
``api.allow_insecure_http`` is set: the token would travel in clear.

Every key and value is checked against the schema in :mod:`config_schema` three times, each as early
as it can be: the command line's keys before Hydra composes (:func:`check_command_line`), the composed
config before Hydra creates the run directory (:class:`SettingsCheck`, a Hydra callback), and each job's
config when it is loaded (:func:`load_settings`). A bad setting is one line naming its key, exit 2.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .api.client import ClientOptions
from .api.cog import CogOptions
from .api.ratescope import RateScope, resolve_scope
from .config_schema import check_config, check_override_keys, check_swept_values, grid_steps, sandbox_only
from .errors import ConfigError
from .execution import ExecutionOptions
from .localfiles import DEFAULT_MAX_BYTES
from .pricing import Price, parse_prices
from .purchase import OnInterrupt
from .secrets import find, redact, register

ApiKind = Literal["kkiai", "sandbox", "cog"]
SANDBOX_TOKEN = "sandbox"  # the emulator wants a bearer token like the real API; any will do


@dataclass(frozen=True)
class ApiSettings:
    """Which API to talk to and how."""

    kind: ApiKind
    base_url: str | None
    token: str | None = field(repr=False)
    client: ClientOptions
    sandbox: Mapping[str, Any] = field(default_factory=dict)
    token_env: str = "KKIAI_API_TOKEN"  # where the token was read from (named in messages)
    rate_scope: RateScope = "process"  # who shares the rate limits (api.rate_scope, ``auto`` resolved)


@dataclass(frozen=True)
class CogSettings:
    """Self-hosted Cog servers: which model runs where, and the client's patience."""

    servers: Mapping[str, str] = field(default_factory=dict)  # owner/name -> server URL
    concurrency: Mapping[str, int] = field(default_factory=dict)  # owner/name -> predictions at once
    options: CogOptions = field(default_factory=CogOptions)


#: The default of ``max_predictions`` (why this number: conf/config.yaml).
DEFAULT_MAX_PREDICTIONS = 1000


@dataclass(frozen=True)
class Settings:
    """Everything one run needs besides the pipeline."""

    api: ApiSettings
    execution: ExecutionOptions
    progress: bool | None  # None: only when stderr is a terminal
    run_dir: Path
    dry_run: bool = False
    seed: int | None = None
    max_file_bytes: int = DEFAULT_MAX_BYTES
    allowed_dirs: tuple[Path, ...] = ()  # file() reads here too, besides the pipeline's folder
    resume: bool = False
    timeout: float = 1800.0
    on_interrupt: OnInterrupt = "cancel"
    cache: bool = True
    cache_dir: Path | None = None
    max_download_bytes: int = 200 * 1024 * 1024
    cog: CogSettings = field(default_factory=CogSettings)
    # Pay again for a succeeded prediction whose files the service deleted before they were stored
    # (otherwise the step says so and stops).
    repay_expired: bool = False
    # The budget: a run or sweep that would create more predictions than this is refused (budget.py).
    max_predictions: int = DEFAULT_MAX_PREDICTIONS
    # Estimated cost: what one prediction of each model (owner/name) costs (kkiai_pipeline.pricing).
    prices: Mapping[str, Price] = field(default_factory=dict)


def load_settings(
    cfg: DictConfig, *, environ: Mapping[str, str], run_dir: Path, run_dir_key: str = "hydra.run.dir"
) -> Settings:
    """Typed settings from the composed config; raises ConfigError with the setting's name.

    Besides the values, checks that ``run_dir`` and the cache directory can be written (creating
    them, writing a probe file and removing what it created), so neither fails after a paid call.
    """
    raw = _resolved(cfg)
    api_raw: Mapping[str, Any] = raw.get("api") or {}
    check_config(raw, token_env=str(api_raw.get("token_env") or "KKIAI_API_TOKEN"))
    grid_steps(raw)  # grid_step and grid_steps do not disagree
    dry_run = bool(raw.get("dry_run", False))
    # A dry run sends nothing, so it needs no token.
    api = _api_settings(api_raw, environ, need_token=not dry_run)
    scope = resolve_scope(str(api_raw.get("rate_scope", "auto")), launcher=_multirun_launcher())
    api = replace(api, rate_scope=scope)
    progress = raw.get("progress", "auto")
    settings = Settings(
        api=api,
        execution=ExecutionOptions(max_concurrency=raw.get("max_concurrency", 16)),
        progress=None if progress == "auto" else progress,
        run_dir=run_dir,
        dry_run=dry_run,
        seed=raw.get("seed"),
        max_file_bytes=raw.get("max_file_bytes", DEFAULT_MAX_BYTES),
        allowed_dirs=_allowed_dirs(raw.get("allowed_dirs")),
        resume=raw.get("resume", False),
        timeout=float(raw.get("timeout", 1800.0)),
        on_interrupt=raw.get("on_interrupt", "cancel"),
        cache=raw.get("cache", True),
        cache_dir=_cache_dir(raw.get("cache_dir"), environ),
        max_download_bytes=raw.get("max_download_bytes", 200 * 1024 * 1024),
        cog=_cog_settings(raw.get("cog") or {}),
        repay_expired=raw.get("repay_expired", False),
        max_predictions=raw.get("max_predictions", DEFAULT_MAX_PREDICTIONS),
        prices=parse_prices(raw.get("prices")),
    )
    check_writable(run_dir_key, run_dir)
    # The emulator keeps its predictions under the cache directory unless api.sandbox.store says where.
    if settings.cache or (api.kind == "sandbox" and not api_raw.get("sandbox", {}).get("store")):
        check_writable("cache_dir", settings.cache_dir or _cache_dir(None, environ))
    return settings


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data, interpolations resolved; ``pipeline`` and ``hydra`` are left out
    (the pipeline is checked when it is loaded; Hydra's node is Hydra's)."""
    raw: dict[str, Any] = {}
    for name in cfg:
        key = str(name)
        if key in ("pipeline", "hydra"):
            continue
        try:
            node = cfg[key]
            raw[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        except OmegaConfBaseException as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"cannot resolve setting '{key}': {reason}") from exc
    return raw


def check_writable(key: str, directory: Path) -> None:
    """Raise ConfigError naming ``key`` unless ``directory`` can be created and written.

    Directories this creates are removed again: the run makes them when it needs them. Another process
    checking the same new directory at the same moment may remove it under this one: then it looks again.
    """
    for _ in range(5):
        if directory.is_dir():
            # An existing directory is only asked: a probe file would touch a run directory that may
            # belong to another run (which must find it unchanged).
            if os.access(directory, os.W_OK | os.X_OK):
                return
            if directory.is_dir():
                raise ConfigError(f"{key} is not a writable directory: {directory} (permission denied)")
            continue  # removed meanwhile by another process's check
        if _probe(key, directory):
            return
    raise ConfigError(f"{key} is not a writable directory: {directory} (it keeps disappearing)")


def _probe(key: str, directory: Path) -> bool:
    """Create ``directory`` and write a file in it, then remove what this made; False when the
    directory vanished on the way (another process removed its own probe's directories)."""
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    probe = directory / f".kkiai-write-probe-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            probe.write_bytes(b"")
        except FileNotFoundError:
            if not directory.exists():
                return False
            raise
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{key} is not a writable directory: {directory} ({exc.strerror or exc})") from exc
    finally:
        for path in created:  # deepest first
            try:
                path.rmdir()
            except OSError:
                break
    return True


_ENUMERABLE_SWEEPS = (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP, ValueType.RANGE_SWEEP)


def check_command_line(args: Sequence[str]) -> None:
    """Refuse override keys that name no setting, before Hydra composes (it would append ``+key``),
    and swept values that no job may have (``-m timeout=5,inf``), before any job of a sweep runs.

    Hydra's own syntax errors are left to Hydra, which reports them with the offending text.
    """
    overrides, other_config = _overrides(args)
    ours = [
        o for o in overrides if o.package is None and "/" not in o.key_or_group and not o.is_hydra_override()
    ]
    check_override_keys([o.key_or_group for o in ours])
    api = [o for o in ours if o.key_or_group == "api" and not o.is_delete()]
    # The shipped config picks api=kkiai; another config may pick the emulator (checked once composed).
    if not other_config and (not api or (not api[-1].is_sweep_override() and api[-1].value() != "sandbox")):
        knob = next((o for o in ours if o.key_or_group.startswith("api.sandbox.")), None)
        if knob is not None:  # Hydra would say "Could not override" or append a key nothing reads
            raise sandbox_only(knob.key_or_group)
    for override in ours:
        if override.value_type in _ENUMERABLE_SWEEPS:
            check_swept_values(override.key_or_group, list(override.sweep_iterator()))


# Hydra's options that take a value as the next word, and those that choose another primary config.
_CONFIG_OPTIONS = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir"}
_OPTIONS_WITH_VALUE = _CONFIG_OPTIONS | {"-p", "--package"}


def _overrides(args: Sequence[str]) -> tuple[list[Override], bool]:
    """The overrides among Hydra's command-line words, and whether another config was chosen."""
    parser = OverridesParser.create()
    found: list[Override] = []
    other_config = skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            option = arg.split("=", 1)[0]
            other_config = other_config or option in _CONFIG_OPTIONS
            skip = option in _OPTIONS_WITH_VALUE and "=" not in arg
        else:
            try:
                found.extend(parser.parse_overrides([arg]))
            except HydraException:
                continue
    return found, other_config


def refuse(error: ConfigError) -> NoReturn:
    """End kkiai-run for a bad setting: one line on stderr, exit code 2."""
    print(f"kkiai-run: error: {redact(str(error))}", file=sys.stderr)
    raise SystemExit(error.exit_code)


class SettingsCheck(Callback):
    """Loads the settings once before Hydra creates the run (or sweep) directory and writes to it.

    A bad setting then ends kkiai-run with one line and exit code 2, and leaves nothing on disk.
    Registered in ``conf/config.yaml`` under ``hydra.callbacks``.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Swept values are not in this config; each job's are checked when the job loads them.
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, run_dir_key: str) -> None:
        HydraConfig.instance().set_config(config)  # ${hydra:...} in the directory's name needs it
        try:
            run_dir = Path(str(OmegaConf.select(config, run_dir_key))).absolute()
            settings = load_settings(config, environ=os.environ, run_dir=run_dir, run_dir_key=run_dir_key)
            check_pipeline_values(config.get("pipeline"), token_env=settings.api.token_env)
        except ConfigError as exc:
            refuse(exc)


def _allowed_dirs(value: Any) -> tuple[Path, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"allowed_dirs must be a list of directories, not {value!r}")
    return tuple(Path(v).expanduser().resolve() for v in value)


def _cog_settings(raw: Mapping[str, Any]) -> CogSettings:
    known = {f.name for f in fields(CogOptions)}
    options = CogOptions(**{k: v for k, v in raw.items() if k in known})
    return CogSettings(dict(raw.get("servers") or {}), dict(raw.get("concurrency") or {}), options)


def _multirun_launcher() -> str | None:
    """The launcher's ``_target_`` when this process runs a job of a Hydra multirun, else None."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return str(hydra_cfg.launcher.get("_target_") or "") or None


def _cache_dir(value: Any, environ: Mapping[str, str]) -> Path:
    """The configured cache directory, else ``$XDG_CACHE_HOME/kkiai-pipeline`` or ``~/.cache/...``."""
    if value:
        return Path(str(value)).expanduser()
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "kkiai-pipeline"


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """The cache directory when ``cache_dir`` is not set (``kkiai-models`` uses it too)."""
    return _cache_dir(None, environ)


def _api_settings(raw: Mapping[str, Any], environ: Mapping[str, str], *, need_token: bool) -> ApiSettings:
    kind = raw.get("kind")
    client = _client_options(raw)
    token_env = str(raw.get("token_env") or "KKIAI_API_TOKEN")
    token = environ.get(token_env, "").strip() or None
    # Hidden whichever API runs: a pipeline could still read it (${oc.env:...}) and send or record it.
    register(token)
    if kind == "sandbox":
        sandbox = _sandbox_options(raw.get("sandbox") or {})
        return ApiSettings("sandbox", None, SANDBOX_TOKEN, client, sandbox, token_env=token_env)
    if kind == "cog":  # every step on self-hosted servers: no hosted API, no token
        return ApiSettings("cog", None, None, client, token_env=token_env)
    if token is None and need_token:
        raise ConfigError(
            f"{token_env} is not set: export {token_env}=<your kkiai API token> to use the kkiai API, "
            "or run offline on the emulator with api=sandbox"
        )
    base_url = raw.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"api.base_url must be an http(s) URL, not {base_url!r}")
    if not raw.get("allow_insecure_http", False):
        check_secure(base_url)
    return ApiSettings("kkiai", base_url, token, client, token_env=token_env)


def check_secure(base_url: str) -> None:
    """Raise ConfigError for a plain-http URL to another machine: the token would travel in clear."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or is_loopback(parts.hostname or ""):
        return
    raise ConfigError(
        f"api.base_url is plain http to {parts.hostname or 'an unnamed host'}, which is not this machine: "
        "the API token would travel unencrypted. Use https, or set api.allow_insecure_http=true if the "
        "network between them is trusted"
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost`` (and its subdomains) or a loopback address."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_pipeline_values(pipeline: Any, *, token_env: str = "KKIAI_API_TOKEN") -> None:
    """Raise ConfigError when a value of the composed ``pipeline`` node holds the API token.

    A step's input would send it to a model (and the model's service would keep it), and run.json and
    the report would show it masked; typically it came from ``${oc.env:KKIAI_API_TOKEN}``. Values that
    templates compute at run time are checked again by the client, before each create.
    """
    if pipeline is None:
        return
    try:
        data = OmegaConf.to_container(pipeline, resolve=True) if OmegaConf.is_config(pipeline) else pipeline
    except (OmegaConfBaseException, RecursionError):
        return  # loading the pipeline reports it, with its file
    where = find(data)
    if where is None:
        return
    if len(where) >= 3 and where[0] == "steps":
        place = f"step '{where[1]}', field '{'.'.join(where[2:])}'"
    else:
        place = f"field '{'.'.join(where)}'"
    raise ConfigError(
        f"pipeline {place} holds the API token (the value of {token_env}): it would be sent to the "
        "model and recorded. Nothing was sent; the token belongs only in the environment"
    )


def _sandbox_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The emulator's knobs that SandboxConfig takes (``store`` and ``file_ttl`` are declared in the
    schema ahead of the dataclass; until it has them they are not passed on)."""
    from .sandbox.config import SandboxConfig

    known = {f.name for f in fields(SandboxConfig)}
    return {k: v for k, v in raw.items() if k in known}


def _client_options(raw: Mapping[str, Any]) -> ClientOptions:
    """``api.<field>`` onto the ClientOptions field of that name (the schema has checked the values)."""
    values: dict[str, Any] = {}
    for option in fields(ClientOptions):
        if raw.get(option.name) is not None:
            values[option.name] = raw[option.name]
    return ClientOptions(**values)

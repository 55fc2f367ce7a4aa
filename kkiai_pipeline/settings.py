"""DictConfig -> typed, frozen settings, once, at the edge.

Nothing below this module reads ``os.environ`` or a DictConfig. The API token is taken from the
environment variable that ``api.token_env`` names (``KKIAI_API_TOKEN``); it never enters the config
tree, so Hydra cannot write it to ``.hydra/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .api.client import ClientOptions
from .api.cog import CogOptions
from .errors import ConfigError
from .execution import ExecutionOptions
from .localfiles import DEFAULT_MAX_BYTES
from .step_runner import OnInterrupt

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


@dataclass(frozen=True)
class CogSettings:
    """Self-hosted Cog servers: which model runs where, and the client's patience."""

    servers: Mapping[str, str] = field(default_factory=dict)  # owner/name -> server URL
    concurrency: Mapping[str, int] = field(default_factory=dict)  # owner/name -> predictions at once
    options: CogOptions = field(default_factory=CogOptions)


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


def load_settings(cfg: DictConfig, *, environ: Mapping[str, str], run_dir: Path) -> Settings:
    """Typed settings from the composed config; raises ConfigError with the setting's name."""
    try:
        # The pipeline node is resolved (and its problems reported, with its file) by load_pipeline.
        settings_only = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "pipeline"])
        raw: dict[str, Any] = OmegaConf.to_container(settings_only, resolve=True)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    dry_run = _flag(raw, "dry_run", default=False)
    # A dry run sends nothing, so it needs no token.
    api = _api_settings(raw.get("api") or {}, environ, need_token=not dry_run)
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"seed must be a whole number >= 0 or null, not {seed!r}")
    on_interrupt = raw.get("on_interrupt", "cancel")
    if on_interrupt not in ("cancel", "leave"):
        raise ConfigError(f"on_interrupt must be 'cancel' or 'leave', not {on_interrupt!r}")
    return Settings(
        api=api,
        execution=ExecutionOptions(max_concurrency=_positive_int(raw, "max_concurrency")),
        progress=_progress(raw.get("progress", "auto")),
        run_dir=run_dir,
        dry_run=dry_run,
        seed=seed,
        max_file_bytes=_positive_int(raw, "max_file_bytes"),
        allowed_dirs=_allowed_dirs(raw.get("allowed_dirs")),
        resume=_flag(raw, "resume", default=False),
        timeout=_positive_number(raw, "timeout"),
        on_interrupt=on_interrupt,
        cache=_flag(raw, "cache", default=True),
        cache_dir=_cache_dir(raw.get("cache_dir"), environ),
        max_download_bytes=_positive_int(raw, "max_download_bytes"),
        cog=_cog_settings(raw.get("cog") or {}),
    )


def _allowed_dirs(value: Any) -> tuple[Path, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"allowed_dirs must be a list of directories, not {value!r}")
    return tuple(Path(v).expanduser().resolve() for v in value)


def _cog_settings(raw: Mapping[str, Any]) -> CogSettings:
    servers = raw.get("servers") or {}
    concurrency = raw.get("concurrency") or {}
    if not isinstance(servers, Mapping) or not all(isinstance(v, str) for v in servers.values()):
        raise ConfigError(
            "cog.servers must map owner/name to a server URL, e.g. 'cog.servers={cjwbw/rembg:http://127.0.0.1:5000}'"
        )
    if not isinstance(concurrency, Mapping) or not all(
        isinstance(v, int) and v >= 1 for v in concurrency.values()
    ):
        raise ConfigError("cog.concurrency must map owner/name to a whole number >= 1")
    known = {f.name for f in fields(CogOptions)}
    options = {k: v for k, v in raw.items() if k in known}
    try:
        return CogSettings(dict(servers), dict(concurrency), CogOptions(**options))
    except TypeError as exc:
        raise ConfigError(f"invalid cog settings: {exc}") from exc


def _cache_dir(value: Any, environ: Mapping[str, str]) -> Path:
    """The configured cache directory, else ``$XDG_CACHE_HOME/kkiai-pipeline`` or ``~/.cache/...``."""
    if value:
        return Path(str(value)).expanduser()
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "kkiai-pipeline"


def _api_settings(raw: Mapping[str, Any], environ: Mapping[str, str], *, need_token: bool) -> ApiSettings:
    kind = raw.get("kind")
    if kind not in ("kkiai", "sandbox", "cog"):
        raise ConfigError(f"api.kind must be 'kkiai', 'sandbox' or 'cog', not {kind!r}")
    if "token" in raw:
        raise ConfigError(
            "api.token is not a setting: the token is read only from the environment "
            f"({raw.get('token_env') or 'KKIAI_API_TOKEN'}) so that it is never written to disk"
        )
    client = _client_options(raw)
    if kind == "sandbox":
        return ApiSettings("sandbox", None, SANDBOX_TOKEN, client, dict(raw.get("sandbox") or {}))
    if kind == "cog":  # every step on self-hosted servers: no hosted API, no token
        return ApiSettings("cog", None, None, client)
    token_env = str(raw.get("token_env") or "KKIAI_API_TOKEN")
    token = environ.get(token_env, "").strip() or None
    if token is None and need_token:
        raise ConfigError(
            f"{token_env} is not set: export {token_env}=<your kkiai API token> to use the kkiai API, "
            "or run offline on the emulator with api=sandbox"
        )
    base_url = raw.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"api.base_url must be an http(s) URL, not {base_url!r}")
    return ApiSettings("kkiai", base_url, token, client)


def _client_options(raw: Mapping[str, Any]) -> ClientOptions:
    values: dict[str, Any] = {}
    defaults = ClientOptions()
    for option in fields(ClientOptions):
        value = raw.get(option.name)
        if value is None:
            continue
        kind = type(getattr(defaults, option.name))
        if kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"api.{option.name} must be true or false, not {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"api.{option.name} must be a number >= 0, not {value!r}")
        values[option.name] = kind(value)
    return ClientOptions(**values)


def _progress(value: Any) -> bool | None:
    if value == "auto":
        return None
    if not isinstance(value, bool):
        raise ConfigError(f"progress must be auto, true or false, not {value!r}")
    return value


def _flag(raw: Mapping[str, Any], name: str, *, default: bool) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, not {value!r}")
    return value


def _positive_number(raw: Mapping[str, Any], name: str) -> float:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{name} must be a number > 0, not {value!r}")
    return float(value)


def _positive_int(raw: Mapping[str, Any], name: str) -> int:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, not {value!r}")
    return value

"""The declared schema of kkiai-run's primary config: every key, its type and its range.

One declaration serves two checks, both before anything is sent or written:

* :func:`check_override_keys` reads the command line before Hydra composes anything, so a typo such as
  ``+dryrun=true`` is refused instead of being appended as a new, ignored key;
* :func:`check_config` walks the composed config (overrides, files and interpolations applied) and
  refuses unknown keys, wrong types, non-finite numbers and values out of range.

Each failure is a :class:`ConfigError` whose message is one line naming the full key
(``cog.ready_timeout``, ``api.sandbox.queue_seconds``), with a did-you-mean for unknown keys.

Why not a Hydra structured config? Hydra would check types at composition, but its messages span
several lines, suggest ``+key=value`` for unknown keys, and ``+key`` still appends to a struct; the
``pipeline`` node must stay free-form anyway. The keys of ``api.sandbox`` are the fields of
:class:`~kkiai_pipeline.sandbox.config.SandboxConfig`, read from the dataclass so they cannot drift.
"""

from __future__ import annotations

import difflib
import functools
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .errors import ConfigError

Kind = Literal["flag", "whole", "number", "text", "choice", "text_map", "whole_map", "text_list"]


@dataclass(frozen=True)
class Setting:
    """One leaf setting: its kind, whether null is allowed, and its range (bounds are inclusive
    except ``above``, which the value must exceed)."""

    kind: Kind
    nullable: bool = False
    low: float | None = None
    above: float | None = None
    high: float | None = None
    choices: tuple[object, ...] = ()
    hint: str = ""  # appended to the message, e.g. an example of the right form

    def check(self, key: str, value: object) -> None:
        """Raise ConfigError naming ``key`` unless ``value`` is legal here."""
        if value is None and self.nullable:
            return
        if not self._accepts(key, value):
            finite = "finite " if _is_number(value) and not math.isfinite(float(value)) else ""  # type: ignore[arg-type]
            what = self.describe().replace("a number", f"a {finite}number", 1)
            raise ConfigError(f"{key} must be {what}, not {_show(value)}{self.hint}")

    def describe(self) -> str:
        """What a legal value looks like, for messages and the README."""
        if self.kind == "choice":
            names = [_show(c) for c in self.choices]
            text = ", ".join(names[:-1]) + f" or {names[-1]}"
        elif self.kind == "flag":
            text = "true or false"
        elif self.kind == "text":
            text = "a string"
        elif self.kind == "text_map":
            text = "a mapping of names to strings"
        elif self.kind == "text_list":
            text = "a list of strings"
        elif self.kind == "whole_map":
            text = "a mapping of names to whole numbers" + self._range()
        else:
            text = ("a whole number" if self.kind == "whole" else "a number") + self._range()
        return text + (" or null" if self.nullable else "")

    def _range(self) -> str:
        if self.high is not None:
            low = self.low if self.low is not None else self.above
            return f" between {_bound(low)} and {_bound(self.high)}"
        if self.above is not None:
            return f" > {_bound(self.above)}"
        if self.low is not None:
            return f" >= {_bound(self.low)}"
        return ""

    def _accepts(self, key: str, value: object) -> bool:
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if self.kind == "flag":
            return isinstance(value, bool)
        if self.kind == "text":
            return isinstance(value, str)
        if self.kind in ("text_map", "whole_map"):
            return self._accepts_map(key, value)
        if self.kind == "text_list":
            return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        return self._accepts_number(value)

    def _accepts_number(self, value: object) -> bool:
        if not _is_number(value) or (self.kind == "whole" and not isinstance(value, int)):
            return False
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            return False
        return not (
            (self.low is not None and number < self.low)
            or (self.above is not None and number <= self.above)
            or (self.high is not None and number > self.high)
        )

    def _accepts_map(self, key: str, value: object) -> bool:
        if not isinstance(value, Mapping):
            return False
        entry = Setting("text" if self.kind == "text_map" else "whole", low=self.low, hint=self.hint)
        for name, item in value.items():
            entry.check(f"{key}.{name}", item)
        return True


@dataclass(frozen=True)
class Group:
    """A node of the config: its keys, or ``free`` for a node checked elsewhere (pipeline, hydra), or
    ``each``: a mapping of any names to groups of those keys (``prices.<owner/name>.per_second``)."""

    keys: Mapping[str, Setting | Group] = field(default_factory=dict)
    free: bool = False
    nullable: bool = False
    each: Group | None = None


Node = Setting | Group
FREE = Group(free=True)


def flag() -> Setting:
    """``true`` or ``false``."""
    return Setting("flag")


def whole(*, low: float | None = None, high: float | None = None, nullable: bool = False) -> Setting:
    """An integer (booleans are not integers here)."""
    return Setting("whole", nullable=nullable, low=low, high=high)


def number(*, low: float | None = None, above: float | None = None, high: float | None = None) -> Setting:
    """A finite int or float."""
    return Setting("number", low=low, above=above, high=high)


def text(*, nullable: bool = False) -> Setting:
    """A string."""
    return Setting("text", nullable=nullable)


def choice(*choices: object) -> Setting:
    """One of ``choices`` (compared with their types: ``true`` is not ``'true'``)."""
    return Setting("choice", choices=choices)


COG_SERVERS_FORM = "'cog.servers={owner/name:http://127.0.0.1:5000}'"

# api.* besides the client's options: which API, where, and the sandbox's knobs.
_CLIENT: dict[str, Node] = {
    "wait_seconds": whole(low=0, high=60),
    "poll_interval": number(above=0),
    "max_poll_interval": number(above=0),
    "connect_timeout": number(above=0),
    "read_timeout": number(above=0),
    "max_attempts": whole(low=1),
    "backoff_base": number(low=0),
    "backoff_max": number(low=0),
    "max_wait": number(low=0),
    "retry_ambiguous_creates": flag(),
    "create_rate_per_minute": number(low=0),
    "other_rate_per_minute": number(low=0),
    "burst": whole(low=1),
    "list_lag_seconds": number(low=0),
    "clock_skew_seconds": number(low=0),
    "max_response_bytes": whole(low=1),
    "max_output_depth": whole(low=1, high=256),  # JSON deeper than this (+8) is refused unparsed
    "max_output_files": whole(low=1),
    "max_downloads_in_flight": whole(low=1),
    "download_timeout": number(above=0),
    "allow_private_outputs": Setting("flag", nullable=True),
}


class _LazyKeys(Mapping[str, "Node"]):
    """Keys built on first use: reading SandboxConfig imports the emulator, which only some runs need."""

    def __init__(self, build: Callable[[], Mapping[str, Node]]) -> None:
        self._build = build

    @functools.cached_property
    def _keys(self) -> Mapping[str, Node]:
        return self._build()

    def __getitem__(self, key: str) -> Node:
        return self._keys[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


# Ranges of SandboxConfig's fields (its __post_init__ enforces the same; here they fail before the run).
_SANDBOX_RANGES: dict[str, dict[str, float]] = {
    "port": {"low": 0, "high": 65535},
    "queue_seconds": {"low": 0},
    "predict_seconds": {"low": 0},
    "workers": {"low": 1},
    "retry_after_seconds": {"low": 1},
    "slow_seconds": {"low": 0},
    "create_rate_per_minute": {"low": 1},
    "other_rate_per_minute": {"low": 1},
    "min_cancel_after_seconds": {"low": 0},
    "file_ttl": {"low": 0},
    "max_body_bytes": {"low": 1},
}

# Declared here before SandboxConfig has them (another change adds the fields); a field of the same
# name in SandboxConfig takes precedence.
_SANDBOX_EXTRAS: dict[str, Node] = {
    "store": text(nullable=True),  # where the emulator keeps its predictions; null: under the cache dir
    "file_ttl": number(low=0),  # seconds the emulator keeps output files downloadable
}


def _setting_for(annotation: Any, ranges: Mapping[str, float]) -> Setting:
    """The Setting for a dataclass field's annotation (bool, int, float, str, X | None, Literal)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        inner = _setting_for(next(a for a in args if a is not type(None)), ranges)
        return Setting(inner.kind, True, inner.low, inner.above, inner.high, inner.choices)
    if typing.get_origin(annotation) is Literal:
        return choice(*args)
    kinds: dict[Any, Kind] = {bool: "flag", int: "whole", float: "number", str: "text"}
    if annotation not in kinds:
        raise TypeError(f"no setting kind for {annotation!r}")
    return Setting(kinds[annotation], **ranges)  # type: ignore[arg-type]


def _sandbox_keys() -> Mapping[str, Node]:
    """The keys of ``api.sandbox``: SandboxConfig's fields, typed from their annotations."""
    from .sandbox.config import FAULT_RATES, SandboxConfig

    ranges = {**_SANDBOX_RANGES, **{name: {"low": 0.0, "high": 1.0} for name in FAULT_RATES}}
    hints = typing.get_type_hints(SandboxConfig)
    keys: dict[str, Node] = dict(_SANDBOX_EXTRAS)
    for option in fields(SandboxConfig):
        keys[option.name] = _setting_for(hints[option.name], ranges.get(option.name, {}))
    return keys


SANDBOX = Group(_LazyKeys(_sandbox_keys), nullable=True)

API = Group(
    {
        "kind": choice("kkiai", "sandbox", "cog"),
        "base_url": text(nullable=True),
        "token_env": text(),
        "allow_insecure_http": flag(),  # a plain-http base_url on another machine (token sent in clear)
        **_CLIENT,
        # who shares the rate limits: this process, machine or Ray cluster (api/ratescope.py)
        "rate_scope": choice("auto", "process", "machine", "cluster"),
        "sandbox": SANDBOX,
    }
)

COG = Group(
    {
        "servers": Setting("text_map", nullable=True, hint=f"; e.g. {COG_SERVERS_FORM}"),
        "concurrency": Setting("whole_map", nullable=True, low=1),
        "ready_timeout": number(low=0),
        "unreachable_timeout": number(low=0),
        "health_interval": number(above=0),
        "busy_timeout": number(low=0),
        "busy_interval": number(above=0),
        "watch_interval": number(above=0),
        "lost_after": number(low=0),
        "cancel_timeout": number(low=0),
        "connect_timeout": number(above=0),
        "read_timeout": number(above=0),
        "webhook_host": text(),
        "webhook_port": whole(low=0, high=65535),
        "webhook_advertised_host": text(nullable=True),
    }
)

# prices.<owner/name>: what one prediction of that model costs (see kkiai_pipeline/pricing.py).
PRICES = Group(
    nullable=True,
    each=Group(
        {
            "per_prediction": number(low=0),
            "per_second": number(low=0),
            "expected_seconds": Setting("number", nullable=True, above=0),
        }
    ),
)

PRIMARY = Group(
    {
        "api": API,
        "cog": COG,
        "pipeline": FREE,
        "hydra": FREE,
        "max_concurrency": whole(low=1),
        "progress": choice("auto", True, False),
        "dry_run": flag(),
        "seed": whole(low=0, nullable=True),
        "max_file_bytes": whole(low=1),
        "allowed_dirs": FREE,  # a list of directories, checked by settings._allowed_dirs
        "timeout": number(above=0),
        "on_interrupt": choice("cancel", "leave"),
        "resume": flag(),
        "cache": flag(),
        "cache_dir": text(nullable=True),
        "max_download_bytes": whole(low=1),
        "repay_expired": flag(),
        "grid_step": text(nullable=True),
        # the budget (budget.py): predictions a run or sweep may create before it is refused
        "max_predictions": whole(low=0),
        "grid_steps": Setting("text_list", nullable=True),  # several steps per grid cell: grid_steps()
        # Accounting: estimated cost per model (kkiai_pipeline.pricing checks the entries further).
        "prices": PRICES,
        # Sweeps that start fast (kkiai_pipeline/fastsweep.py, docs/sweeps.md).
        "fast_sweep": flag(),
    }
)

TOKEN_REFUSAL = (
    "api.token is not a setting: the token is read only from the environment "
    "({env}) so that it is never written to disk"
)


def check_config(data: Mapping[str, Any], *, token_env: str = "KKIAI_API_TOKEN") -> None:
    """Raise ConfigError for the first unknown key or illegal value in the resolved primary config."""
    _check_group(PRIMARY, data, prefix="", token_env=token_env)
    api = data.get("api") or {}
    knobs = api.get("sandbox") or {}
    if knobs and api.get("kind") != "sandbox":  # they would be ignored without a word
        raise sandbox_only(f"api.sandbox.{next(iter(knobs))}")


def sandbox_only(key: str) -> ConfigError:
    """The error for an emulator's knob (``api.sandbox.*``) set for a run that does not use it."""
    return ConfigError(f"{key} is a setting of the emulator: it applies only with api=sandbox")


def _check_group(group: Group, data: Mapping[str, Any], *, prefix: str, token_env: str) -> None:
    for name, value in data.items():
        key = f"{prefix}{name}"
        node = group.keys.get(str(name))
        if node is None:
            raise unknown_setting(key, token_env=token_env)
        if isinstance(node, Setting):
            node.check(key, value)
        elif node.free or (value is None and node.nullable):
            continue
        elif not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a group of settings, not {_show(value)}")
        elif node.each is not None:
            for name, entry in value.items():
                _check_group(
                    node.each, _group_of(f"{key}.{name}", entry), prefix=f"{key}.{name}.", token_env=token_env
                )
        else:
            _check_group(node, value, prefix=f"{key}.", token_env=token_env)


def _group_of(key: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a group of settings, not {_show(value)}")
    return value


def check_override_keys(keys: Sequence[str]) -> None:
    """Raise ConfigError for the first override key (``dry_run``, ``api.sandbox.queue_seconds``)
    that names no setting; keys of free nodes and of maps (``cog.servers.*``) are not checked."""
    for key in keys:
        node_at(key)


def node_at(key: str) -> Node | None:
    """The declared node of a dotted key; None below a free node or a map, where anything goes.

    Raises ConfigError for a key that names no setting.
    """
    node: Node = PRIMARY
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, Group) or node.free or node.each is not None:
            return None
        child = node.keys.get(part)
        if child is None:
            raise unknown_setting(".".join(parts[: depth + 1]))
        node = child
    return node


def check_swept_values(key: str, values: Sequence[object]) -> None:
    """Raise ConfigError for the first illegal value a sweep (``timeout=5,inf``) gives a setting.

    Interpolations are left to the check of each job's composed config.
    """
    node = node_at(key)
    if isinstance(node, Setting):
        for value in values:
            if not (isinstance(value, str) and "${" in value):
                node.check(key, value)


def unknown_setting(key: str, *, token_env: str = "KKIAI_API_TOKEN") -> ConfigError:
    """The error for an unknown key, with the closest known key when one is close enough."""
    if key == "api.token":
        return ConfigError(TOKEN_REFUSAL.format(env=token_env))
    guess = did_you_mean(key)
    return ConfigError(f"unknown setting '{key}'" + (f" (did you mean '{guess}'?)" if guess else ""))


def did_you_mean(key: str) -> str | None:
    """The known key closest to ``key``: a sibling first, else any key with a close last part."""
    parent, _, name = key.rpartition(".")
    siblings = [k.rpartition(".")[2] for k in known_keys() if k.rpartition(".")[0] == parent]
    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.75)
    if close:
        return f"{parent}.{close[0]}" if parent else close[0]
    by_name: dict[str, str] = {}
    for known in known_keys():
        by_name.setdefault(known.rpartition(".")[2], known)
    close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.8)
    return by_name[close[0]] if close else None


def known_keys(group: Group = PRIMARY, prefix: str = "") -> Iterator[str]:
    """Every declared key, dotted (groups too: ``api``, ``api.sandbox``)."""
    for name, node in group.keys.items():
        yield f"{prefix}{name}"
        if isinstance(node, Group):
            yield from known_keys(node, f"{prefix}{name}.")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bound(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def _show(value: object) -> str:
    """A value as a user would write it on the command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)


def grid_steps(config: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The steps a sweep's grid shows in each cell, from ``grid_steps`` or ``grid_step`` (short for a
    list of one); None: each job's last step. Raises ConfigError when both are set and disagree."""
    many, one = config.get("grid_steps"), config.get("grid_step")
    listed = tuple(str(s) for s in many) if many else None
    if listed is not None and one and listed != (str(one),):
        raise ConfigError(
            f"grid_step={one} and grid_steps=[{','.join(listed)}] are both set: keep one "
            "(grid_step=X is short for grid_steps=[X])"
        )
    return listed or ((str(one),) if one else None)

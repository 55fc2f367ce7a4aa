"""How far the client's rate limit is shared: this process, this machine, or the Ray cluster.

``api.rate_scope`` chooses it; ``auto`` (the default) follows Hydra's launcher:

==========  =============================================  ===========================================
scope       who shares the buckets                         where the GCRA state lives
==========  =============================================  ===========================================
process     everything in this process (a run, a sweep     memory (:class:`~.ratelimit.TokenBucket`),
            under the default launcher)                    as fast as before: no syscall per request
machine     every process on this machine using the same   a file under ``<cache_dir>/ratelimits/``,
            cache directory (``hydra/launcher=joblib``)    under ``flock`` (:mod:`.filelimits`)
cluster     every job on the Ray cluster                   a named Ray actor (:mod:`.raylimits`)
            (``hydra/launcher=ray``)
==========  =============================================  ===========================================

Whichever the scope, the buckets keep the rates as configured for the whole account
(``api.create_rate_per_minute`` ...): nothing is divided by hand.

A shared limiter that fails (the file cannot be locked, the actor does not answer) never means sending
without limit: the process falls back to an in-memory bucket holding a conservative share of the
rates (divided by this machine's CPUs, or the cluster's), says so once in the log (run.log), and tries
the shared limiter again after :data:`RETRY_SECONDS`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from .ratelimit import Bucket, Clock, RateLimits, TokenBucket, shared_limits

log = logging.getLogger(__name__)

RateScope = Literal["process", "machine", "cluster"]
SCOPES: tuple[str, ...] = ("auto", "process", "machine", "cluster")
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
RETRY_SECONDS = 30.0  # after a failure, the shared limiter is tried again this much later


def resolve_scope(configured: str, *, launcher: str | None) -> RateScope:
    """``configured`` itself, or for ``auto`` the scope that the launcher running this job needs.

    ``launcher``: the ``_target_`` of Hydra's launcher when this process runs a job of a multirun,
    else None. The basic launcher keeps every job in this process; Ray spreads them over a cluster;
    any other launcher (joblib, ...) over processes of this machine.
    """
    if configured != "auto":
        assert configured in SCOPES, configured
        return configured  # type: ignore[return-value]  # checked by the config schema
    if launcher is None or launcher == BASIC_LAUNCHER:
        return "process"
    if launcher.rsplit(".", 1)[-1].lower().startswith("ray"):  # RayLauncher, RayAWSLauncher
        return "cluster"
    return "machine"


class GuardedBucket:
    """A shared bucket that, while it fails, is replaced by ``fallback`` (a conservative local share)."""

    def __init__(
        self,
        shared: Bucket,
        fallback: Bucket,
        *,
        what: str,
        retry_seconds: float = RETRY_SECONDS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.shared, self.fallback, self.what = shared, fallback, what
        self._retry_seconds, self._clock = retry_seconds, clock
        self._down_until = float("-inf")
        self.failures = 0

    def reserve(self) -> float:
        return self._use(lambda bucket: bucket.reserve())

    def pause(self, seconds: float) -> None:
        self.fallback.pause(seconds)  # kept paused too, should the shared one fail meanwhile
        self._use(lambda bucket: bucket.pause(seconds))

    def _use(self, call: Callable[[Bucket], float | None]) -> float:
        if self._clock() >= self._down_until:
            try:
                return call(self.shared) or 0.0
            except Exception as exc:  # whatever breaks the limiter, never send without a limit
                self._failed(exc)
        return call(self.fallback) or 0.0

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self._down_until = self._clock() + self._retry_seconds
        log.warning(
            "the shared rate limit (%s) failed: %s: %s; this process keeps to its local share instead "
            "and tries again in %.0f s",
            self.what,
            type(exc).__name__,
            exc,
            self._retry_seconds,
        )


_Key = tuple[str, str, float, float, int, str]
_registry: dict[_Key, RateLimits] = {}
_lock = threading.Lock()


def scoped_limits(
    base_url: str,
    *,
    scope: RateScope,
    create_per_minute: float,
    other_per_minute: float,
    burst: int,
    state_dir: Path | None = None,
) -> RateLimits:
    """The process-wide buckets for ``base_url`` shared as far as ``scope`` says (created on first use).

    ``state_dir``: where the ``machine`` scope keeps its files (the cache directory; None: a folder of
    this user's in the system's temporary directory).
    """
    if scope == "process":
        return shared_limits(
            base_url, create_per_minute=create_per_minute, other_per_minute=other_per_minute, burst=burst
        )
    base_url = base_url.rstrip("/")
    key = (scope, base_url, float(create_per_minute), float(other_per_minute), burst, str(state_dir))
    with _lock:
        limits = _registry.get(key)
        if limits is None:
            limits = _registry[key] = _build(
                scope, base_url, create_per_minute, other_per_minute, burst, state_dir
            )
        return limits


def _build(
    scope: RateScope, base_url: str, create: float, other: float, burst: int, state_dir: Path | None
) -> RateLimits:
    if scope == "machine":
        from .filelimits import FileBucket

        folder = (state_dir or _user_temp()) / "ratelimits"
        name = hashlib.sha256(base_url.encode()).hexdigest()[:16]
        share = os.cpu_count() or 1
        where = f"file {folder}"

        def shared(kind: str, rate: float) -> Bucket:
            return FileBucket(folder / f"{name}-{kind}", rate, burst=burst)

    else:
        from .raylimits import ACTOR_NAME, RayBucket, cluster_cpus

        share = _or_default(cluster_cpus, 8)
        where = f"Ray actor {ACTOR_NAME}"

        def shared(kind: str, rate: float) -> Bucket:
            return RayBucket(f"{base_url}|{kind}", rate, burst=burst)

    def guarded(kind: str, rate: float) -> Bucket:
        fallback = TokenBucket(rate / share, burst=max(1, burst // share))
        return GuardedBucket(
            shared(kind, rate), fallback, what=f"{kind} calls, {where}, 1/{share} if it fails"
        )

    log.info(
        "rate limit shared across the %s (%s): %g creates, %g other calls a minute",
        scope,
        where,
        create,
        other,
    )
    return RateLimits(guarded("create", create), guarded("other", other))


def _or_default(count: Callable[[], int], default: int) -> int:
    """``count()``, or ``default`` if it fails (the fallback's share must not depend on what failed)."""
    try:
        return count()
    except Exception:  # Ray not reachable: the guard reports the failure on first use
        return default


def _user_temp() -> Path:
    return Path(tempfile.gettempdir()) / f"kkiai-pipeline-{os.getuid()}"


def forget_scoped_limits() -> None:
    """Drop every shared bucket (tests)."""
    with _lock:
        _registry.clear()

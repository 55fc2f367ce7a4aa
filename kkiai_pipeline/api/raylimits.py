"""One Ray actor for the account, shared by every job of a Ray cluster (the ``cluster`` scope): it keeps
the token buckets and the keys of the predictions being bought (see :mod:`kkiai_pipeline.inflight`).

The actor is named and detached (``kkiai-pipeline-account-v1`` in the namespace ``kkiai-pipeline``), so
every worker of every sweep on the cluster finds the same one (``get_if_exists``), and it outlives the
job that happened to start it. It needs no CPU, so it never takes a job's slot. It keeps one GCRA state
per bucket key (the API's base URL and the kind of call) on its own clock and answers each reservation
with the seconds to wait, computed with the same arithmetic as the in-memory bucket; its methods run
one at a time, which is the lock. Network latency only ever makes a caller later, never earlier.

Ray is imported only when a bucket is first used, so nothing else pays for it.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ..inflight import Buying
from .ratelimit import gcra_params, gcra_pause, gcra_reserve

ACTOR_NAME = "kkiai-pipeline-account-v1"  # -vN: a new protocol, a new actor
NAMESPACE = "kkiai-pipeline"
# An answer slower than this counts as a failure (the caller falls back). A reservation waits for it on
# the job's event loop, so it is short; a healthy actor answers in about a millisecond.
CALL_TIMEOUT_SECONDS = 3.0


class AccountActor:
    """The cluster's GCRA states by bucket key, and who is buying which prediction key; run as a Ray
    actor (see :func:`account_actor`)."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}
        self.buying = Buying()

    def reserve(self, key: str, interval: float, tolerance: float) -> float:
        self._tat[key], wait = gcra_reserve(
            self._tat.get(key, -math.inf), time.monotonic(), interval=interval, tolerance=tolerance
        )
        return wait

    def pause(self, key: str, seconds: float, tolerance: float) -> None:
        self._tat[key] = gcra_pause(
            self._tat.get(key, -math.inf), time.monotonic(), seconds=seconds, tolerance=tolerance
        )

    # -- in-flight predictions (the methods of Buying, callable remotely) --

    def claim(self, key: str, owner: str) -> dict[str, str | None] | None:
        return self.buying.claim(key, owner)

    def created(self, key: str, owner: str, prediction_id: str) -> None:
        self.buying.created(key, owner, prediction_id)

    def done(self, key: str, owner: str, stored: bool) -> None:
        self.buying.done(key, owner, stored=stored)

    def failed(self, key: str, prediction_id: str) -> None:
        self.buying.failed(key, prediction_id)

    def beat(self, owner: str) -> None:
        self.buying.beat(owner)

    def release(self, owner: str) -> None:
        self.buying.release(owner)


def account_actor() -> Any:
    """The cluster's actor, started if it is not running yet; raises whatever Ray raises."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialized in this process (not a job of hydra/launcher=ray)")
    remote = ray.remote(num_cpus=0, max_restarts=-1)(AccountActor)
    return remote.options(
        name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote()


def cluster_cpus() -> int:
    """The cluster's CPUs: at most this many jobs (of one CPU or more) run at once."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return max(1, int(resources.get("CPU", 1)))


class RayBucket:
    """A bucket of ``per_minute`` tokens (at most ``burst`` at once) kept by the actor under ``key``.

    Raises whatever Ray raises when the actor cannot be reached or answers too late.
    """

    def __init__(
        self, key: str, per_minute: float, *, burst: int, timeout: float = CALL_TIMEOUT_SECONDS
    ) -> None:
        self.key = key
        self._interval, self._tolerance = gcra_params(per_minute, burst)
        self._timeout = timeout
        self._actor: Any = None

    def reserve(self) -> float:
        if not self._interval:
            return 0.0
        import ray

        try:
            ref = self._handle().reserve.remote(self.key, self._interval, self._tolerance)
            wait: float = ray.get(ref, timeout=self._timeout)
        except BaseException:
            self._actor = None  # looked up again next time: the actor may have been replaced
            raise
        return wait

    def pause(self, seconds: float) -> None:
        if not self._interval or seconds <= 0:
            return
        import ray

        try:
            ray.get(self._handle().pause.remote(self.key, seconds, self._tolerance), timeout=self._timeout)
        except BaseException:
            self._actor = None
            raise

    def _handle(self) -> Any:
        if self._actor is None:
            self._actor = account_actor()
        return self._actor

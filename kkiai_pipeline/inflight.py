"""Who is buying which prediction, across the machines of a Ray cluster.

On one machine the ledger settles it: processes sharing a cache directory wait for a key's live owner
(:mod:`.ledger`). Jobs on other machines have other ledgers, so under ``api.rate_scope=cluster`` the
purchaser also asks the account's Ray actor (:mod:`.api.raylimits`), before sending a create for a key
nothing has been sent for yet, "who is buying key K?":

- nobody (or an owner gone silent before its create was answered): the key is ours, we buy it;
- an owner whose create has not been answered yet: we wait and ask again;
- an owner with a prediction id: we follow that prediction by id (nothing created), store its files
  in our own cache, and record the result as ``shared`` (paid elsewhere).

Owners say they are alive every ``OWNER_BEAT_SECONDS``; one silent for ``OWNER_TIMEOUT_SECONDS`` is
taken for dead (as in the ledger). A prediction that failed is forgotten, so the next claimant may
create it again, as the ledger allows. When the actor cannot be reached, a claim answers "ours" with a
warning: each machine then buys for itself, as without the cluster, never worse.

:class:`Buying` is the state (plain Python, run inside the actor); :class:`ClusterClaims` is the
purchaser's asynchronous view of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .ledger import OWNER_BEAT_SECONDS, OWNER_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

CALL_TIMEOUT_SECONDS = 10.0


@dataclass
class _Buy:
    owner: str | None  # None: released by its owner (a prediction left running), anyone may follow it
    prediction_id: str | None = None
    stored: bool = False


class Buying:
    """Which owner is buying which key, and the prediction id once its create is answered."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys: dict[str, _Buy] = {}
        self._beats: dict[str, float] = {}
        self._clock = clock

    def claim(self, key: str, owner: str) -> dict[str, str | None] | None:
        """None: ``owner`` buys ``key`` now; else who does, and the prediction to follow if known."""
        self.beat(owner)
        buy = self._keys.get(key)
        if buy is not None and buy.owner != owner:
            if buy.prediction_id is not None:
                return {"owner": buy.owner, "prediction_id": buy.prediction_id}
            if buy.owner is not None and self._alive(buy.owner):
                return {"owner": buy.owner, "prediction_id": None}
        if buy is None or buy.owner != owner:
            self._keys[key] = _Buy(owner)
        return None

    def created(self, key: str, owner: str, prediction_id: str) -> None:
        buy = self._keys.get(key)
        if buy is not None and buy.owner == owner:
            buy.prediction_id = prediction_id

    def done(self, key: str, owner: str, *, stored: bool) -> None:
        """The owner's prediction ended: stored (kept, later claimants follow it) or not (forgotten)."""
        buy = self._keys.get(key)
        if buy is None or buy.owner != owner:
            return
        if stored:
            buy.stored = True
        else:
            del self._keys[key]

    def failed(self, key: str, prediction_id: str) -> None:
        """A follower saw ``prediction_id`` fail: forget it, whoever owned it."""
        buy = self._keys.get(key)
        if buy is not None and buy.prediction_id == prediction_id:
            del self._keys[key]

    def beat(self, owner: str) -> None:
        self._beats[owner] = self._clock()

    def release(self, owner: str) -> None:
        """``owner`` ends: keys with a prediction stay followable, the others are free again."""
        for key, buy in list(self._keys.items()):
            if buy.owner == owner:
                if buy.prediction_id is None:
                    del self._keys[key]
                else:
                    buy.owner = None
        self._beats.pop(owner, None)

    def _alive(self, owner: str) -> bool:
        return self._clock() - self._beats.get(owner, float("-inf")) < OWNER_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Holder:
    """Another owner buying a key; ``prediction_id`` once its create was answered."""

    owner: str | None
    prediction_id: str | None


class ClusterClaims:
    """This process's claims on the cluster's actor; ``owner`` is the ledger's owner string."""

    def __init__(
        self,
        owner: str,
        *,
        actor: Callable[[], Any] | None = None,
        timeout: float = CALL_TIMEOUT_SECONDS,
    ) -> None:
        self.owner = owner
        self._make_actor = actor
        self._actor: Any = None
        self._timeout = timeout
        self._beating: asyncio.Task[None] | None = None
        self._warned = False

    async def claim(self, key: str) -> Holder | None:
        """None: ours to buy; else the holder. An unreachable actor answers None (with a warning)."""
        if self._beating is None:
            self._beating = asyncio.create_task(self._beat(), name="kkiai cluster beat")
        try:
            answer = await self._call("claim", key, self.owner)
        except Exception as exc:  # never stuck on the actor: buy as a lone machine would
            if not self._warned:
                self._warned = True
                log.warning(
                    "the cluster's record of predictions in flight is unreachable (%s: %s); "
                    "this machine buys what its own cache lacks",
                    type(exc).__name__,
                    exc,
                )
            return None
        return None if answer is None else Holder(answer.get("owner"), answer.get("prediction_id"))

    async def created(self, key: str, prediction_id: str) -> None:
        await self._tell("created", key, self.owner, prediction_id)

    async def done(self, key: str, *, stored: bool) -> None:
        await self._tell("done", key, self.owner, stored)

    async def failed(self, key: str, prediction_id: str) -> None:
        await self._tell("failed", key, prediction_id)

    async def aclose(self) -> None:
        """Stop beating and release this process's keys (what is still running stays followable)."""
        if self._beating is None:
            return
        self._beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._beating
        await self._tell("release", self.owner)

    async def _beat(self) -> None:
        while True:
            await self._tell("beat", self.owner)
            await asyncio.sleep(OWNER_BEAT_SECONDS)

    async def _tell(self, method: str, *args: Any) -> None:
        try:
            await self._call(method, *args)
        except Exception as exc:  # the others then wait at most for the owner's timeout
            log.info("could not tell the cluster's record %s: %s: %s", method, type(exc).__name__, exc)

    async def _call(self, method: str, *args: Any) -> Any:
        if self._actor is None:
            self._actor = (self._make_actor or _account_actor)()
        try:
            ref = getattr(self._actor, method).remote(*args)
            return await asyncio.wait_for(asyncio.wrap_future(ref.future()), self._timeout)
        except BaseException:
            self._actor = None  # looked up again next time
            raise


def _account_actor() -> Any:
    from .api.raylimits import account_actor

    return account_actor()

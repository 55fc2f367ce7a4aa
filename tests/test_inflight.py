"""Predictions in flight shared across machines: the cluster's record (:class:`Buying`), and two
purchasers with two ledgers (two machines' caches) and one service, asking one account actor."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kkiai_pipeline.api.raylimits import AccountActor
from kkiai_pipeline.artifacts import Downloader
from kkiai_pipeline.errors import PredictionFailed
from kkiai_pipeline.inflight import Buying, ClusterClaims
from kkiai_pipeline.ledger import OWNER_TIMEOUT_SECONDS, Ledger
from kkiai_pipeline.purchase import PurchaseOptions, Purchaser

from .memory_backend import Behaviour, MemoryBackend, until
from .test_purchase import order


class _Ref:
    def __init__(self, value: Any) -> None:
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._future.set_result(value)

    def future(self) -> concurrent.futures.Future[Any]:
        return self._future


class _Method:
    def __init__(self, call: Callable[..., Any]) -> None:
        self._call = call

    def remote(self, *args: Any) -> _Ref:
        return _Ref(self._call(*args))


class LocalActor:
    """An AccountActor called the way a Ray actor handle is (``.method.remote(...)``), in-process."""

    def __init__(self) -> None:
        self.actor = AccountActor()

    def __getattr__(self, name: str) -> _Method:
        return _Method(getattr(self.actor, name))


def test_the_first_claimant_buys_and_the_others_wait_then_follow_its_prediction() -> None:
    buying = Buying(clock=lambda: 0.0)
    assert buying.claim("k", "a") is None
    assert buying.claim("k", "a") is None  # its own claim again
    assert buying.claim("k", "b") == {"owner": "a", "prediction_id": None}
    buying.created("k", "b", "not-b's")  # only the owner says what it created
    assert buying.claim("k", "b") == {"owner": "a", "prediction_id": None}
    buying.created("k", "a", "p1")
    assert buying.claim("k", "b") == {"owner": "a", "prediction_id": "p1"}
    buying.done("k", "a", stored=True)
    assert buying.claim("k", "c") == {"owner": "a", "prediction_id": "p1"}  # still followable


def test_a_failed_prediction_is_forgotten_and_a_silent_owner_loses_an_unanswered_key() -> None:
    now = [0.0]
    buying = Buying(clock=lambda: now[0])
    buying.claim("k", "a")
    buying.created("k", "a", "p1")
    buying.failed("k", "p1")  # a follower saw it fail
    assert buying.claim("k", "b") is None  # b may create it again, as the ledger allows
    now[0] = OWNER_TIMEOUT_SECONDS + 1  # b went silent before its create was answered
    assert buying.claim("k", "c") is None
    buying.claim("j", "c")
    buying.created("j", "c", "p2")
    buying.claim("i", "c")
    buying.release("c")  # c ends: its running prediction stays followable, its unsent key is free
    assert buying.claim("j", "d") == {"owner": None, "prediction_id": "p2"}
    assert buying.claim("i", "d") is None


def _run(tmp_path: Path, scenario: Callable[[MemoryBackend, list[Purchaser]], Any], actor: Any) -> None:
    """Two purchasers, each with its own ledger (two machines), one service, one account actor."""

    async def main() -> None:
        memory = MemoryBackend()
        ledgers = [Ledger(tmp_path / f"machine{n}", owner=f"host{n}:1:1") for n in range(2)]
        purchasers = [
            Purchaser(
                ledger=ledger,
                backends={"api": memory},
                downloader=Downloader(run_dir=ledger.root / "incoming", transport=memory.transport),
                options=PurchaseOptions(list_lag_seconds=0.0),
                claims=ClusterClaims(ledger.owner, actor=lambda: actor),
            )
            for ledger in ledgers
        ]
        try:
            await scenario(memory, purchasers)
        finally:
            for purchaser, ledger in zip(purchasers, ledgers, strict=True):
                await purchaser.aclose()
                await purchaser.downloader.aclose()
                ledger.close()

    asyncio.run(main())


def test_two_machines_pay_once_for_one_key(tmp_path: Path) -> None:
    actor = LocalActor()

    async def scenario(memory: MemoryBackend, purchasers: list[Purchaser]) -> None:
        gate = asyncio.Event()
        memory.when(Behaviour(gate=gate))
        first = asyncio.create_task(purchasers[0].obtain(order()))
        await until(lambda: "p1" in memory.predictions)
        second = asyncio.create_task(purchasers[1].obtain(order()))
        await asyncio.sleep(0.1)
        gate.set()
        one, two = await asyncio.gather(first, second)
        assert (one.how, two.how) == ("created", "shared")
        assert one.prediction.id == two.prediction.id == "p1"
        assert (memory.stats.creates, memory.made) == (1, 1)
        assert one.files == two.files and len(one.files) == 1
        for purchaser in purchasers:  # each machine's cache holds the result
            entry = await purchaser.ledger.get(order().key.digest)
            assert entry is not None and (entry.state, entry.prediction_id) == ("stored", "p1")
            assert purchaser.ledger.intact(entry)

    _run(tmp_path, scenario, actor)


def test_a_follower_seeing_the_prediction_fail_lets_the_key_be_bought_again(tmp_path: Path) -> None:
    actor = LocalActor()

    async def scenario(memory: MemoryBackend, purchasers: list[Purchaser]) -> None:
        memory.when(Behaviour(fail="the model crashed"), times=1)
        with pytest.raises(PredictionFailed):
            await purchasers[0].obtain(order())
        again = await purchasers[1].obtain(order())  # not a follower of the failed one: a new create
        assert (again.how, again.prediction.id, memory.stats.creates) == ("created", "p2", 2)

    _run(tmp_path, scenario, actor)


class _Down:
    def __getattr__(self, name: str) -> Any:
        raise ConnectionError("the actor is gone")


def test_an_unreachable_actor_means_each_machine_buys_for_itself_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(memory: MemoryBackend, purchasers: list[Purchaser]) -> None:
        with caplog.at_level(logging.WARNING):
            receipts = [await p.obtain(order()) for p in purchasers]
        assert [r.how for r in receipts] == ["created", "created"]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert sum("predictions in flight is unreachable" in w for w in warnings) == 2  # once a process

    _run(tmp_path, scenario, _Down())

"""The purchaser against an in-memory backend and a real ledger: when it pays, and when it must not.

Every test counts the create calls the backend received (``stats.creates``), the predictions it made
(``made``) and reads the ledger's state for the key afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kkiai_pipeline import purchase
from kkiai_pipeline.artifacts import Downloader
from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.errors import ApiError, OutputsExpired, PredictionFailed, UnresolvedCreate
from kkiai_pipeline.ledger import Entry, Ledger, StoredFile, _start_time, prediction_key
from kkiai_pipeline.purchase import Order, PurchaseOptions, Purchaser

from .memory_backend import Behaviour, MemoryBackend, file_bytes, until

SDXL = default_catalog().resolve("stability-ai/sdxl").version_ref
SHOT = {"prompt": "a mug", "num_outputs": 1}
NO_LIST = ApiError("the API answered 404 to GET /v1/predictions: Not found", status_code=404)


def order(input: dict[str, Any] = SHOT, *, timeout: float = 30.0) -> Order:
    key = prediction_key(identity="memory", version=SDXL, input=input, known={})
    return Order(key=key, backend="api", input=input, timeout=timeout, label="shot")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class World:
    """A purchaser over ``backend`` with a real ledger in ``cache``."""

    backend: MemoryBackend
    ledger: Ledger
    purchaser: Purchaser

    async def state(self, digest: str = order().key.digest) -> Entry:
        entry = await self.ledger.get(digest)
        assert entry is not None
        return entry

    def again(self, **options: Any) -> Purchaser:
        """Another purchaser on the same ledger and backend (a later run of this process)."""
        return Purchaser(
            ledger=self.ledger,
            backends={"api": self.backend},
            downloader=self.purchaser.downloader,
            options=PurchaseOptions(**{"list_lag_seconds": 0.0, **options}),
        )


Scenario = Callable[[World], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario, *, backend: MemoryBackend | None = None, **options: Any) -> None:
    """Run ``scenario`` on a fresh event loop with a purchaser whose ledger is in ``tmp_path/cache``."""

    async def main() -> None:
        memory = backend or MemoryBackend()
        ledger = Ledger(tmp_path / "cache")
        downloader = Downloader(run_dir=ledger.root / "incoming", transport=memory.transport)
        purchaser = Purchaser(
            ledger=ledger,
            backends={"api": memory},
            downloader=downloader,
            options=PurchaseOptions(**{"list_lag_seconds": 0.0, **options}),
        )
        try:
            await scenario(World(memory, ledger, purchaser))
        finally:
            await downloader.aclose()
            ledger.close()

    asyncio.run(main())


@contextmanager
def process(*, alive: bool) -> Iterator[str]:
    """The ledger owner name of a child process, running or already ended."""
    code = "import time; time.sleep(60)" if alive else "pass"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        start = _start_time(child.pid)
        if not alive:
            child.wait()
        yield f"{socket.gethostname()}:{child.pid}:{start}"
    finally:
        child.kill()
        child.wait()


async def left_by(owner: str, tmp_path: Path, digest: str, *moves: tuple[str, dict[str, Any]]) -> None:
    """What another process (``owner``) did to the key before it stopped."""
    other = Ledger(tmp_path / "cache", owner=owner)
    try:
        await other.claim(order().key)
        for state, values in moves:
            await other.move(digest, state, **values)  # type: ignore[arg-type]
    finally:
        other.close()


# -- reuse and sharing -----------------------------------------------------------------------------


def test_a_stored_key_is_reused_with_no_create(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        first = await w.purchaser.obtain(order())
        assert (first.how, first.prediction.id, w.backend.stats.creates) == ("created", "p1", 1)
        stored = StoredFile(sha(file_bytes("p1", 0)), len(file_bytes("p1", 0)), "image/png")
        assert first.files == (stored,)
        later = await w.again().obtain(order())
        assert (later.how, later.prediction.id, later.files, later.fresh) == (
            "reused",
            "p1",
            (stored,),
            False,
        )
        assert (w.backend.stats.creates, w.backend.made, w.backend.gets) == (1, 1, [])
        entry = await w.state()
        assert (entry.state, entry.prediction_id, entry.files) == ("stored", "p1", (stored,))
        assert w.ledger.blob(stored.sha256).read_bytes() == file_bytes("p1", 0)

    run(tmp_path, scenario)


def test_two_concurrent_obtains_of_one_key_share_one_create(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        gate = asyncio.Event()
        w.backend.when(Behaviour(gate=gate))
        first = asyncio.create_task(w.purchaser.obtain(order()))
        second = asyncio.create_task(w.purchaser.obtain(order()))
        await until(lambda: "p1" in w.backend.predictions)
        assert w.backend.status_of("p1") == "processing"
        gate.set()
        one, two = await asyncio.gather(first, second)
        assert (one.how, two.how) == ("created", "shared")
        assert one.prediction.id == two.prediction.id == "p1"
        assert one.files == two.files and len(one.files) == 1
        assert (w.backend.stats.creates, w.backend.made, w.purchaser.creates) == (1, 1, 1)
        assert (await w.state()).state == "stored"

    run(tmp_path, scenario)


def test_a_key_busy_under_another_live_process_is_waited_for_then_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(purchase, "WAIT_OTHER_SECONDS", 0.01)
    data = b"made by the other process"

    async def scenario(w: World) -> None:
        with process(alive=True) as owner:
            other = Ledger(tmp_path / "cache", owner=owner)
            try:
                claim = await other.claim(order().key)
                assert claim.mine
                waiting = asyncio.create_task(w.purchaser.obtain(order()))
                await asyncio.sleep(0.1)  # several looks at the key, each finding it busy
                assert not waiting.done()
                assert w.backend.stats.creates == 0
                source = tmp_path / "other.png"
                source.write_bytes(data)
                other.adopt(source, sha(data))
                stored = StoredFile(sha(data), len(data), "image/png")
                await other.move(
                    order().key.digest, "stored", prediction_id="p-other", files=(stored,), output=["x"]
                )
                receipt = await waiting
            finally:
                other.close()
        assert (receipt.how, receipt.prediction.id, receipt.files) == ("reused", "p-other", (stored,))
        assert (w.backend.stats.creates, w.backend.stats.requests) == (0, 0)
        entry = await w.state()
        assert (entry.state, entry.owner) == ("stored", owner)

    run(tmp_path, scenario)


# -- carrying on from what another (dead) process left ---------------------------------------------


def test_a_created_entry_left_by_a_dead_process_is_reattached_by_id(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        gate = asyncio.Event()
        made = w.backend.add(SDXL, SHOT, gate=gate)
        digest = order().key.digest
        with process(alive=False) as owner:
            await left_by(owner, tmp_path, digest, ("created", {"prediction_id": made.id}))
        task = asyncio.create_task(w.purchaser.obtain(order()))
        await until(lambda: w.backend.gets == ["p1"])
        assert not task.done()
        gate.set()
        receipt = await task
        assert (receipt.how, receipt.prediction.id, receipt.prediction.status) == (
            "reattached",
            "p1",
            "succeeded",
        )
        assert (w.backend.stats.creates, w.backend.made, w.backend.gets) == (0, 1, ["p1"])
        entry = await w.state()
        assert (entry.state, entry.prediction_id, entry.owner) == ("stored", "p1", w.ledger.owner)

    run(tmp_path, scenario)


def test_a_succeeded_entry_is_recovered_by_id(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        made = w.backend.add(SDXL, SHOT)
        digest = order().key.digest
        with process(alive=False) as owner:
            await left_by(
                owner,
                tmp_path,
                digest,
                ("created", {"prediction_id": made.id}),
                ("succeeded", {"output": made.output}),
            )
        receipt = await w.purchaser.obtain(order())
        assert (receipt.how, receipt.prediction.id) == ("recovered", "p1")
        assert receipt.files == (StoredFile(sha(file_bytes("p1", 0)), len(file_bytes("p1", 0)), "image/png"),)
        assert (w.backend.stats.creates, w.backend.gets) == (0, ["p1"])
        assert (await w.state()).state == "stored"

    run(tmp_path, scenario)


EXPIRED = (
    "prediction p1 succeeded, but the service removed its files before they were stored; "
    "set repay_expired=true to pay for a new prediction"
)


async def expired_entry(w: World, tmp_path: Path) -> None:
    """A succeeded prediction whose files the service removed before a dead process stored them."""
    made = w.backend.add(SDXL, SHOT)
    assert made.id is not None
    w.backend.expire(made.id)
    with process(alive=False) as owner:
        await left_by(
            owner,
            tmp_path,
            order().key.digest,
            ("created", {"prediction_id": made.id}),
            ("succeeded", {"output": made.output}),
        )


def test_an_expired_prediction_is_reported_and_paid_again_only_when_allowed(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        await expired_entry(w, tmp_path)
        with pytest.raises(OutputsExpired) as caught:
            await w.purchaser.obtain(order())
        assert (str(caught.value), caught.value.prediction_id) == (EXPIRED, "p1")
        entry = await w.state()
        assert (entry.state, entry.error, w.backend.stats.creates) == ("expired", EXPIRED, 0)
        with pytest.raises(OutputsExpired):
            await w.again().obtain(order())  # still not without leave
        assert w.backend.stats.creates == 0
        receipt = await w.again(repay_expired=True).obtain(order())
        assert (receipt.how, receipt.prediction.id) == ("created", "p2")
        assert (w.backend.stats.creates, w.backend.creates_of(SDXL, SHOT)) == (1, 2)
        entry = await w.state()
        assert (entry.state, entry.prediction_id, entry.error) == ("stored", "p2", None)

    run(tmp_path, scenario)


def test_with_repay_expired_a_prediction_found_expired_is_paid_again_at_once(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        await expired_entry(w, tmp_path)
        receipt = await w.purchaser.obtain(order())
        assert (receipt.how, receipt.prediction.id) == ("created", "p2")
        assert (w.backend.stats.creates, w.backend.creates_of(SDXL, SHOT)) == (1, 2)
        assert (await w.state()).state == "stored"

    run(tmp_path, scenario, repay_expired=True)


def test_a_damaged_blob_of_an_expired_prediction_is_not_served_and_not_paid_for(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        first = await w.purchaser.obtain(order())
        assert (first.how, first.prediction.id) == ("created", "p1")
        (stored,) = first.files
        w.ledger.blob(stored.sha256).write_bytes(file_bytes("p1", 0)[:5])  # truncated
        w.backend.expire("p1")
        with pytest.raises(OutputsExpired) as caught:
            await w.again().obtain(order())
        assert caught.value.prediction_id == "p1"
        assert (w.backend.stats.creates, w.backend.gets) == (1, ["p1"])  # asked by id, nothing created
        assert (await w.state()).state == "expired"

    run(tmp_path, scenario)


# -- creates whose answer was lost -----------------------------------------------------------------


def test_a_lost_answer_found_in_the_list_is_followed_without_a_second_create(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        w.backend.when(Behaviour(lose="answer"))
        receipt = await w.purchaser.obtain(order())
        assert (receipt.how, receipt.prediction.id) == ("created", "p1")
        assert (w.backend.stats.creates, w.backend.made, w.backend.lookups) == (1, 1, 1)
        entry = await w.state()
        assert (entry.state, entry.prediction_id, entry.request) == ("stored", "p1", SHOT)

    run(tmp_path, scenario)


def test_a_lagging_list_is_looked_at_again_until_the_lost_create_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(purchase, "LOOKUP_PAUSE_SECONDS", 0.01)

    async def scenario(w: World) -> None:
        w.backend.when(Behaviour(lose="answer", hidden=2))
        receipt = await w.purchaser.obtain(order())
        assert (receipt.how, receipt.prediction.id) == ("created", "p1")
        assert (w.backend.stats.creates, w.backend.made, w.backend.lookups) == (1, 1, 3)

    run(tmp_path, scenario, list_lag_seconds=60.0)


def test_a_lost_request_is_sent_again_exactly_once_after_the_list_lag(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        w.backend.when(Behaviour(lose="request"))
        receipt = await w.purchaser.obtain(order())  # about 1 s: the lag (0) plus a second's margin
        assert (receipt.how, receipt.prediction.id) == ("created", "p1")
        assert (w.backend.stats.creates, w.purchaser.creates, w.backend.made) == (2, 2, 1)
        assert (await w.state()).state == "stored"

    run(tmp_path, scenario)


def test_a_sending_entry_left_long_ago_and_absent_from_the_list_is_sent_once(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        digest = order().key.digest
        sent = {"sent_at": time.time() - 120.0, "server_offset": 0.0, "request": SHOT}
        with process(alive=False) as owner:
            await left_by(owner, tmp_path, digest, ("sending", sent))
        receipt = await w.purchaser.obtain(order())
        assert (receipt.how, receipt.prediction.id) == ("created", "p1")
        assert (w.backend.lookups, w.backend.stats.creates, w.backend.made) == (1, 1, 1)

    run(tmp_path, scenario, list_lag_seconds=60.0)


def test_a_sending_entry_found_in_the_list_is_reattached(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        made = w.backend.add(SDXL, SHOT)
        sent = {"sent_at": time.time() - 1.0, "server_offset": 0.0, "request": SHOT}
        with process(alive=False) as owner:
            await left_by(owner, tmp_path, order().key.digest, ("sending", sent))
        receipt = await w.purchaser.obtain(order())
        assert (receipt.how, receipt.prediction.id) == ("reattached", made.id)
        assert (w.backend.lookups, w.backend.stats.creates, w.backend.made) == (1, 0, 1)

    run(tmp_path, scenario, list_lag_seconds=60.0)


def test_without_a_list_a_lost_create_is_unresolved_and_never_sent_again(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        w.backend.list_error = NO_LIST
        w.backend.when(Behaviour(lose="answer"))
        for _ in range(2):
            with pytest.raises(UnresolvedCreate) as caught:
                await w.purchaser.obtain(order())
            start, end = caught.value.window
            assert str(caught.value) == (
                "shot: a create may have reached the service and the service's list cannot tell "
                f"({NO_LIST}). Nothing was sent again. Check the account's predictions for {SDXL} created "
                f"between {start} and {end}; rerun or resume to look again (key {order().key.digest[:12]})"
            )
            assert caught.value.key == order().key.digest
            entry = await w.state()
            assert (entry.state, entry.error, entry.prediction_id) == ("unresolved", str(caught.value), None)
        assert (w.backend.stats.creates, w.backend.made, w.backend.lookups) == (1, 1, 2)

    run(tmp_path, scenario)


# -- failures, timeouts, interrupts ----------------------------------------------------------------


def test_a_failed_prediction_raises_and_the_next_obtain_creates_again(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        w.backend.when(Behaviour(fail="CUDA out of memory"))
        with pytest.raises(PredictionFailed) as caught:
            await w.purchaser.obtain(order())
        failed = caught.value
        assert (str(failed), failed.prediction_id, failed.status) == ("CUDA out of memory", "p1", "failed")
        entry = await w.state()
        assert (entry.state, entry.error, entry.prediction_id) == ("failed", "CUDA out of memory", "p1")
        receipt = await w.purchaser.obtain(order())
        assert (receipt.how, receipt.prediction.id) == ("created", "p2")
        assert (w.backend.stats.creates, w.backend.made) == (2, 2)
        assert (await w.state()).state == "stored"

    run(tmp_path, scenario)


def test_a_refused_create_is_recorded_failed_and_creates_nothing(tmp_path: Path) -> None:
    refusal = ApiError("the API answered 402 to POST /v1/predictions: Payment required", status_code=402)

    async def scenario(w: World) -> None:
        w.backend.when(Behaviour(refuse=refusal))
        with pytest.raises(ApiError) as caught:
            await w.purchaser.obtain(order())
        assert caught.value is refusal
        entry = await w.state()
        assert (entry.state, entry.error, w.backend.made) == ("failed", str(refusal), 0)

    run(tmp_path, scenario)


def test_a_prediction_past_its_timeout_is_canceled(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        w.backend.when(Behaviour(gate=asyncio.Event()))  # never set: it would run for ever
        with pytest.raises(PredictionFailed) as caught:
            await w.purchaser.obtain(order(timeout=0.05))
        failed = caught.value
        assert (str(failed), failed.prediction_id, failed.status) == (
            "canceled after the step's timeout of 0.05 s",
            "p1",
            "canceled",
        )
        assert (w.backend.cancels, w.backend.status_of("p1")) == (["p1"], "canceled")
        assert (await w.state()).state == "failed"

    run(tmp_path, scenario)


@pytest.mark.parametrize(
    ("on_interrupt", "cancels", "at_backend", "state", "error"),
    [
        ("cancel", ["p1"], "canceled", "failed", "canceled when the run was interrupted"),
        ("leave", [], "processing", "created", None),
    ],
)
def test_an_interrupted_obtain_cancels_or_leaves_its_prediction(
    tmp_path: Path,
    on_interrupt: str,
    cancels: list[str],
    at_backend: str,
    state: str,
    error: str | None,
) -> None:
    async def scenario(w: World) -> None:
        w.backend.when(Behaviour(gate=asyncio.Event()))
        task = asyncio.create_task(w.purchaser.obtain(order()))
        await until(lambda: w.backend.waiting["p1"] == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        entry = await w.purchaser.abandon(order().key.digest, budget=2.0)  # what the executor does
        assert entry is not None
        assert (entry.state, entry.prediction_id, entry.error) == (state, "p1", error)
        assert (w.backend.cancels, w.backend.status_of("p1")) == (cancels, at_backend)
        assert (w.backend.stats.creates, w.backend.made) == (1, 1)

    run(tmp_path, scenario, on_interrupt=on_interrupt)


def test_one_sharer_giving_up_does_not_stop_the_others_prediction(tmp_path: Path) -> None:
    async def scenario(w: World) -> None:
        gate = asyncio.Event()
        w.backend.when(Behaviour(gate=gate))
        leaving = asyncio.create_task(w.purchaser.obtain(order()))
        staying = asyncio.create_task(w.purchaser.obtain(order()))
        await until(lambda: "p1" in w.backend.predictions)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        gate.set()
        receipt = await staying
        assert (receipt.how, receipt.prediction.id, w.backend.cancels) == ("shared", "p1", [])
        assert (await w.state()).state == "stored"

    run(tmp_path, scenario)


def test_http_outputs_are_fetched_through_the_transport(tmp_path: Path) -> None:
    backend = MemoryBackend(files_base="https://files.test")
    two = {"prompt": "a vase", "num_outputs": 2}

    async def scenario(w: World) -> None:
        receipt = await w.purchaser.obtain(order(two))
        assert receipt.urls == ("https://files.test/p1/0.png", "https://files.test/p1/1.png")
        assert [f.sha256 for f in receipt.files] == [sha(file_bytes("p1", i)) for i in range(2)]
        assert w.purchaser.downloader.stats.requests == 2

    run(tmp_path, scenario, backend=backend)


def test_files_removed_before_the_first_download_are_reported_as_expired(tmp_path: Path) -> None:
    backend = MemoryBackend(files_base="https://files.test")

    async def scenario(w: World) -> None:
        w.backend.when(Behaviour(expired=True))
        with pytest.raises(OutputsExpired) as caught:
            await w.purchaser.obtain(order())
        assert str(caught.value) == EXPIRED
        assert (await w.state()).state == "expired"
        assert (w.backend.stats.creates, w.backend.gets) == (1, ["p1"])

    run(tmp_path, scenario, backend=backend)


def test_an_interrupt_while_the_created_state_is_written_still_cancels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(w: World) -> None:
        w.backend.when(Behaviour(gate=asyncio.Event()))
        writing, release = asyncio.Event(), asyncio.Event()
        real = w.ledger.move

        async def slow_move(key: str, state: Any, **values: Any) -> None:
            done = asyncio.ensure_future(real(key, state, **values))  # the write itself is never undone
            if state == "created":
                writing.set()
                await release.wait()  # a ledger busy with other writes (a sweep's)
            await done

        monkeypatch.setattr(w.ledger, "move", slow_move)
        task = asyncio.create_task(w.purchaser.obtain(order()))
        await writing.wait()
        task.cancel()
        entry = await w.purchaser.abandon(order().key.digest, budget=2.0)
        assert entry is not None
        assert (entry.state, entry.prediction_id, entry.error) == (
            "failed",
            "p1",
            "canceled when the run was interrupted",
        )
        assert (w.backend.cancels, w.backend.status_of("p1")) == (["p1"], "canceled")

    run(tmp_path, scenario)

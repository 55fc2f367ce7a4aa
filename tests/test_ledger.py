from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from kkiai_pipeline.ledger import Ledger, PredictionKey, StoredFile, prediction_key, this_owner


def key(input: dict[str, object], **kw: object) -> PredictionKey:
    args: dict[str, object] = {"identity": "sandbox", "version": "o/n:1", "input": input, "known": {}}
    args.update(kw)
    return prediction_key(**args)  # type: ignore[arg-type]


def test_keys_depend_on_service_version_input_and_nonce_but_not_key_order() -> None:
    base = key({"a": 1, "b": 2})
    assert base.digest == key({"b": 2, "a": 1}).digest
    others = [
        key({"a": 1, "b": 2}, identity="kkiai:https://x"),
        key({"a": 1, "b": 2}, version="o/n:2"),
        key({"a": 1, "b": 3}),
        key({"a": 1, "b": 2}, nonce="run/step/None"),
    ]
    assert len({base.digest, *(o.digest for o in others)}) == 5


def test_file_references_are_keyed_by_content() -> None:
    data = b"png bytes"
    sha = hashlib.sha256(data).hexdigest()
    by_url = key({"image": "https://files/x.png"}, known={"https://files/x.png": sha})
    by_other_url = key({"image": "https://elsewhere/y.png"}, known={"https://elsewhere/y.png": sha})
    by_data_uri = key({"image": "data:image/png;base64,cG5nIGJ5dGVz"})
    assert by_url.digest == by_other_url.digest == by_data_uri.digest


def test_a_new_key_is_claimed_intended_and_moves_durably(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = Ledger(tmp_path)
        k = key({"a": 1})
        claim = await ledger.claim(k)
        assert claim.mine and claim.entry is not None and claim.entry.state == "intended"
        await ledger.move(k.digest, "sending", sent_at=123.0, server_offset=-120.0)
        await ledger.move(k.digest, "created", prediction_id="p1")
        ledger.close()
        again = Ledger(tmp_path)  # another process's view: the same entry
        entry = await again.get(k.digest)
        assert entry is not None
        assert (entry.state, entry.prediction_id, entry.sent_at, entry.server_offset) == (
            "created",
            "p1",
            123.0,
            -120.0,
        )
        again.close()

    asyncio.run(scenario())


def test_a_busy_key_of_a_live_process_is_not_taken_but_a_dead_ones_is(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        host_pid = this_owner().rsplit(":", 2)[0]
        live_owner = f"{host_pid}:{child.pid}:?"

        async def scenario() -> None:
            theirs = Ledger(tmp_path, owner=live_owner)
            k = key({"a": 2})
            assert (await theirs.claim(k)).mine
            await theirs.move(k.digest, "sending", sent_at=1.0)
            mine = Ledger(tmp_path)
            claim = await mine.claim(k)
            assert not claim.mine and claim.entry is not None and claim.entry.state == "sending"
            child.kill()
            child.wait()
            claim = await mine.claim(k)
            assert (
                claim.mine and claim.entry is not None and claim.entry.state == "sending"
            )  # carried on as left
            theirs.close()
            mine.close()

        asyncio.run(scenario())
    finally:
        child.kill()


def test_a_stored_entry_is_reused_only_while_its_blobs_are_intact(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = Ledger(tmp_path)
        k = key({"a": 3})
        await ledger.claim(k)
        download = tmp_path / "incoming.png"
        download.write_bytes(b"zero")
        sha = hashlib.sha256(b"zero").hexdigest()
        ledger.adopt(download, sha)
        files = (StoredFile(sha, 4, "image/png"),)
        await ledger.move(k.digest, "stored", prediction_id="p", files=files)
        other = Ledger(tmp_path, owner="elsewhere:1:1")
        claim = await other.claim(k)
        assert not claim.mine and claim.entry is not None and claim.entry.state == "stored"
        ledger.copy_out(sha, tmp_path / "run" / "output_0.png")
        assert (tmp_path / "run" / "output_0.png").read_bytes() == b"zero"
        ledger.blob(sha).write_bytes(b"damaged")  # a damaged blob is never served
        claim = await other.claim(k)
        assert claim.mine and claim.entry is not None and claim.entry.state == "stored"
        ledger.close()
        other.close()

    asyncio.run(scenario())


async def while_the_worker_is_busy(ledger: Ledger, *moves: Any) -> list[Any]:
    """Run ``moves`` while the ledger's worker thread is held up, so that they all wait for one commit."""
    blocker = threading.Event()
    ledger._pool.submit(blocker.wait)
    together = asyncio.gather(*moves, return_exceptions=True)
    await asyncio.sleep(0.05)
    blocker.set()
    return await together


def test_moves_made_together_are_committed_together_and_each_is_durable_when_it_returns(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[int, list[Any]]:
        ledger = Ledger(tmp_path)
        keys = [key({"i": i}) for i in range(50)]
        for k in keys:
            await ledger.claim(k)
        commits = 0
        commit = ledger._commit

        def counted() -> None:
            nonlocal commits
            commits += 1
            commit()

        ledger._commit = counted  # type: ignore[method-assign]

        async def move(k: PredictionKey) -> str | None:
            await ledger.move(k.digest, "sending", sent_at=1.0)
            other = Ledger(tmp_path)  # another process, right after the move returned
            entry = other.get_now(k.digest)
            other.close()
            return entry.state if entry else None

        seen = await while_the_worker_is_busy(ledger, *(move(k) for k in keys))
        ledger.close()
        return commits, seen

    commits, seen = asyncio.run(scenario())
    assert seen == ["sending"] * 50
    assert commits == 1


def test_a_failed_commit_fails_every_move_of_it_and_commits_none(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[Any], str | None]:
        ledger = Ledger(tmp_path)
        good = key({"a": 1})
        await ledger.claim(good)
        results = await while_the_worker_is_busy(
            ledger,
            ledger.move(good.digest, "sending"),
            ledger.move(good.digest, "created", no_such_column=1),
        )
        entry = await ledger.get(good.digest)
        ledger.close()
        return results, entry.state if entry else None

    results, state = asyncio.run(scenario())
    assert all(isinstance(r, sqlite3.OperationalError) for r in results), results
    assert state == "intended"

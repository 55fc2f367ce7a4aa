"""The persistent store: later and concurrent sandboxes on one store, retention, orphaned predictions."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.sandbox import Sandbox, SandboxConfig, serve_in_thread
from kkiai_pipeline.sandbox.config import default_store, with_default_store
from kkiai_pipeline.sandbox.database import FILENAME, Database, StoreError, decode_cursor, encode_cursor
from kkiai_pipeline.sandbox.store import Store

from .helpers import AUTH, TERMINAL, FakeClock, open_store, version_of

SD = version_of("stability-ai/stable-diffusion")
SDXL = version_of("stability-ai/sdxl")
REMBG = version_of("cjwbw/rembg")
TINY = {"prompt": "a lamp", "width": 64, "height": 64}
QUICK = {"queue_seconds": 0.0, "predict_seconds": 0.05}

Start = Callable[..., Sandbox]


def client_of(sandbox: Sandbox) -> httpx.Client:
    return httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False, timeout=30)


def create(client: httpx.Client, version: str = SD, **input: Any) -> str:
    response = client.post("/predictions", json={"version": version, "input": {**TINY, **input}})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def until(client: httpx.Client, prediction_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Polls GET until ``done(body)`` (the deadline only guards against hangs)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/predictions/{prediction_id}").json()
        if done(body):
            return body
        time.sleep(0.02)
    raise AssertionError(f"prediction {prediction_id} never got there")


def finished(client: httpx.Client, prediction_id: str) -> dict[str, Any]:
    return until(client, prediction_id, lambda body: body["status"] in TERMINAL)


def test_a_later_sandbox_serves_earlier_predictions_and_their_files(tmp_path: Path) -> None:
    config = SandboxConfig(store=str(tmp_path), **QUICK)
    with serve_in_thread(config) as first, client_of(first) as client:
        prediction_id = create(client)
        before = finished(client, prediction_id)
        assert before["status"] == "succeeded"
        content = httpx.get(before["output"][0], trust_env=False).content
    with serve_in_thread(config) as second, client_of(second) as client:
        assert second.port != first.port
        after = client.get(f"/predictions/{prediction_id}").json()
        assert after == {**before, "output": [f"{second.root_url}/files/{prediction_id}/out-0.png"]}
        file = httpx.get(after["output"][0], trust_env=False)
        assert (file.status_code, file.content) == (200, content)
        assert [p["id"] for p in client.get("/predictions").json()["results"]] == [prediction_id]


def test_a_later_sandbox_serves_earlier_predictions_of_a_generic_model(tmp_path: Path) -> None:
    config = SandboxConfig(store=str(tmp_path), **QUICK)
    with serve_in_thread(config) as first, client_of(first) as client:
        before = finished(client, create(client, "someone/painter:0123abcd"))
    with serve_in_thread(config) as second, client_of(second) as client:
        after = client.get(f"/predictions/{before['id']}").json()
    assert (after["status"], after["model"], after["version"]) == ("succeeded", "someone/painter", "0123abcd")


def test_a_file_url_of_a_stopped_sandbox_is_still_an_input(tmp_path: Path) -> None:
    config = SandboxConfig(store=str(tmp_path), **QUICK)
    with serve_in_thread(config) as first, client_of(first) as client:
        image = finished(client, create(client, SDXL, width=128, height=128))["output"][0]
    with serve_in_thread(config) as second, client_of(second) as client:
        response = client.post("/predictions", json={"version": REMBG, "input": {"image": image}})
        body = finished(client, response.json()["id"])
    assert image.startswith(first.root_url)
    assert (body["status"], body["error"]) == ("succeeded", None)


def test_the_list_pages_through_every_sandboxs_predictions(tmp_path: Path) -> None:
    config = SandboxConfig(store=str(tmp_path), **QUICK)
    with serve_in_thread(config) as first, client_of(first) as client:
        made = [create(client, prompt=f"[sandbox:fail] {i}") for i in range(103)]
    with serve_in_thread(config) as second, client_of(second) as client:
        made.append(create(client))
        page = client.get("/predictions").json()
        assert [p["id"] for p in page["results"]] == made[::-1][:100]
        cursor = re.fullmatch(r"https://api\.replicate\.com/v1/predictions\?cursor=([\w-]+)", page["next"])
        assert cursor is not None
        rest = client.get("/predictions", params={"cursor": cursor[1]}).json()
        assert ([p["id"] for p in rest["results"]], rest["next"]) == (made[::-1][100:], None)


def test_the_list_filters_by_creation_time(tmp_path: Path) -> None:
    with (
        serve_in_thread(SandboxConfig(store=str(tmp_path), **QUICK)) as sandbox,
        client_of(sandbox) as client,
    ):
        older, newer = create(client), create(client)
        bodies = {p["id"]: p for p in client.get("/predictions").json()["results"]}
        split = bodies[newer]["created_at"]
        after = client.get("/predictions", params={"created_after": split}).json()
        before = client.get("/predictions", params={"created_before": split}).json()
    assert [p["id"] for p in after["results"]] == [newer]
    assert [p["id"] for p in before["results"]] == [older]


def test_cursors_are_opaque_and_round_trip() -> None:
    cursor = (1712345678.123456, 42)
    text = encode_cursor(cursor)
    assert re.fullmatch(r"[\w-]+", text)
    assert decode_cursor(text) == cursor
    assert decode_cursor("not a cursor!") is None
    assert decode_cursor(None) is None


def test_files_expire_after_file_ttl(tmp_path: Path) -> None:
    config = SandboxConfig(store=str(tmp_path), file_ttl=1.0, **QUICK)
    with serve_in_thread(config) as sandbox, client_of(sandbox) as client:
        prediction_id = create(client)
        done = finished(client, prediction_id)
        url = done["output"][0]
        assert (done["data_removed"], httpx.get(url, trust_env=False).status_code) == (False, 200)
        removed = until(client, prediction_id, lambda body: body["data_removed"])
        assert {k: removed[k] for k in ("status", "output", "error")} == {
            "status": "succeeded",
            "output": None,
            "error": None,
        }
        assert removed["metrics"] == done["metrics"]
        missing = httpx.get(url, trust_env=False)
        assert (missing.status_code, missing.json()) == (404, {"detail": "Not found.", "status": 404})
    with serve_in_thread(config) as later, client_of(later) as client:
        assert client.get(f"/predictions/{prediction_id}").json()["data_removed"] is True
        assert (
            httpx.get(f"{later.root_url}/files/{prediction_id}/out-0.png", trust_env=False).status_code == 404
        )


def test_expired_files_leave_the_store(tmp_path: Path) -> None:
    clock = FakeClock()
    with open_store(tmp_path, clock, file_ttl=10.0) as store:

        async def scenario() -> str:
            prediction = store.create(
                default_catalog().resolve("stability-ai/stable-diffusion"), TINY, files={}
            )
            render = store.rendering(prediction.id)
            assert render is not None
            await render
            return prediction.id

        prediction_id = asyncio.run(scenario())
        clock.now += 5
        assert store.file(prediction_id, "out-0.png") is not None
        clock.now += 8
        assert store.file(prediction_id, "out-0.png") is None
        store.purge()
    database = Database(tmp_path, models=default_catalog().find)
    try:
        assert database.content(prediction_id, "out-0.png") is None
    finally:
        database.close()


def test_two_sandboxes_share_one_store_at_once(tmp_path: Path) -> None:
    config = SandboxConfig(store=str(tmp_path), **QUICK)
    with serve_in_thread(config) as first, serve_in_thread(config) as second:

        def make(sandbox: Sandbox) -> list[str]:
            with client_of(sandbox) as client:
                return [create(client, prompt=f"lamp {i}") for i in range(40)]

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            batches = list(pool.map(make, [first, second, first, second]))
        made = {prediction_id for batch in batches for prediction_id in batch}
        assert len(made) == 160
        with client_of(first) as one, client_of(second) as other:
            for prediction_id in batches[0][:3] + batches[1][:3]:
                mine, theirs = finished(one, prediction_id), finished(other, prediction_id)
                assert (mine["status"], theirs["status"]) == ("succeeded", "succeeded")
                first_bytes = httpx.get(mine["output"][0], trust_env=False).content
                assert httpx.get(theirs["output"][0], trust_env=False).content == first_bytes
            listed = {p["id"] for p in one.get("/predictions").json()["results"]}
            listed |= {
                p["id"] for p in one.get("/predictions", params={"cursor": _cursor(one)}).json()["results"]
            }
            assert listed == made
        assert first.stats()["predictions"]["total"] == second.stats()["predictions"]["total"] == 80


def _cursor(client: httpx.Client) -> str:
    next_url = client.get("/predictions").json()["next"]
    return str(httpx.URL(next_url).params["cursor"])


def test_a_cancel_in_one_sandbox_stops_the_others_prediction(tmp_path: Path) -> None:
    config = SandboxConfig(store=str(tmp_path), queue_seconds=0.0, predict_seconds=60.0)
    with (
        serve_in_thread(config) as first,
        serve_in_thread(config) as second,
        client_of(first) as one,
        client_of(second) as other,
    ):
        prediction_id = create(one)
        assert other.post(f"/predictions/{prediction_id}/cancel").json()["status"] == "canceled"
        assert one.get(f"/predictions/{prediction_id}").json()["status"] == "canceled"


class _Stuck(concurrent.futures.Executor):
    """An executor whose jobs never run: a process that died before drawing its files."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        return concurrent.futures.Future()


@pytest.fixture
def orphaned(tmp_path: Path) -> Iterator[tuple[Store, str, FakeClock]]:
    """A prediction created by a store that never drew it, and that store, still open."""
    clock = FakeClock()
    database = Database(tmp_path, models=default_catalog().find)
    dead = Store(
        database, queue_seconds=1.0, predict_seconds=2.0, file_ttl=3600, executor=_Stuck(), clock=clock
    )

    async def scenario() -> str:
        return dead.create(default_catalog().resolve("stability-ai/stable-diffusion"), TINY, files={}).id

    try:
        yield dead, asyncio.run(scenario()), clock
    finally:
        dead.close()
        database.close()


def test_an_orphaned_prediction_is_drawn_by_the_next_sandbox(
    tmp_path: Path, orphaned: tuple[Store, str, FakeClock]
) -> None:
    dead, prediction_id, clock = orphaned
    clock.now += 5
    dead.close()  # its process stops without having drawn the files
    with open_store(tmp_path, clock) as store:

        async def scenario() -> None:
            assert store.snapshot(prediction_id).status == "processing"
            render = store.rendering(prediction_id)
            assert render is not None
            await render

        asyncio.run(scenario())
        snapshot = store.snapshot(prediction_id)
        assert ([f.name for f in snapshot.files], snapshot.status) == (["out-0.png"], "succeeded")
        assert store.file(prediction_id, "out-0.png") is not None


def test_a_prediction_of_a_live_sandbox_is_left_to_it(
    tmp_path: Path, orphaned: tuple[Store, str, FakeClock]
) -> None:
    _, prediction_id, clock = orphaned
    clock.now += 5
    with open_store(tmp_path, clock) as store:

        async def scenario() -> None:
            assert store.snapshot(prediction_id).status == "processing"
            assert store.rendering(prediction_id) is None

        asyncio.run(scenario())


def test_a_killed_sandbox_s_predictions_end_as_they_would_have(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "kkiai_pipeline.sandbox.cli", "--port=0", "--store", str(tmp_path)]
    server = subprocess.Popen(
        [*command, "--queue-seconds=0", "--predict-seconds=0.2"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        match = re.search(r"(http://\S+)", server.stdout.readline())
        assert match is not None
        with httpx.Client(base_url=match[1], headers=AUTH, trust_env=False, timeout=30) as client:
            made = [create(client, SDXL, width=512, height=512, prompt=f"lamp {i}") for i in range(4)]
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()
    with serve_in_thread(SandboxConfig(store=str(tmp_path))) as later, client_of(later) as client:
        for prediction_id in made:
            body = finished(client, prediction_id)
            assert (body["status"], body["error"]) == ("succeeded", None)
            assert httpx.get(body["output"][0], trust_env=False).status_code == 200


def test_the_default_store_is_in_the_cache_directory(private_cache: Path) -> None:
    with serve_in_thread(SandboxConfig(**QUICK)) as sandbox:
        assert sandbox.store == str(private_cache)
    assert (private_cache / FILENAME).is_file()


@pytest.mark.parametrize(
    ("environ", "store"),
    [
        ({"XDG_CACHE_HOME": "/x/cache", "HOME": "/home/u"}, "/x/cache/kkiai-pipeline/sandbox"),
        ({"XDG_CACHE_HOME": "relative", "HOME": "/home/u"}, "/home/u/.cache/kkiai-pipeline/sandbox"),
        ({"HOME": "/home/u"}, "/home/u/.cache/kkiai-pipeline/sandbox"),
    ],
)
def test_default_store(environ: dict[str, str], store: str) -> None:
    assert default_store(environ) == store
    assert with_default_store(SandboxConfig(), environ).store == store
    assert with_default_store(SandboxConfig(store="/given"), environ).store == "/given"


def test_a_store_that_cannot_be_opened(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match=f"cannot open the sandbox store {blocker / FILENAME}: "):
        Database(blocker, models=default_catalog().find)


def test_a_store_from_a_newer_sandbox_is_refused(tmp_path: Path) -> None:
    Database(tmp_path, models=default_catalog().find).close()
    with sqlite3.connect(tmp_path / FILENAME) as db:
        db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match=r"was made by a newer kkiai-pipeline \(schema 99\)"):
        Database(tmp_path, models=default_catalog().find)


def test_file_ttl_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="file_ttl must not be negative, not -1"):
        SandboxConfig(file_ttl=-1)


def test_concurrent_writers_do_not_lose_predictions(tmp_path: Path) -> None:
    """Many threads, each with its own store on one file, create at once: every record is kept."""
    clock = FakeClock()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with open_store(tmp_path, clock) as store:

                async def scenario() -> None:
                    model = default_catalog().resolve("stability-ai/stable-diffusion")
                    for i in range(25):
                        store.create(model, TINY, files={}, planned_error=f"E1000 {i}")

                asyncio.run(scenario())
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    database = Database(tmp_path, models=default_catalog().find)
    try:
        page, _ = database.page(limit=1000)
    finally:
        database.close()
    assert len({p.id for p in page}) == 150

"""httpx over aiohttp's pool: failures keep httpx's meaning, so a create is never retried after it
may have been received; limits and given transports are kept."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from kkiai_pipeline.api.client import ClientOptions, PredictionsClient
from kkiai_pipeline.api.transport import AiohttpTransport, HttpClient
from kkiai_pipeline.errors import AmbiguousCreateError
from tests.fakes.fake_api import TOKEN, FakeApi

SDXL = "stability-ai/sdxl:7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"


def _fetch(url: str, **options: object) -> httpx.Response:
    async def go() -> httpx.Response:
        async with HttpClient(**options) as client:  # type: ignore[arg-type]
            return await client.get(url)

    return asyncio.run(go())


@pytest.fixture
def silent_server() -> Iterator[tuple[str, threading.Event]]:
    """A server that reads a request, then closes without answering (``dropped``) or says nothing."""
    listener = socket.create_server(("127.0.0.1", 0))
    drop = threading.Event()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            if drop.is_set():
                conn.close()
            else:
                stop.wait(5)
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/", drop
    stop.set()
    thread.join()
    listener.close()


def test_the_default_transport_is_aiohttp_and_a_given_one_is_kept() -> None:
    async def go() -> None:
        async with HttpClient() as client:
            assert isinstance(client._transport, AiohttpTransport)
        mock = httpx.MockTransport(lambda request: httpx.Response(204))
        async with HttpClient(transport=mock) as client:
            assert client._transport is mock
            assert (await client.get("http://127.0.0.1:9/")).status_code == 204

    asyncio.run(go())


def test_an_answer_comes_through_whole() -> None:
    with FakeApi() as fake:
        response = _fetch(f"{fake.base_url}/predictions", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.json()["results"] == []
    assert response.request.url.path == "/v1/predictions"


def test_a_refused_connection_is_connect_error_with_its_request() -> None:
    with pytest.raises(httpx.ConnectError) as caught:
        _fetch("http://127.0.0.1:9/")  # the discard port: nothing listens
    assert caught.value.request.url.port == 9


def test_a_connection_dropped_after_sending_is_not_read_as_never_sent(
    silent_server: tuple[str, threading.Event],
) -> None:
    url, drop = silent_server
    drop.set()
    with pytest.raises(httpx.TransportError) as caught:
        _fetch(url)
    assert not isinstance(caught.value, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    assert caught.value.request.url == url


def test_a_read_timeout_is_read_timeout(silent_server: tuple[str, threading.Event]) -> None:
    url, _ = silent_server
    with pytest.raises(httpx.ReadTimeout):
        _fetch(url, timeout=httpx.Timeout(0.3, connect=2))


def test_a_create_dropped_after_sending_is_ambiguous_and_paid_once() -> None:
    """httpx-aiohttp alone reads this drop as a connect timeout, and the create was paid twice."""
    options = ClientOptions(create_rate_per_minute=0, other_rate_per_minute=0, backoff_base=0.01)
    with FakeApi() as fake:
        fake.knobs.creates_dropped = 1

        async def go() -> None:
            async with PredictionsClient(base_url=fake.base_url, token=TOKEN, options=options) as client:
                await client.create(SDXL, {"prompt": "a mug"})

        with pytest.raises(AmbiguousCreateError):
            asyncio.run(go())
        assert fake.counters.creates == 1


def test_no_connection_limit_unless_asked() -> None:
    async def go() -> tuple[int, int]:
        unlimited = AiohttpTransport(limits=httpx.Limits(max_connections=None))
        limited = AiohttpTransport(limits=httpx.Limits(max_connections=7))
        sessions = unlimited._session(), limited._session()
        limits = sessions[0].connector.limit, sessions[1].connector.limit  # type: ignore[union-attr]
        for session in sessions:
            await session.close()
        return limits

    assert asyncio.run(go()) == (0, 7)  # 0: aiohttp's "no limit" (its default would be 100)

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from kkiai_pipeline.api.retries import RetryPolicy
from kkiai_pipeline.artifacts import (
    Artifact,
    Downloader,
    decode_data_uri,
    describe_url,
    extension_for,
    verify,
)
from kkiai_pipeline.errors import DownloadError

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 200_000
URL = "https://files.example/o.png"
Handler = Callable[[httpx.Request], httpx.Response]


class Sleeps:
    """Records the downloader's pauses (never really sleeps) and what the folder held meanwhile."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seconds: list[float] = []
        self.folder_during: list[list[str]] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.folder_during.append(sorted(p.name for p in self.folder.iterdir()))


def make_downloader(tmp_path: Path, handler: Handler | None = None, **kwargs: Any) -> Downloader:
    transport = httpx.MockTransport(handler) if handler else None
    options: dict[str, Any] = {"sleep": Sleeps(tmp_path / "steps" / "gen"), "jitter": lambda: 0.5, **kwargs}
    return Downloader(run_dir=tmp_path, transport=transport, **options)


def fetch(downloader: Downloader, url: str = URL) -> Artifact:
    async def main() -> Artifact:
        try:
            return await downloader.download(
                url, folder=downloader.run_dir / "steps" / "gen", stem="output_0"
            )
        finally:
            await downloader.aclose()

    return asyncio.run(main())


def download(tmp_path: Path, url: str, handler: Handler | None = None, **kwargs: Any) -> Artifact:
    return fetch(make_downloader(tmp_path, handler, **kwargs), url)


def stored(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "steps" / "gen").iterdir())


class Chunks(httpx.AsyncByteStream):
    """A response body sent in pieces, optionally broken off with ``fault`` after them."""

    def __init__(self, *chunks: bytes, fault: httpx.TransportError | None = None) -> None:
        self.chunks = chunks
        self.fault = fault

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.fault is not None:
            raise self.fault


def test_streamed_download_is_hashed_and_named_from_the_content_type(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})

    art = download(tmp_path, "https://files.example/../../etc/passwd?x=1", handler)
    assert art == Artifact(
        path="steps/gen/output_0.png",
        url="https://files.example/../../etc/passwd?x=1",
        sha256=hashlib.sha256(PNG).hexdigest(),
        bytes=len(PNG),
        content_type="image/png",
    )
    assert (tmp_path / art.path).read_bytes() == PNG
    assert "authorization" not in seen[0].headers
    assert stored(tmp_path) == ["output_0.png"]  # no temp file left


def test_data_uri_is_decoded_locally(tmp_path: Path) -> None:
    uri = "data:image/webp;base64," + base64.b64encode(b"RIFFdata").decode()
    art = download(tmp_path, uri)
    assert art.path == "steps/gen/output_0.webp"
    assert (tmp_path / art.path).read_bytes() == b"RIFFdata"
    assert art.url == f"data:image/webp;base64,… ({len(uri)} chars)"


def test_failed_download_leaves_nothing_behind_and_is_not_retried(tmp_path: Path) -> None:
    downloader = make_downloader(tmp_path, lambda r: httpx.Response(404, text="gone"))
    with pytest.raises(DownloadError, match=r"^GET https://files\.example/o\.png answered 404$"):
        fetch(downloader)
    assert stored(tmp_path) == []
    assert downloader.stats.requests == 1


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://x/y.png", "/tmp/x.png"])
def test_only_http_and_data_urls(tmp_path: Path, url: str) -> None:
    with pytest.raises(DownloadError, match="only http"):
        download(tmp_path, url)


def test_retried_after_a_503(tmp_path: Path) -> None:
    answers = [httpx.Response(503, headers={"Retry-After": "2"}), httpx.Response(503)]

    def handler(request: httpx.Request) -> httpx.Response:
        return (
            answers.pop(0)
            if answers
            else httpx.Response(200, content=PNG, headers={"content-type": "image/png"})
        )

    sleeps = Sleeps(tmp_path / "steps" / "gen")
    downloader = make_downloader(tmp_path, handler, sleep=sleeps)
    art = fetch(downloader)
    assert (tmp_path / art.path).read_bytes() == PNG
    assert sleeps.seconds == [2.0, 0.5]
    assert downloader.stats.retries == {"503": 2}
    assert downloader.stats.requests == 3
    assert (downloader.stats.downloads, downloader.stats.bytes) == (1, len(PNG))


def test_a_stream_dropped_mid_body_restarts_from_scratch(tmp_path: Path) -> None:
    attempts = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        if len(attempts) == 1:
            dropped = Chunks(PNG[:70_000], fault=httpx.ReadError("connection reset by peer"))
            return httpx.Response(200, stream=dropped, headers={"content-type": "image/png"})
        return httpx.Response(
            200, stream=Chunks(PNG[:100_000], PNG[100_000:]), headers={"content-type": "image/png"}
        )

    sleeps = Sleeps(tmp_path / "steps" / "gen")
    downloader = make_downloader(tmp_path, handler, sleep=sleeps)
    art = fetch(downloader)
    assert (tmp_path / art.path).read_bytes() == PNG
    assert art.sha256 == hashlib.sha256(PNG).hexdigest()
    assert art.bytes == len(PNG)
    assert sleeps.folder_during == [[]]  # the partial file was gone before the retry
    assert stored(tmp_path) == ["output_0.png"]
    assert downloader.stats.retries == {"ReadError": 1}


def test_gives_up_after_max_attempts(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    downloader = make_downloader(tmp_path, handler, retry=RetryPolicy(max_attempts=3))
    with pytest.raises(DownloadError) as caught:
        fetch(downloader)
    assert str(caught.value) == f"cannot download {URL}: connection refused (gave up after 3 attempts)"
    assert caught.value.url == URL
    assert downloader.stats.requests == 3
    assert stored(tmp_path) == []


def test_redirects_are_followed_without_credentials(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "files.example":
            return httpx.Response(302, headers={"Location": "https://cdn.example/o.png"})
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})

    art = download(tmp_path, URL, handler)
    assert (tmp_path / art.path).read_bytes() == PNG
    assert [r.url.host for r in seen] == ["files.example", "cdn.example"]
    assert all("authorization" not in r.headers for r in seen)


def test_size_cap_from_content_length(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})

    downloader = make_downloader(tmp_path, handler, max_bytes=1000)
    with pytest.raises(DownloadError) as caught:
        fetch(downloader)
    assert str(caught.value) == (
        f"refusing to download: {URL} is {len(PNG)} bytes, over the download limit of 1000 bytes "
        "(max_bytes); nothing was kept"
    )
    assert stored(tmp_path) == []
    assert downloader.stats.requests == 1  # not retried


def test_size_cap_on_the_streamed_total(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # no Content-Length: only the running total can tell
        return httpx.Response(200, stream=Chunks(*[b"x" * 400] * 5), headers={"content-type": "image/png"})

    downloader = make_downloader(tmp_path, handler, max_bytes=1000)
    with pytest.raises(DownloadError) as caught:
        fetch(downloader)
    assert str(caught.value) == (
        f"refusing to download: {URL} sent more than the download limit of 1000 bytes (max_bytes); nothing was kept"
    )
    assert stored(tmp_path) == []
    assert downloader.stats.requests == 1


def test_size_cap_on_data_uris(tmp_path: Path) -> None:
    uri = "data:image/png;base64," + base64.b64encode(b"x" * 2000).decode()
    with pytest.raises(
        DownloadError, match=r"^refusing to download: data:image/png;base64,… \(2690 chars\) is 2000 bytes"
    ):
        download(tmp_path, uri, max_bytes=1000)
    assert stored(tmp_path) == []


def test_max_bytes_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes must be at least 1, not 0"):
        Downloader(run_dir=tmp_path, max_bytes=0)


def test_verify(tmp_path: Path) -> None:
    path = tmp_path / "o.png"
    path.write_bytes(PNG)
    digest = hashlib.sha256(PNG).hexdigest()
    assert verify(path, digest)
    assert verify(path, digest.upper())
    assert not verify(path, hashlib.sha256(b"other").hexdigest())
    assert not verify(tmp_path / "missing.png", digest)
    assert not verify(tmp_path, digest)  # a directory
    path.write_bytes(PNG[:-1])
    assert not verify(path, digest)


def test_data_uri_decoding() -> None:
    assert decode_data_uri("data:text/plain,hello%20world") == ("text/plain", b"hello world")
    with pytest.raises(DownloadError, match="malformed"):
        decode_data_uri("data:image/png;base64")


@pytest.mark.parametrize(
    ("content_type", "ext"),
    [
        ("image/png", ".png"),
        ("image/jpeg; charset=x", ".jpg"),
        ("video/mp4", ".mp4"),
        ("weird/thing", ".bin"),
    ],
)
def test_extensions(content_type: str, ext: str) -> None:
    assert extension_for(content_type) == ext


def test_describe_url_keeps_http_urls() -> None:
    assert describe_url("https://a/b.png") == "https://a/b.png"

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
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
    webp = b"RIFF\x10\x00\x00\x00WEBPVP8 data"
    uri = "data:image/webp;base64," + base64.b64encode(webp).decode()
    art = download(tmp_path, uri)
    assert art.path == "steps/gen/output_0.webp"
    assert (tmp_path / art.path).read_bytes() == webp
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


# -- distrusting the file host ------------------------------------------------------------------------

WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"w" * 40
MP4 = b"\x00\x00\x00\x18ftypisom" + b"m" * 40


@pytest.mark.parametrize(
    ("body", "declared", "content_type", "name"),
    [
        (PNG, "text/plain", "image/png", "output_0.png"),
        (WEBP, "application/octet-stream", "image/webp", "output_0.webp"),
        (MP4, "image/png", "video/mp4", "output_0.mp4"),
        (b"GIF89a" + b"g" * 20, "", "image/gif", "output_0.gif"),
        (b"\xff\xd8\xff\xe0" + b"j" * 20, "image/jpeg", "image/jpeg", "output_0.jpg"),
        (b"\x1a\x45\xdf\xa3" + b"v" * 20, "video/webm", "video/webm", "output_0.webm"),
        (b"<html><script>alert(1)</script>", "text/html", "application/octet-stream", "output_0.bin"),
        (b"#!/bin/sh\nrm -rf ~\n", "application/x-sh", "application/octet-stream", "output_0.bin"),
        (b"<svg onload=alert(1)>", "image/svg+xml", "application/octet-stream", "output_0.bin"),
        (b"", "image/png", "application/octet-stream", "output_0.bin"),
    ],
)
def test_the_type_is_sniffed_from_the_content_never_taken_from_the_server(
    tmp_path: Path, body: bytes, declared: str, content_type: str, name: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": declared})

    art = download(tmp_path, URL, handler)
    assert (art.content_type, art.path) == (content_type, f"steps/gen/{name}")
    assert stored(tmp_path) == [name]


def test_extensions_come_only_from_the_allow_list() -> None:
    assert [extension_for(t) for t in ("text/html", "application/x-sh", "image/svg+xml", "image/avif")] == [
        ".bin",
        ".bin",
        ".bin",
        ".avif",
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "refusing to download 'file:///etc/passwd': its scheme is 'file:'; only"),
        (
            "javascript:alert(1)",
            "refusing to download 'javascript:alert(1)': its scheme is 'javascript:'; only",
        ),
        ("https://x/a\nINFO forged", "refusing to download 'https://x/a INFO forged': the URL holds control"),
        ("https://x/a\x1b[2J", "refusing to download 'https://x/a': the URL holds control characters"),
        ("https://x/a b", "refusing to download 'https://x/a b': the URL holds control characters or spaces"),
        ("https:///nohost", "refusing to download 'https:///nohost': the URL names no host"),
        ("http://[::1/x", "refusing to download 'http://[::1/x': not a valid URL"),
        ("https://x/" + "a" * 9000, "refusing to download a URL of 9010 characters (at most 8192)"),
    ],
)
def test_malformed_urls_are_refused_before_anything_is_sent(tmp_path: Path, url: str, message: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"sent {request.url}")

    with pytest.raises(DownloadError) as caught:
        download(tmp_path, url, handler)
    assert str(caught.value).startswith(message)
    assert "\x1b" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "addresses", "shown"),
    [
        ("http://127.0.0.1/o.png", [], "127.0.0.1"),
        ("http://[::1]/o.png", [], "::1"),
        ("http://localhost/o.png", [], "localhost"),
        ("http://169.254.169.254/latest/meta-data/", [], "169.254.169.254"),
        ("http://[::ffff:10.0.0.1]/o.png", [], "::ffff:10.0.0.1"),
        ("http://2130706433/o.png", ["127.0.0.1"], "127.0.0.1"),  # a decimal IP, as resolvers read it
        ("https://files.internal/o.png", ["93.184.216.34", "10.1.2.3"], "10.1.2.3"),
    ],
)
def test_private_addresses_are_refused_unless_allowed(
    tmp_path: Path, url: str, addresses: list[str], shown: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=PNG)

    async def resolve(host: str, port: int) -> list[str]:
        return addresses

    downloader = make_downloader(tmp_path, handler, resolve=resolve)

    async def main() -> Artifact:
        try:
            return await downloader.download(
                url, folder=tmp_path / "steps" / "gen", stem="output_0", allow_private=False
            )
        finally:
            await downloader.aclose()

    with pytest.raises(DownloadError, match=f"is a loopback or private address \\({re.escape(shown)}\\)"):
        asyncio.run(main())
    assert downloader.stats.requests == 1  # the attempt, refused before the request
    assert download(tmp_path, url, handler, resolve=resolve).bytes == len(PNG)  # allowed by default


def test_every_redirect_hop_is_checked(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    async def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    downloader = make_downloader(tmp_path, handler, resolve=resolve)

    async def main() -> Artifact:
        try:
            return await downloader.download(
                URL, folder=tmp_path / "steps" / "gen", stem="o", allow_private=False
            )
        finally:
            await downloader.aclose()

    with pytest.raises(DownloadError, match=r"its host 169\.254\.169\.254 is a loopback or private address"):
        asyncio.run(main())
    assert seen == [URL]


def test_redirects_to_other_schemes_and_loops_end(tmp_path: Path) -> None:
    def to_file(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "file:///etc/passwd"})

    def loop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": str(request.url)})

    with pytest.raises(DownloadError, match=r"redirects to 'file://files.example/etc/passwd': its scheme is"):
        download(tmp_path, URL, to_file)
    with pytest.raises(
        DownloadError, match=r"^cannot download https://files.example/o.png: more than 5 redirects$"
    ):
        download(tmp_path, URL, loop)


def test_a_drip_feed_ends_at_the_deadline_and_leaves_nothing(tmp_path: Path) -> None:
    class Drip(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for byte in PNG[:1000]:
                await asyncio.sleep(0.05)
                yield bytes([byte])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Drip())

    downloader = make_downloader(tmp_path, handler)

    async def main() -> Artifact:
        try:
            deadline = time.monotonic() + 0.3
            return await downloader.download(
                URL, folder=tmp_path / "steps" / "gen", stem="o", deadline=deadline
            )
        finally:
            await downloader.aclose()

    with pytest.raises(DownloadError, match=r"when the time for the step's downloads ran out"):
        asyncio.run(main())
    assert stored(tmp_path) == []


def test_downloads_in_flight_are_capped_process_wide(tmp_path: Path) -> None:
    now = {"in_flight": 0, "most": 0}

    class Slow(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            now["in_flight"] += 1
            now["most"] = max(now["most"], now["in_flight"])
            await asyncio.sleep(0.02)
            now["in_flight"] -= 1
            yield PNG[:100]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Slow())

    first, second = make_downloader(tmp_path, handler), make_downloader(tmp_path, handler)

    async def main() -> None:
        folder = tmp_path / "steps" / "gen"
        jobs = [
            d.download(f"{URL}?{i}", folder=folder, stem=f"o{i}", in_flight=3)
            for i in range(10)
            for d in (first, second)
        ]
        await asyncio.gather(*jobs)
        await first.aclose()
        await second.aclose()

    asyncio.run(main())
    assert now["most"] == 3


def test_describe_url_cleans_and_shortens() -> None:
    assert describe_url("DATA:image/png;base64," + "A" * 100) == "DATA:image/png;base64,… (122 chars)"
    assert describe_url("https://x/\x1b[31ma\nb") == "https://x/a b"
    assert describe_url("https://x/" + "a" * 5000).endswith("a…")

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

import httpx
import pytest

from kkiai_pipeline.artifacts import Artifact, Downloader, decode_data_uri, describe_url, extension_for
from kkiai_pipeline.errors import DownloadError

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 200_000


def download(tmp_path: Path, url: str, handler: httpx.MockTransport | None = None) -> Artifact:
    async def main() -> Artifact:
        downloader = Downloader(run_dir=tmp_path, transport=handler)
        try:
            return await downloader.download(url, folder=tmp_path / "steps" / "gen", stem="output_0")
        finally:
            await downloader.aclose()

    return asyncio.run(main())


def test_streamed_download_is_hashed_and_named_from_the_content_type(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})

    art = download(tmp_path, "https://files.example/../../etc/passwd?x=1", httpx.MockTransport(handler))
    assert art == Artifact(
        path="steps/gen/output_0.png",
        url="https://files.example/../../etc/passwd?x=1",
        sha256=hashlib.sha256(PNG).hexdigest(),
        bytes=len(PNG),
        content_type="image/png",
    )
    assert (tmp_path / art.path).read_bytes() == PNG
    assert "authorization" not in seen[0].headers
    assert [p.name for p in (tmp_path / "steps" / "gen").iterdir()] == ["output_0.png"]  # no temp file left


def test_data_uri_is_decoded_locally(tmp_path: Path) -> None:
    uri = "data:image/webp;base64," + base64.b64encode(b"RIFFdata").decode()
    art = download(tmp_path, uri)
    assert art.path == "steps/gen/output_0.webp"
    assert (tmp_path / art.path).read_bytes() == b"RIFFdata"
    assert art.url == f"data:image/webp;base64,… ({len(uri)} chars)"


def test_failed_download_leaves_nothing_behind(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="gone")

    with pytest.raises(DownloadError, match="answered 404"):
        download(tmp_path, "https://files.example/o.png", httpx.MockTransport(handler))
    assert list((tmp_path / "steps" / "gen").iterdir()) == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://x/y.png", "/tmp/x.png"])
def test_only_http_and_data_urls(tmp_path: Path, url: str) -> None:
    with pytest.raises(DownloadError, match="only http"):
        download(tmp_path, url)


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

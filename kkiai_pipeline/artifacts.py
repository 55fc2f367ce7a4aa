"""Output files: streamed to disk, written atomically, hashed.

Downloads go through their own httpx client, which carries no Authorization header: output URLs point at
file hosts, and the API token must never travel to them. ``data:`` URIs are decoded locally. File names
come from the output's position and content type, never from the URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote_to_bytes

import httpx

from .errors import DownloadError

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "application/octet-stream": ".bin",
}
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Artifact:
    """One stored output file; ``path`` is relative to the run directory."""

    path: str
    url: str
    sha256: str
    bytes: int
    content_type: str


def extension_for(content_type: str) -> str:
    """A file extension for a MIME type (``.bin`` when unknown)."""
    mime = content_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(mime) or mimetypes.guess_extension(mime) or ".bin"


def describe_url(url: str) -> str:
    """The URL as it may be recorded: a data: URI is shortened to its media type and size."""
    if url.startswith("data:"):
        head = url[: url.find(",")] if "," in url else url[:40]
        return f"{head},… ({len(url)} chars)"
    return url


class Downloader:
    """Stores output files under a run directory."""

    def __init__(self, *, run_dir: Path, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.run_dir = run_dir
        self._http = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(60.0, connect=10.0))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def download(self, url: str, *, folder: Path, stem: str) -> Artifact:
        """Fetch ``url`` into ``folder/<stem><ext>`` atomically and return what was stored."""
        folder.mkdir(parents=True, exist_ok=True)
        if url.startswith("data:"):
            content_type, payload = decode_data_uri(url)
            target = folder / f"{stem}{extension_for(content_type)}"
            with _atomic_file(target) as out:
                out.write(payload)
            return self._artifact(target, url, out.sha256, out.size, content_type)
        if not url.lower().startswith(("http://", "https://")):
            raise DownloadError(
                f"refusing to download '{describe_url(url)}': only http(s) and data: URLs", url=url
            )
        return await self._fetch(url, folder=folder, stem=stem)

    async def _fetch(self, url: str, *, folder: Path, stem: str) -> Artifact:
        try:
            async with self._http.stream("GET", url) as response:
                if response.is_error:
                    raise DownloadError(f"GET {url} answered {response.status_code}", url=url)
                content_type = response.headers.get("content-type", "application/octet-stream")
                target = folder / f"{stem}{extension_for(content_type)}"
                with _atomic_file(target) as out:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise DownloadError(f"cannot download {url}: {exc}", url=url) from exc
        return self._artifact(target, url, out.sha256, out.size, content_type.split(";", 1)[0].strip())

    def _artifact(self, target: Path, url: str, digest: str, size: int, content_type: str) -> Artifact:
        relative = target.relative_to(self.run_dir).as_posix()
        return Artifact(relative, describe_url(url), digest, size, content_type)


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """(media type, bytes) of a ``data:`` URI; raises DownloadError when malformed."""
    header, sep, data = uri[5:].partition(",")
    if not sep:
        raise DownloadError("malformed data: URI (no comma)", url=describe_url(uri))
    parts = header.split(";")
    content_type = parts[0] or "text/plain"
    try:
        payload = base64.b64decode(data, validate=True) if "base64" in parts[1:] else unquote_to_bytes(data)
    except binascii.Error as exc:
        raise DownloadError(f"malformed base64 in data: URI: {exc}", url=describe_url(uri)) from exc
    return content_type, payload


class _HashingFile:
    """A file being written that keeps its sha256 and size as it goes."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.size += len(chunk)
        self._handle.write(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


@contextmanager
def _atomic_file(target: Path) -> Iterator[_HashingFile]:
    """Write to a temporary file beside ``target``; it becomes ``target`` only if all went well."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield _HashingFile(handle)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

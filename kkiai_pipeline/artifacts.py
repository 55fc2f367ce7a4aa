"""Output files: streamed to disk, written atomically, hashed, size-capped, retried.

Downloads go through their own httpx client, which carries no Authorization header: output URLs point at
file hosts, and the API token must never travel to them. ``data:`` URIs are decoded locally. File names
come from the output's position and content type, never from the URL.

A download that fails with a 429, a 5xx, a dropped connection or a timeout is retried from scratch with
the API client's backoff policy (:mod:`.api.retries`); a partial file is never left behind, on any
failure. Files larger than ``max_bytes`` are refused: up front when ``Content-Length`` says so, and
otherwise as soon as the running total passes it. Downloads are not API calls and are not rate-limited.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import mimetypes
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote_to_bytes

import httpx

from .api.retries import RetryPolicy, Verdict, exception_verdict, server_delay, status_verdict
from .errors import DownloadError

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 200 * 1024 * 1024  # far above any image; a video model's output still fits
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


@dataclass
class DownloadStats:
    """Counters for benchmarks and tests."""

    downloads: int = 0  # files stored
    requests: int = 0  # HTTP attempts, retries included
    retries: dict[str, int] = field(default_factory=dict)  # by reason: "503", "ReadError" ...
    retry_wait_seconds: float = 0.0
    bytes: int = 0  # bytes of the files stored

    @property
    def total_retries(self) -> int:
        return sum(self.retries.values())

    def note_retry(self, reason: str, delay: float) -> None:
        self.retries[reason] = self.retries.get(reason, 0) + 1
        self.retry_wait_seconds += delay


class _Retryable(Exception):
    """One attempt failed in a way another may not; ``message`` is the error if none is left."""

    def __init__(self, message: str, *, reason: str, hint: float | None = None) -> None:
        self.message = message
        self.reason = reason
        self.hint = hint
        super().__init__(message)


def download_client(*, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """An HTTP client for output files, which several Downloaders (a sweep's jobs) may share.

    Redirects are safe to follow: it carries no credentials to leak, and httpx refuses schemes other
    than http(s).
    """
    timeout = httpx.Timeout(60.0, connect=10.0)
    limits = httpx.Limits(max_keepalive_connections=100, keepalive_expiry=4.0)  # under servers' usual 5 s
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=True, limits=limits)


class Downloader:
    """Stores output files under a run directory.

    ``max_bytes`` caps each file; ``retry`` is the backoff policy (the API client's
    ``ClientOptions.retry_policy()`` fits); ``http`` is a shared client from :func:`download_client`
    (else it makes its own); ``sleep`` and ``jitter`` are for tests.
    """

    def __init__(
        self,
        *,
        run_dir: Path,
        transport: httpx.AsyncBaseTransport | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        self.run_dir = run_dir
        self.max_bytes = max_bytes
        self.retry = retry or RetryPolicy()
        self.stats = DownloadStats()
        self._sleep, self._jitter = sleep, jitter
        self._owns_http = http is None
        self._http = http or download_client(transport=transport)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def download(self, url: str, *, folder: Path, stem: str) -> Artifact:
        """Fetch ``url`` into ``folder/<stem><ext>`` atomically and return what was stored."""
        folder.mkdir(parents=True, exist_ok=True)
        if url.startswith("data:"):
            artifact = self._store_data_uri(url, folder=folder, stem=stem)
        elif url.lower().startswith(("http://", "https://")):
            artifact = await self._fetch(url, folder=folder, stem=stem)
        else:
            raise DownloadError(
                f"refusing to download '{describe_url(url)}': only http(s) and data: URLs", url=url
            )
        self.stats.downloads += 1
        self.stats.bytes += artifact.bytes
        return artifact

    def _store_data_uri(self, url: str, *, folder: Path, stem: str) -> Artifact:
        content_type, payload = decode_data_uri(url)
        self._check_size(len(payload), describe_url(url), announced=True)
        target = folder / f"{stem}{extension_for(content_type)}"
        with _atomic_file(target) as out:
            out.write(payload)
        return self._artifact(target, url, out.sha256, out.size, content_type)

    async def _fetch(self, url: str, *, folder: Path, stem: str) -> Artifact:
        """Fetch with retries; every attempt starts from scratch."""
        attempt = 1
        while True:
            try:
                return await self._fetch_once(url, folder=folder, stem=stem)
            except _Retryable as failure:
                if attempt >= self.retry.max_attempts:
                    gave_up = f" (gave up after {attempt} attempts)" if attempt > 1 else ""
                    raise DownloadError(failure.message + gave_up, url=url) from failure
                delay = self.retry.delay(attempt, hint=failure.hint, random=self._jitter)
                self.stats.note_retry(failure.reason, delay)
                log.info("GET %s: %s; retry %d in %.2f s", url, failure.reason, attempt, delay)
                await self._sleep(delay)
                attempt += 1

    async def _fetch_once(self, url: str, *, folder: Path, stem: str) -> Artifact:
        self.stats.requests += 1
        try:
            async with self._http.stream("GET", url) as response:
                self._check_response(response, url)
                content_type = response.headers.get("content-type", "application/octet-stream")
                target = folder / f"{stem}{extension_for(content_type)}"
                with _atomic_file(target) as out:
                    async for chunk in response.aiter_bytes(_CHUNK):
                        out.write(chunk)
                        self._check_size(out.size, url)
        except httpx.TransportError as exc:
            message = f"cannot download {url}: {exc or type(exc).__name__}"
            if exception_verdict(exc, create=False) is Verdict.RETRY:
                raise _Retryable(message, reason=type(exc).__name__) from exc
            raise DownloadError(message, url=url) from exc
        except httpx.HTTPError as exc:  # not transport: a bad encoding, too many redirects
            raise DownloadError(f"cannot download {url}: {exc}", url=url) from exc
        return self._artifact(target, url, out.sha256, out.size, content_type.split(";", 1)[0].strip())

    def _check_response(self, response: httpx.Response, url: str) -> None:
        """Raise unless ``response`` is a success of acceptable size (_Retryable when worth another try)."""
        status = response.status_code
        if not response.is_success:
            message = f"GET {url} answered {status}"
            if status_verdict(status, create=False) is Verdict.RETRY:
                hint = server_delay(status, response.headers, None, now=time.time())
                raise _Retryable(message, reason=str(status), hint=hint)
            raise DownloadError(message, url=url)
        length = _content_length(response)
        if length is not None:
            self._check_size(length, url, announced=True)

    def _check_size(self, size: int, url: str, *, announced: bool = False) -> None:
        if size <= self.max_bytes:
            return
        if announced:
            what = f"{url} is {size} bytes, over the download limit of {self.max_bytes} bytes"
        else:
            what = f"{url} sent more than the download limit of {self.max_bytes} bytes"
        raise DownloadError(f"refusing to download: {what} (max_bytes); nothing was kept", url=url)

    def _artifact(self, target: Path, url: str, digest: str, size: int, content_type: str) -> Artifact:
        relative = target.relative_to(self.run_dir).as_posix()
        return Artifact(relative, describe_url(url), digest, size, content_type)


def verify(path: Path, sha256: str) -> bool:
    """Whether ``path`` is a readable file whose content hashes to ``sha256`` (an artifact, on resume)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError:  # missing, a directory, unreadable: not the artifact either way
        return False
    return digest.hexdigest() == sha256.lower()


def _content_length(response: httpx.Response) -> int | None:
    """The announced body size, or None (absent or garbled: the running total still guards)."""
    try:
        return int(response.headers["content-length"])
    except (KeyError, ValueError):
        return None


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

"""Output files: streamed to disk, written atomically, hashed, size-capped, time-capped, retried.

Downloads go through their own httpx client, which carries no Authorization header: output URLs point at
file hosts, and the API token must never travel to them. ``data:`` URIs are decoded locally. File names
come from the output's position and from the type sniffed from the file's first bytes, never from the
URL nor from the server's Content-Type: only the types of :data:`EXTENSIONS` keep theirs, anything else
is stored as ``.bin`` (``application/octet-stream``), so a server cannot make us write ``.html`` or
``.sh`` files.

URLs are checked before anything is sent: http(s) only, no control characters, and, unless allowed,
no loopback, private or link-local address (the host is resolved; redirects are followed by hand and
every hop is checked), so an output URL cannot make us fetch from inside the network. Downloads in
flight are capped process-wide, and a caller's ``deadline`` bounds each download's total time, so a
trickling server cannot hold a step past its timeout.

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
import ipaddress
import logging
import os
import random
import socket
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote_to_bytes

import httpx

from .api.errors import clean_text
from .api.retries import RetryPolicy, Verdict, exception_verdict, server_delay, status_verdict
from .api.transport import HttpClient
from .errors import DownloadError

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 200 * 1024 * 1024  # far above any image; a video model's output still fits
DEFAULT_IN_FLIGHT = 16  # downloads at once in the process, unless the caller says otherwise
MAX_REDIRECTS = 5
MAX_URL_CHARS = 8192  # for http(s) URLs; data: URIs are bounded by the answer's size
OCTET_STREAM = "application/octet-stream"
#: The file types we store under their own extension; anything else is ``.bin``.
EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/avif": ".avif",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    OCTET_STREAM: ".bin",
}
_CHUNK = 1 << 16
_HEAD = 32  # bytes kept to sniff the type from

Resolve = Callable[[str, int], Awaitable[Sequence[str]]]
T = TypeVar("T")


@dataclass(frozen=True)
class Artifact:
    """One stored output file; ``path`` is relative to the run directory."""

    path: str
    url: str
    sha256: str
    bytes: int
    content_type: str


def extension_for(content_type: str) -> str:
    """The file extension for a MIME type of the allow-list :data:`EXTENSIONS`, else ``.bin``."""
    mime = content_type.split(";", 1)[0].strip().lower()
    return EXTENSIONS.get(mime, ".bin")


def sniff(head: bytes) -> str:
    """The MIME type of a file from its first bytes (magic numbers), ``application/octet-stream`` if
    it is none of the types we know."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "image/avif" if head[8:12] in (b"avif", b"avis") else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return OCTET_STREAM


def describe_url(url: str) -> str:
    """The URL as it may be recorded or shown: a data: URI shortened to its media type and size,
    anything else cleaned of control characters and cut to a sane length."""
    if url[:5].lower() == "data:":
        head = url[: min(url.find(","), 100)] if "," in url else url[:40]
        return f"{clean_text(head, limit=100)},… ({len(url)} chars)"
    return clean_text(url, limit=2000)


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

    It carries no credentials to leak. The Downloader follows redirects itself, checking each hop.
    """
    timeout = httpx.Timeout(60.0, connect=10.0)
    limits = httpx.Limits(max_keepalive_connections=100, keepalive_expiry=4.0)  # under servers' usual 5 s
    # httpx over aiohttp's connection pool (see api.transport).
    return HttpClient(transport=transport, timeout=timeout, follow_redirects=False, limits=limits)


# One semaphore per event loop: a process runs its jobs in one loop, so this caps the whole process.
_IN_FLIGHT: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def in_flight_slots(limit: int) -> asyncio.Semaphore:
    """The process-wide download slots (made with the first ``limit`` asked for in this loop)."""
    loop = asyncio.get_running_loop()
    slots = _IN_FLIGHT.get(loop)
    if slots is None:
        slots = _IN_FLIGHT[loop] = asyncio.Semaphore(limit)
    return slots


async def resolve_host(host: str, port: int) -> Sequence[str]:
    """The addresses ``host`` resolves to (none if it does not resolve: the connection fails then)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return ()
    return [str(info[4][0]) for info in infos]


def is_private_address(address: str) -> bool:
    """Whether an IP address is loopback, private, link-local, reserved or otherwise not public."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def is_private_host(host: str) -> bool:
    """Whether a URL's host names a non-public address literally (``localhost`` included)."""
    host = host.strip("[]").lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost") or is_private_address(host)


def private_outputs_allowed(setting: bool | None, api_url: str | None) -> bool:
    """Whether output URLs on non-public addresses may be fetched: as ``setting`` says
    (``api.allow_private_outputs``), else only when the API at ``api_url`` is on such an address
    itself. Without an API URL (self-hosted Cog servers, local by nature) they are allowed."""
    if setting is not None:
        return setting
    if not isinstance(api_url, str):
        return True
    try:
        return is_private_host(httpx.URL(api_url).host)
    except httpx.InvalidURL:
        return False


async def all_or_none(jobs: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run ``jobs`` together; at the first failure the others are canceled (their partial files
    removed as they stop) and that failure is raised."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # a no-op for those done; on Ctrl-C, every one
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            raise failure
    return [task.result() for task in tasks]


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
        clock: Callable[[], float] = time.monotonic,
        resolve: Resolve = resolve_host,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        self.run_dir = run_dir
        self.max_bytes = max_bytes
        self.retry = retry or RetryPolicy()
        self.stats = DownloadStats()
        self._sleep, self._jitter, self._clock, self._resolve = sleep, jitter, clock, resolve
        self._owns_http = http is None
        self._http = http or download_client(transport=transport)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def download(
        self,
        url: str,
        *,
        folder: Path,
        stem: str,
        allow_private: bool = True,
        deadline: float | None = None,
        in_flight: int = DEFAULT_IN_FLIGHT,
    ) -> Artifact:
        """Fetch ``url`` into ``folder/<stem><ext>`` atomically and return what was stored.

        ``allow_private=False`` refuses hosts on loopback, private or link-local addresses;
        ``deadline`` (on the downloader's monotonic clock) ends the download, retries included, with
        DownloadError; ``in_flight`` sizes the process-wide download slots when they are first made.
        """
        folder.mkdir(parents=True, exist_ok=True)
        if url[:5].lower() == "data:":
            artifact = self._store_data_uri(url, folder=folder, stem=stem)
        else:
            _checked_url(url)
            fetch = self._fetch(
                url, folder=folder, stem=stem, allow_private=allow_private, in_flight=in_flight
            )
            artifact = await self._before(deadline, fetch, url)
        self.stats.downloads += 1
        self.stats.bytes += artifact.bytes
        return artifact

    async def _before(self, deadline: float | None, fetch: Awaitable[Artifact], url: str) -> Artifact:
        """``fetch``, or DownloadError once ``deadline`` passes (a partial file is removed as it stops)."""
        if deadline is None:
            return await fetch
        started = self._clock()
        try:
            return await asyncio.wait_for(fetch, max(deadline - started, 0.0))
        except asyncio.TimeoutError:
            spent = self._clock() - started
            raise DownloadError(
                f"cannot download {describe_url(url)}: still unfinished after {spent:.0f} s, when the time "
                "for the step's downloads ran out (api.download_timeout, or the step's timeout); "
                "nothing was kept",
                url=describe_url(url),
            ) from None

    def _store_data_uri(self, url: str, *, folder: Path, stem: str) -> Artifact:
        _, payload = decode_data_uri(url)
        self._check_size(len(payload), describe_url(url), announced=True)
        with _atomic_file(folder, stem) as out:
            out.write(payload)
        return self._artifact(out, url)

    async def _fetch(
        self, url: str, *, folder: Path, stem: str, allow_private: bool, in_flight: int
    ) -> Artifact:
        """Fetch with retries; every attempt starts from scratch, and holds a process-wide slot."""
        attempt = 1
        while True:
            try:
                async with in_flight_slots(in_flight):
                    return await self._fetch_once(url, folder=folder, stem=stem, allow_private=allow_private)
            except _Retryable as failure:
                if attempt >= self.retry.max_attempts:
                    gave_up = f" (gave up after {attempt} attempts)" if attempt > 1 else ""
                    raise DownloadError(failure.message + gave_up, url=describe_url(url)) from failure
                delay = self.retry.delay(attempt, hint=failure.hint, random=self._jitter)
                self.stats.note_retry(failure.reason, delay)
                log.info("GET %s: %s; retry %d in %.2f s", describe_url(url), failure.reason, attempt, delay)
                await self._sleep(delay)
                attempt += 1

    async def _fetch_once(self, url: str, *, folder: Path, stem: str, allow_private: bool) -> Artifact:
        self.stats.requests += 1
        shown = describe_url(url)
        hop = url
        try:
            for _ in range(MAX_REDIRECTS + 1):
                await self._check_host(hop, allow_private, shown)
                async with self._http.stream("GET", hop, follow_redirects=False) as response:
                    if response.next_request is None:
                        self._check_response(response, shown)
                        with _atomic_file(folder, stem) as out:
                            async for chunk in response.aiter_bytes(_CHUNK):
                                out.write(chunk)
                                self._check_size(out.size, shown)
                        return self._artifact(out, url)
                    hop = str(response.next_request.url)
                _checked_url(hop, what=f"{shown} redirects to")
        except httpx.TransportError as exc:
            message = f"cannot download {shown}: {clean_text(str(exc)) or type(exc).__name__}"
            if exception_verdict(exc, create=False) is Verdict.RETRY:
                raise _Retryable(message, reason=type(exc).__name__) from exc
            raise DownloadError(message, url=shown) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # not transport: a bad encoding, a bad URL
            raise DownloadError(f"cannot download {shown}: {clean_text(str(exc))}", url=shown) from exc
        raise DownloadError(f"cannot download {shown}: more than {MAX_REDIRECTS} redirects", url=shown)

    async def _check_host(self, url: str, allow_private: bool, shown: str) -> None:
        """Refuse a URL whose host is, or resolves to, a non-public address (unless allowed)."""
        if allow_private:
            return
        parsed = httpx.URL(url)
        host = parsed.host
        addresses: Sequence[str] = [host] if is_private_host(host) else ()
        if not addresses:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            addresses = [a for a in await self._resolve(host, port) if is_private_address(a)]
        if addresses:
            raise DownloadError(
                f"refusing to download {shown}: its host {clean_text(host, limit=100)} is a loopback or "
                f"private address ({clean_text(addresses[0], limit=60)}), and outputs on such addresses "
                "are not allowed here (set api.allow_private_outputs=true if they are expected)",
                url=shown,
            )

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

    def _artifact(self, out: _HashingFile, url: str) -> Artifact:
        assert out.target is not None
        relative = out.target.relative_to(self.run_dir).as_posix()
        return Artifact(relative, describe_url(url), out.sha256, out.size, out.content_type)


def _checked_url(url: str, *, what: str = "refusing to download") -> None:
    """Raise DownloadError unless ``url`` is a well-formed http(s) URL of sane length."""
    shown = describe_url(url)
    if not url.lower().startswith(("http://", "https://")):
        scheme = url.partition(":")[0] if ":" in url[:20] else ""
        said = f"its scheme is '{clean_text(scheme, limit=20)}:'; " if scheme else ""
        raise DownloadError(f"{what} '{shown}': {said}only http(s) and data: URLs can be fetched", url=shown)
    if len(url) > MAX_URL_CHARS:
        raise DownloadError(f"{what} a URL of {len(url)} characters (at most {MAX_URL_CHARS})", url=shown)
    if clean_text(url, limit=MAX_URL_CHARS) != url or any(c.isspace() for c in url):
        raise DownloadError(f"{what} '{shown}': the URL holds control characters or spaces", url=shown)
    try:
        host = httpx.URL(url).host
    except (httpx.InvalidURL, ValueError) as exc:
        raise DownloadError(f"{what} '{shown}': not a valid URL ({clean_text(str(exc))})", url=shown) from exc
    if not host:
        raise DownloadError(f"{what} '{shown}': the URL names no host", url=shown)


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
    """A file being written that keeps its sha256, size and first bytes as it goes; ``target`` and
    ``content_type`` are set once it is complete and named."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.target: Path | None = None
        self.content_type = OCTET_STREAM

    def write(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        if len(self.head) < _HEAD:
            self.head += chunk[: _HEAD - len(self.head)]
        self.size += len(chunk)
        self._handle.write(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


@contextmanager
def _atomic_file(folder: Path, stem: str) -> Iterator[_HashingFile]:
    """Write to a temporary file in ``folder``; only if all went well does it become
    ``<stem><ext>``, the extension that of the type sniffed from its content."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            out = _HashingFile(handle)
            yield out
        out.content_type = sniff(out.head)
        out.target = folder / f"{stem}{extension_for(out.content_type)}"
        os.replace(tmp, out.target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

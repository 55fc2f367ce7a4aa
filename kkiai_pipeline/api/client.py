"""The predictions client: create, get, cancel, wait.

Every URL is built from our own ``base_url`` and the prediction id; the ``urls`` a response carries are
never followed (pass-through proxies return api.replicate.com URLs there). httpx exceptions and error
responses are translated to our error tree in one place, :meth:`PredictionsClient._request`, which also
retries and rate-limits:

- Polls and cancels are retried on 429, 5xx, dropped connections and timeouts, with backoff (see
  :mod:`.retries` for the policy and the server hints it honours).
- A create costs money, so it is retried only when it certainly created nothing: a 429, or a connection
  that failed before the request was sent. After any other failure (a read timeout, a connection
  dropped after sending, a 5xx) a prediction may exist, and :class:`AmbiguousCreateError` is raised,
  unless ``ClientOptions.retry_ambiguous_creates`` is set.
- Every attempt first takes a slot from the process-wide rate limits for its base URL (see
  :mod:`.ratelimit`; a sweep over several processes must divide the rates between them). A 429 pauses
  the bucket for everyone.

Answers are not trusted: a body larger than ``max_response_bytes``, nested deeper than JSON parsing can
safely go, or slower in total than the request's timeouts allow is refused like a failed request (for a
create, as ambiguous: a prediction may exist); ids must match :data:`PREDICTION_ID`. A poll whose answer
cannot be used ends the wait, and the prediction is canceled first: nothing more can be learnt of it.

Sleeping, the monotonic clock and the jitter are injectable, so tests run in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple, NoReturn
from urllib.parse import parse_qs, urlsplit

import httpx

from .. import secrets
from ..errors import ApiError, ConfigError, DeadlineExceeded, KkiaiError
from .errors import (
    ambiguous_create,
    clean_text,
    error_from_exception,
    error_from_response,
    json_or_none,
    response_reason,
)
from .follower import Follower
from .prediction import PREDICTION_ID, Prediction, parse_prediction, parse_timestamp, rfc3339
from .ratelimit import RateLimits, shared_limits
from .retries import RetryPolicy, Verdict, exception_verdict, server_delay, status_verdict
from .transport import HttpClient

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 60  # the API holds a create at most this long with Prefer: wait
MIN_CANCEL_AFTER_SECONDS = 5  # the API's shortest Cancel-After
KEEPALIVE_SECONDS = 4.0
MAX_LIST_PAGES = 50  # of 100 predictions each, when looking for a lost create
LONG_WAIT_SECONDS = 5.0  # a 429 pause longer than this is shown on the console, not only in run.log
ENVELOPE_DEPTH = 8  # JSON nesting an answer may have besides its output's (a list page's item is 3 deep)
MAX_CLOCK_OFFSET = 30 * 86400.0  # a Date header further off than this is not believed
CANCEL_SECONDS = 1.5  # a cancel after an unusable answer gets this long

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]
Update = Callable[[Prediction], Awaitable[None]]
OnSend = Callable[[], Awaitable[None]]


_AT_LEAST_ONE = (
    "max_attempts",
    "burst",
    "max_response_bytes",
    "max_output_depth",
    "max_output_files",
    "max_downloads_in_flight",
)


@dataclass(frozen=True)
class ClientOptions:
    """How the client talks to the API; settings maps each ``api.<field>`` onto the field of that name."""

    wait_seconds: int = 60  # Prefer: wait=N on create; 0 turns it off
    poll_interval: float = 0.5  # first poll delay; grows up to max_poll_interval
    max_poll_interval: float = 2.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_attempts: int = 8  # per request, the first one included; 1 turns retries off
    backoff_base: float = 0.5  # the first retry waits up to this long, the next up to twice that ...
    backoff_max: float = 30.0  # ... up to this
    max_wait: float = 60.0  # no single pause is longer, even if the server asks for more
    retry_ambiguous_creates: bool = False  # True risks a duplicate, billed prediction
    create_rate_per_minute: float = 600.0  # the API's limits; 0 turns our limiter off
    other_rate_per_minute: float = 3000.0
    burst: int = 10  # requests that may go at once before the rate applies
    list_lag_seconds: float = 60.0  # how late the API's list of predictions may show a new one
    clock_skew_seconds: float = 300.0  # tolerated difference between our clock and the server's
    # Caps on what the API's answers may make us do (a hostile or broken server cannot exhaust us).
    max_response_bytes: int = 16 * 1024 * 1024  # one answer's body, decoded
    max_output_depth: int = 16  # nesting of a prediction's output (lists and dicts in each other)
    max_output_files: int = 1000  # files in one prediction's output
    max_downloads_in_flight: int = 16  # output files fetched at once, in the whole process
    download_timeout: float = 600.0  # one prediction's downloads in all (and never past the step's timeout)
    # Output URLs on loopback, private or link-local addresses: None allows them only when the API is on
    # such an address itself (the emulator, a local proxy).
    allow_private_outputs: bool | None = None

    def __post_init__(self) -> None:
        for name in _AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ConfigError(f"api.{name} must be at least 1, not {getattr(self, name)}")
        if not self.download_timeout > 0:
            raise ConfigError(f"api.download_timeout must be > 0, not {self.download_timeout}")

    def retry_policy(self) -> RetryPolicy:
        """The retry settings alone (the downloader takes these too)."""
        return RetryPolicy(
            max_attempts=self.max_attempts,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            max_wait=self.max_wait,
        )


@dataclass
class ClientStats:
    """Counters for benchmarks and tests; every attempt counts as a request."""

    requests: int = 0
    creates: int = 0  # create attempts sent
    retries: dict[str, int] = field(default_factory=dict)  # by reason: "429", "503", "ReadTimeout" ...
    retry_wait_seconds: float = 0.0
    rate_limit_waits: int = 0
    rate_limit_wait_seconds: float = 0.0
    ambiguous_creates: int = 0  # creates that failed after sending (raised, or retried if opted in)

    @property
    def total_retries(self) -> int:
        return sum(self.retries.values())

    def note_retry(self, reason: str, delay: float) -> None:
        self.retries[reason] = self.retries.get(reason, 0) + 1
        self.retry_wait_seconds += delay


@dataclass
class _Attempts:
    """Where one request's retries stand: the attempt under way, and the first ambiguous failure."""

    create: bool
    number: int = 1
    ambiguous: str | None = None


class _Retry(NamedTuple):
    delay: float
    reason: str


class _UnusableAnswer(ApiError):
    """An answer that cannot be used: too large, too deep, not a prediction, a malformed id."""


class _DeadlineReached(Exception):
    """A retry pause reached the caller's deadline (``wait`` turns it into DeadlineExceeded)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def cancel_after_header(seconds: float) -> str:
    """``Cancel-After`` for a duration: whole seconds, rounded up to at least the API's minimum (5 s)."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"cancel_after must be a positive number of seconds, not {seconds!r}")
    return f"{max(math.ceil(seconds), MIN_CANCEL_AFTER_SECONDS)}s"


class PredictionsClient:
    """Async client for ``{base_url}/predictions``; use as ``async with``.

    ``rate_limits`` defaults to the process-wide pair for ``base_url``; ``sleep``, ``clock`` (a
    ``time.monotonic`` stand-in, the one deadlines are measured on) and ``jitter`` (``[0, 1)``) are for
    tests.
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str | None,
        options: ClientOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rate_limits: RateLimits | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.options = options = options or ClientOptions()
        self.stats = ClientStats()
        self.server_offset = 0.0  # the server's clock minus ours, from the last Date header
        self.rate_limits = rate_limits or shared_limits(
            self.base_url,
            create_per_minute=options.create_rate_per_minute,
            other_per_minute=options.other_rate_per_minute,
            burst=options.burst,
        )
        self._retry = options.retry_policy()
        self._sleep, self._clock, self._jitter = sleep, clock, jitter
        headers = {"User-Agent": "kkiai-pipeline"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        timeout = httpx.Timeout(options.read_timeout, connect=options.connect_timeout)
        # Idle connections are dropped before a server's usual 5 s keep-alive closes them, so a create is
        # never sent on a connection the server is closing (an ambiguous failure by then).
        limits = httpx.Limits(
            max_connections=None, max_keepalive_connections=100, keepalive_expiry=KEEPALIVE_SECONDS
        )
        # httpx over aiohttp's connection pool, which costs far less CPU than httpcore's (see .transport).
        self._follower = Follower(
            pages=self._list_pages,
            poll=self._poll,
            interval=options.max_poll_interval,
            other_per_minute=options.other_rate_per_minute,
            sleep=sleep,
            clock=clock,
        )
        self._http = HttpClient(headers=headers, timeout=timeout, transport=transport, limits=limits)

    reattach = True  # any process can follow a prediction by id
    lookup = True  # GET /predictions lists what was created

    async def __aenter__(self) -> PredictionsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._follower.aclose()
        await self._http.aclose()

    async def create(
        self,
        version: str,
        input: Mapping[str, Any],
        *,
        cancel_after: float | None = None,
        on_send: OnSend | None = None,
    ) -> Prediction:
        """Create a prediction of ``version`` (``owner/name:<hash>``); may return it already finished.

        ``cancel_after`` (seconds from creation) asks the API to cancel it then, or to abort it unbilled
        if it has not started; it is sent as whole seconds, at least 5. ``on_send`` is awaited right
        before each attempt goes on the wire (the ledger records it first). A 2xx answer that is not a
        prediction with an id is ambiguous: the prediction may exist. An input holding the API token's
        value is refused (StepInputError) before anything is sent: the token goes only in the header.
        """
        secrets.refuse_in_body(input)
        wait = min(self.options.wait_seconds, MAX_WAIT_SECONDS)
        headers = {"Prefer": f"wait={wait}"} if wait > 0 else {}
        if cancel_after is not None:
            headers["Cancel-After"] = cancel_after_header(cancel_after)
        # The read timeout must outlast the server's hold, or every slow create would look like a failure.
        timeout = httpx.Timeout(wait + self.options.read_timeout, connect=self.options.connect_timeout)
        body = {"version": version, "input": dict(input)}
        response = await self._request(
            "POST", "/predictions", create=True, on_send=on_send, json=body, headers=headers, timeout=timeout
        )
        try:
            prediction = parse_prediction(response.json())
        except ValueError as exc:
            reason = f"its {response.status_code} answer is not a prediction ({exc})"
            raise ambiguous_create(response.request, reason=reason, status_code=response.status_code) from exc
        finished = prediction.status == "succeeded" and prediction.output is not None
        if (prediction.id is None and not finished) or (
            prediction.id is not None and not PREDICTION_ID.fullmatch(prediction.id)
        ):
            # Without an id nothing can be followed; only a finished answer (the vendor page's
            # example) stands on its own.
            reason = f"its {response.status_code} answer carries no usable prediction id"
            raise ambiguous_create(response.request, reason=reason, status_code=response.status_code)
        return prediction

    async def get(self, prediction_id: str) -> Prediction:
        return await self._prediction("GET", f"/predictions/{_checked_id(prediction_id)}")

    async def cancel(self, prediction_id: str) -> Prediction:
        """Ask the API to cancel a prediction (retried like a poll: cancelling twice is harmless)."""
        return await self._prediction("POST", f"/predictions/{_checked_id(prediction_id)}/cancel")

    async def model_version(self, owner: str, name: str, version: str) -> dict[str, Any]:
        """``GET /models/{owner}/{name}/versions/{version}``: the version document with its
        ``openapi_schema`` (retried like a poll; its answer capped like any other). Raises ApiError
        for an error answer, or for one that is not a JSON object."""
        for part in (owner, name, version):
            if not _PATH_PART.fullmatch(part):
                raise ApiError(
                    f"refusing a malformed model reference part {clean_text(repr(part)[:40])}", status_code=0
                )
        path = f"/models/{owner}/{name}/versions/{version}"
        response = await self._request("GET", path)
        body = json_or_none(response)
        if not isinstance(body, dict):
            raise ApiError(f"GET {path}: the answer is not a JSON object", status_code=response.status_code)
        return body

    def server_time(self, local: float) -> float:
        """Our wall-clock time ``local`` on the server's clock (as its ``Date`` headers last told)."""
        return local + self.server_offset

    async def find_created(
        self, version: str, input: Mapping[str, Any], *, since: datetime
    ) -> Prediction | None:
        """The newest prediction of ``version`` with exactly ``input``, created at or after ``since``.

        How a create whose answer was lost (a crash, a dropped connection) is found again instead of
        being paid for twice. Pages through ``GET /predictions?created_after=...`` (newest first),
        taking each page's cursor but never following its ``next`` URL, which a proxy may point
        elsewhere. Returns None only when the list answered and nothing matches; an API without the
        list raises its ApiError.
        """
        wanted = _canonical(input)
        version_hash = version.rpartition(":")[2]
        params = {"created_after": rfc3339(since)}
        async with contextlib.aclosing(self._list_pages(params)) as pages:
            async for results in pages:
                older = False
                for item in results:
                    if not isinstance(item, dict):
                        continue
                    same = item.get("version") in (version_hash, version)
                    if same and _canonical(item.get("input")) == wanted:
                        return _listed(item)
                    created_at = item.get("created_at")
                    created = parse_timestamp(created_at) if isinstance(created_at, str) else None
                    older = older or (created is not None and created < since)
                if older:  # the newest-first list has passed the window
                    return None
        return None

    async def _list_pages(self, query: Mapping[str, str]) -> AsyncGenerator[list[Any], None]:
        """The ``results`` of each page of ``GET /predictions?<query>``, newest first.

        Takes each page's cursor but never follows its ``next`` URL, which a proxy may point elsewhere;
        an answer that is no list page raises ApiError, and so does a list longer than MAX_LIST_PAGES.
        """
        params = dict(query)
        for _ in range(MAX_LIST_PAGES):
            body = json_or_none(await self._request("GET", "/predictions", params=params))
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                raise ApiError("the API's list of predictions gave no usable answer", status_code=0)
            yield body["results"]
            cursor = _cursor(body.get("next"))
            if cursor is None:
                return
            params["cursor"] = cursor
        raise ApiError(f"the list of predictions is longer than {MAX_LIST_PAGES} pages", status_code=0)

    async def wait(
        self, prediction: Prediction, *, on_update: Update | None = None, deadline: float | None = None
    ) -> Prediction:
        """Poll until ``prediction`` is terminal; ``on_update`` hears every status change.

        ``deadline`` is a ``time.monotonic()`` value: once it has passed with the prediction unfinished,
        :class:`DeadlineExceeded` is raised with the last state seen. ``wait`` does not cancel; the
        caller does. A request in flight at the deadline may finish up to one request timeout later.
        """
        delay = self.options.poll_interval
        self._follower.waiting += 1
        try:
            while not prediction.terminal:
                if prediction.id is None:
                    raise ApiError("the API returned an unfinished prediction without an id", status_code=0)
                await self._poll_pause(prediction, delay, deadline)
                delay = min(delay * 1.5, self.options.max_poll_interval)
                try:
                    latest = await self._follower.news(prediction, deadline)  # a poll, or the list
                except _UnusableAnswer:
                    await self._abandon(prediction.id)
                    raise
                if on_update is not None and latest.status != prediction.status:
                    await on_update(latest)
                prediction = latest
        finally:
            self._follower.waiting -= 1
        return prediction

    async def _poll_pause(self, prediction: Prediction, delay: float, deadline: float | None) -> None:
        if deadline is not None:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise _past_deadline(prediction)
            delay = min(delay, remaining)  # poll once more right at the deadline
        await self._sleep(delay)

    async def _poll(self, prediction: Prediction, deadline: float | None) -> Prediction:
        assert prediction.id is not None
        path = f"/predictions/{_checked_id(prediction.id)}"
        try:
            return await self._prediction("GET", path, deadline=deadline)
        except _DeadlineReached as exc:
            raise _past_deadline(prediction, exc.reason) from exc

    async def _abandon(self, prediction_id: str) -> None:
        """Cancel a prediction whose answers cannot be used (best effort, briefly): it would run on,
        billed, with no one following it."""
        log.warning("canceling prediction %s: the API's answers about it cannot be used", prediction_id)
        try:
            await asyncio.wait_for(self.cancel(prediction_id), CANCEL_SECONDS)
        except (KkiaiError, asyncio.TimeoutError) as exc:
            log.error("could not cancel prediction %s: %s", prediction_id, exc)

    async def _prediction(self, method: str, path: str, **kwargs: Any) -> Prediction:
        response = await self._request(method, path, **kwargs)
        try:
            return parse_prediction(response.json())
        except ValueError as exc:
            raise _UnusableAnswer(
                f"{method} {path}: unexpected answer from the API: {exc}", status_code=response.status_code
            ) from exc

    async def _request(
        self,
        method: str,
        path: str,
        *,
        create: bool = False,
        deadline: float | None = None,
        on_send: OnSend | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send, retrying what is safe to retry; the one place httpx failures become our errors."""
        state = _Attempts(create=create)
        while True:
            await self._throttle(create=create)
            try:
                response = await self._send(method, path, create=create, on_send=on_send, **kwargs)
            except httpx.TransportError as exc:
                retry = self._after_exception(exc, state)
            else:
                if not response.is_error:
                    return response
                retry = self._after_response(response, state)
            await self._pause(retry, deadline=deadline)
            state.number += 1

    async def _send(
        self, method: str, path: str, *, create: bool, on_send: OnSend | None = None, **kwargs: Any
    ) -> httpx.Response:
        if on_send is not None:
            await on_send()
        self.stats.requests += 1
        if create:
            self.stats.creates += 1
        request = self._http.build_request(method, self.base_url + path, **kwargs)
        budget = self._budget(kwargs.get("timeout"))
        try:
            response = await asyncio.wait_for(self._exchange(request), budget)
        except asyncio.TimeoutError:
            # Trickled headers or body: each read was in time, the whole was not. Treated as the read
            # timeout it amounts to (retried if safe, ambiguous for a create).
            raise httpx.ReadTimeout(f"the answer took longer than {budget:g} s", request=request) from None
        self._note_clock(response)
        log.debug("%s %s -> %d", method, path, response.status_code)  # with hydra.verbose
        problem = self._unusable(response)
        if problem is not None:
            if create:
                self.stats.ambiguous_creates += 1
                raise ambiguous_create(request, reason=problem, status_code=response.status_code)
            raise _UnusableAnswer(f"{method} {path}: {problem}", status_code=response.status_code)
        return response

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read its body, stopping at ``max_response_bytes`` (+1 to tell)."""
        response = await self._http.send(request, stream=True)
        cap = self.options.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    break
        finally:
            await response.aclose()
        response._content = b"".join(chunks)  # what aread() would have set, bounded
        return response

    def _unusable(self, response: httpx.Response) -> str | None:
        """Why an answer must not be parsed, or None."""
        cap = self.options.max_response_bytes
        if len(response.content) > cap:
            return f"its answer is larger than {cap} bytes (api.max_response_bytes)"
        limit = self.options.max_output_depth + ENVELOPE_DEPTH
        if nested_deeper(response.content, limit):
            return f"its answer is nested deeper than {limit} levels (api.max_output_depth)"
        return None

    def _budget(self, timeout: Any) -> float:
        """The longest a whole exchange may take: the request's connect and read timeouts, plus a
        margin (httpx applies its read timeout to each read, so a trickle would never end)."""
        connect, read = self.options.connect_timeout, self.options.read_timeout
        if isinstance(timeout, httpx.Timeout):
            connect, read = timeout.connect or connect, timeout.read or read
        return connect + read + 1.0

    def _note_clock(self, response: httpx.Response) -> None:
        """Keep the server's clock against ours, from its ``Date`` header (1 s resolution).

        A date further off than MAX_CLOCK_OFFSET is ignored: it would push the lookup windows of lost
        creates past what dates can represent, and no real server is that wrong."""
        date = response.headers.get("date")
        if date:
            with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
                offset = parsedate_to_datetime(date).timestamp() - time.time()
                if abs(offset) <= MAX_CLOCK_OFFSET:
                    self.server_offset = offset

    def _after_exception(self, exc: httpx.TransportError, state: _Attempts) -> _Retry:
        """The pause before retrying after ``exc``, or raise the error to give up with."""
        reason = type(exc).__name__
        verdict = self._verdict(exception_verdict(exc, create=state.create), exc.request, reason, state)
        if verdict is Verdict.AMBIGUOUS:
            raise ambiguous_create(exc.request, reason=reason) from exc
        if verdict is Verdict.FAIL or state.number >= self._retry.max_attempts:
            error = error_from_exception(exc, base_url=self.base_url, attempts=state.number)
            error.__cause__ = exc  # raised by _give_up, maybe wrapped: chain it here
            self._give_up(error, exc.request, state)
        return self._next(exc.request, reason, attempt=state.number, hint=None)

    def _after_response(self, response: httpx.Response, state: _Attempts) -> _Retry:
        """The pause before retrying after an error answer, or raise the error to give up with."""
        status = response.status_code
        reason = response_reason(response)
        verdict = self._verdict(status_verdict(status, create=state.create), response.request, reason, state)
        if verdict is Verdict.AMBIGUOUS:
            raise ambiguous_create(response.request, reason=reason, status_code=status)
        if verdict is Verdict.FAIL or state.number >= self._retry.max_attempts:
            self._give_up(error_from_response(response, attempts=state.number), response.request, state)
        hint = server_delay(status, response.headers, json_or_none(response), now=time.time())
        retry = self._next(response.request, str(status), attempt=state.number, hint=hint)
        if status == 429:
            # Everyone sharing the bucket would hit the same limit; hold them all, not just this request.
            self.rate_limits.bucket(create=state.create).pause(retry.delay)
            warn_long_wait(response.request, retry.delay)
        return retry

    def _verdict(self, verdict: Verdict, request: httpx.Request, reason: str, state: _Attempts) -> Verdict:
        """``verdict``, except that an ambiguous create becomes RETRY if the user opted in."""
        if verdict is not Verdict.AMBIGUOUS:
            return verdict
        self.stats.ambiguous_creates += 1
        if not self.options.retry_ambiguous_creates:
            return verdict
        log.warning(
            "%s %s: %s; retrying as configured, which may create a duplicate",
            request.method,
            request.url.path,
            reason,
        )
        state.ambiguous = state.ambiguous or reason
        return Verdict.RETRY

    def _give_up(self, error: KkiaiError, request: httpx.Request, state: _Attempts) -> NoReturn:
        """Raise ``error``, or AmbiguousCreateError if an earlier attempt may have created a prediction."""
        if state.ambiguous is None:
            raise error
        raise ambiguous_create(request, reason=state.ambiguous, attempts=state.number) from error

    def _next(self, request: httpx.Request, reason: str, *, attempt: int, hint: float | None) -> _Retry:
        delay = self._retry.delay(attempt, hint=hint, random=self._jitter)
        self.stats.note_retry(reason, delay)
        log.info(
            "%s %s: %s; retry %d of %d in %.2f s",
            request.method,
            request.url.path,
            reason,
            attempt,
            self._retry.max_attempts - 1,
            delay,
        )
        return _Retry(delay, reason)

    async def _pause(self, retry: _Retry, *, deadline: float | None) -> None:
        if deadline is not None and self._clock() + retry.delay >= deadline:
            await self._sleep(max(deadline - self._clock(), 0.0))
            raise _DeadlineReached(retry.reason)
        await self._sleep(retry.delay)

    async def _throttle(self, *, create: bool) -> None:
        wait = self.rate_limits.bucket(create=create).reserve()
        if wait > 0:
            self.stats.rate_limit_waits += 1
            self.stats.rate_limit_wait_seconds += wait
            await self._sleep(wait)


def warn_long_wait(request: httpx.Request, delay: float) -> None:
    """Say on the console (a WARNING) why nothing seems to happen when a 429 makes us wait long."""
    if delay > LONG_WAIT_SECONDS:
        log.warning(
            "%s %s: the API is rate limiting (429); waiting %.0f s before trying again",
            request.method,
            request.url.path,
            delay,
        )


def _past_deadline(prediction: Prediction, failing: str | None = None) -> DeadlineExceeded:
    message = f"prediction {prediction.id} was still {prediction.status} when its deadline passed"
    if failing:
        message += f" (the API was failing meanwhile: {failing})"
    return DeadlineExceeded(message, prediction=prediction)


#: What an owner, a model name or a version may look like in a URL path (no '/', '..' or escapes).
_PATH_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _checked_id(prediction_id: str) -> str:
    if not isinstance(prediction_id, str) or not PREDICTION_ID.fullmatch(prediction_id):
        shown = clean_text(repr(prediction_id)[:40])
        raise ApiError(f"refusing a malformed prediction id {shown}", status_code=0)
    return prediction_id


def _listed(item: Mapping[str, Any]) -> Prediction:
    """The prediction a list page shows for a lost create; ApiError if it cannot be followed."""
    try:
        return parse_prediction(item)
    except ValueError as exc:
        raise ApiError(
            f"the API's list shows the lost create's prediction, but {exc}: it cannot be followed",
            status_code=0,
        ) from exc


def _cursor(next_url: Any) -> str | None:
    """The ``cursor`` of a list page's ``next`` URL (whatever host it names)."""
    if not isinstance(next_url, str):
        return None
    try:
        values = parse_qs(urlsplit(next_url).query).get("cursor")
    except ValueError:  # e.g. a malformed IPv6 host: no cursor to take
        return None
    return values[0] if values and len(values[0]) <= 1000 else None


_JSON_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nested_deeper(body: bytes, limit: int) -> bool:
    """Whether JSON ``body`` nests lists and objects more than ``limit`` deep (unbalanced brackets
    count as too deep). Parsing deeper nesting could exhaust the recursion limit; this looks without
    parsing, in a few passes of C-speed byte operations."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    skeleton = _JSON_STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS)
    skeleton = skeleton.replace(b"{", b"[").replace(b"}", b"]")
    for _ in range(limit):
        inner = skeleton.replace(b"[]", b"")  # every innermost pair: one level per pass
        if not inner:
            return False
        if len(inner) == len(skeleton):
            return True  # unbalanced
        skeleton = inner
    return bool(skeleton)


def _canonical(value: Any) -> str:
    """``value`` as JSON with sorted keys: the API echoes inputs with their keys sorted."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

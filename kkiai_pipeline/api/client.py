"""The predictions client: create, get, cancel, wait.

Every URL is built from our own ``base_url`` and the prediction id; the ``urls`` a response carries are
never followed (pass-through proxies return api.replicate.com URLs there). httpx exceptions and error
responses are translated to our error tree in one place, :meth:`PredictionsClient._request`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import ApiError, TransportError
from .errors import error_from_response
from .prediction import Prediction, parse_prediction

MAX_WAIT_SECONDS = 60  # the API holds a create at most this long with Prefer: wait


@dataclass(frozen=True)
class ClientOptions:
    """How the client talks to the API."""

    wait_seconds: int = 60  # Prefer: wait=N on create; 0 turns it off
    poll_interval: float = 0.5  # first poll delay; grows up to max_poll_interval
    max_poll_interval: float = 2.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0


Update = Callable[[Prediction], Awaitable[None]]


class PredictionsClient:
    """Async client for ``{base_url}/predictions``; use as ``async with``."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str | None,
        options: ClientOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.options = options or ClientOptions()
        headers = {"User-Agent": "kkiai-pipeline"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        timeout = httpx.Timeout(self.options.read_timeout, connect=self.options.connect_timeout)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
        self._http = httpx.AsyncClient(headers=headers, timeout=timeout, transport=transport, limits=limits)

    async def __aenter__(self) -> PredictionsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def create(self, version: str, input: Mapping[str, Any]) -> Prediction:
        """Create a prediction of ``version`` (``owner/name:<hash>``); may return it already finished."""
        wait = min(self.options.wait_seconds, MAX_WAIT_SECONDS)
        headers = {"Prefer": f"wait={wait}"} if wait > 0 else {}
        # The read timeout must outlast the server's hold, or every slow create would look like a failure.
        timeout = httpx.Timeout(wait + self.options.read_timeout, connect=self.options.connect_timeout)
        body = {"version": version, "input": dict(input)}
        return await self._prediction("POST", "/predictions", json=body, headers=headers, timeout=timeout)

    async def get(self, prediction_id: str) -> Prediction:
        return await self._prediction("GET", f"/predictions/{prediction_id}")

    async def cancel(self, prediction_id: str) -> Prediction:
        return await self._prediction("POST", f"/predictions/{prediction_id}/cancel")

    async def wait(self, prediction: Prediction, *, on_update: Update | None = None) -> Prediction:
        """Poll until ``prediction`` is terminal; ``on_update`` hears every status change."""
        delay = self.options.poll_interval
        while not prediction.terminal:
            if prediction.id is None:
                raise ApiError("the API returned an unfinished prediction without an id", status_code=0)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.options.max_poll_interval)
            latest = await self.get(prediction.id)
            if on_update is not None and latest.status != prediction.status:
                await on_update(latest)
            prediction = latest
        return prediction

    async def _prediction(self, method: str, path: str, **kwargs: Any) -> Prediction:
        response = await self._request(method, path, **kwargs)
        try:
            return parse_prediction(response.json())
        except ValueError as exc:
            raise ApiError(
                f"{method} {path}: unexpected answer from the API: {exc}", status_code=response.status_code
            ) from exc

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, self.base_url + path, **kwargs)
        except httpx.TimeoutException as exc:
            raise TransportError(f"{method} {self.base_url}{path} timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach {self.base_url}: {exc}") from exc
        if response.is_error:
            raise error_from_response(response)
        return response

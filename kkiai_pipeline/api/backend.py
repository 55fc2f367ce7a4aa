"""What the step runner needs from a prediction service: the :class:`PredictionBackend` protocol.

Two implementations: :class:`~.client.PredictionsClient` (the kkiai / Replicate API, and the sandbox)
and :class:`~.cog.CogClient` (self-hosted Cog servers). Type against the protocol, not either class.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from .prediction import Prediction

Update = Callable[[Prediction], Awaitable[None]]


class BackendStats(Protocol):
    """The counters every backend keeps (``ClientStats`` has more)."""

    requests: int  # every HTTP attempt
    creates: int  # every create attempt sent


OnSend = Callable[[], Awaitable[None]]


class PredictionBackend(Protocol):
    """Create, follow, cancel predictions; the one interface the purchaser uses.

    Capabilities, which decide how a prediction left by an earlier process is carried on:
    ``reattach`` (a prediction can be followed by id from any process) and ``lookup`` (the service
    lists predictions, so a create whose answer was lost can be found).
    """

    reattach: bool
    lookup: bool
    server_offset: float  # the service's clock minus ours, as last measured (0 when unknown)

    @property
    def stats(self) -> BackendStats: ...

    async def create(
        self,
        version: str,
        input: Mapping[str, Any],
        *,
        cancel_after: float | None = None,
        on_send: OnSend | None = None,
    ) -> Prediction:
        """Start a prediction of ``version`` (``owner/name:<hash>``); may return it already finished.

        ``on_send`` is awaited right before each attempt is sent.
        """
        ...

    async def wait(
        self,
        prediction: Prediction,
        *,
        on_update: Update | None = None,
        deadline: float | None = None,
    ) -> Prediction:
        """Follow ``prediction`` until it is terminal; ``on_update`` hears every status change.

        Past ``deadline`` (a ``time.monotonic()`` value) raises ``DeadlineExceeded`` with the last state
        seen; never cancels by itself.
        """
        ...

    async def cancel(self, prediction_id: str) -> Prediction:
        """Ask for the prediction to be canceled; returns the state after asking."""
        ...

    async def get(self, prediction_id: str) -> Prediction:
        """The current state of a prediction (used to re-attach on resume)."""
        ...

    async def find_created(
        self, version: str, input: Mapping[str, Any], *, since: datetime
    ) -> Prediction | None:
        """A prediction of ``version`` with exactly ``input`` created since ``since``; None if unknown."""
        ...

    async def aclose(self) -> None:
        """Release connections and anything else the backend started."""
        ...

"""Following many unfinished predictions through the list of predictions, within the rate limit.

A prediction that outlasts the ``Prefer: wait`` window is followed by :meth:`PredictionsClient.wait`.
Polled one by one, a thousand of them would need a GET each every couple of seconds, more than the API's
3,000 other calls a minute allow: the limiter would queue them, every poll would come late and each
prediction would still cost several. ``GET /predictions`` shows a hundred predictions a page, newest
first, each as a GET would (status, output, error, metrics), so one page can answer for a hundred.

:class:`Follower` (one per client) decides, each time a waiting prediction is due for news:

- While fewer than ``LIST_FROM`` predictions are being waited for, or the API has no usable list, the
  prediction is polled on its own (``GET /predictions/{id}``), exactly as before.
- From ``LIST_FROM`` on, it joins the next *sweep*: the list paged over the span of the predictions
  waited for (``created_before`` the newest, ``created_after`` the oldest, by the server's own
  ``created_at``; newer predictions, still held by their creates' ``Prefer: wait``, are left out),
  which answers every prediction that joined it. Sweeps start at least ``interval`` apart:
  ``max_poll_interval``, or longer when that many pages would take more than ``LIST_SHARE`` of
  ``other_rate_per_minute``, so that lookups, cancels and other processes keep the rest of the budget.
- A prediction the sweep did not show (the list lags behind creates; the list is longer than
  ``MAX_SWEEP_PAGES``; the item is unusable; a ``succeeded`` item without its output) is polled on its
  own, so nothing is ever decided on less than a GET would have told.

The list is an answer like any other: each page passes the client's caps (size, depth), ids must match
and items are parsed leniently; nothing on a page is followed but the cursor. A list that fails (no
list at all, errors after the retries) turns sweeps off for this client: polls take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..errors import KkiaiError
from .prediction import PREDICTION_ID, Prediction, parse_prediction, parse_timestamp, rfc3339

log = logging.getLogger(__name__)

LIST_FROM = 10  # predictions waited for at once from which they are followed through the list
LIST_SHARE = 0.5  # of the other-calls rate that sweeps may take
MAX_SWEEP_PAGES = 50  # of 100 predictions each
PAGE_SIZE = 100  # what the API lists per page (used to plan the interval before the first sweep)

Pages = Callable[[dict[str, str]], AsyncGenerator[list[Any], None]]
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass
class FollowerStats:
    """What the follower did, for benchmarks and tests."""

    sweeps: int = 0
    pages: int = 0
    answered: int = 0  # predictions a sweep answered for
    missed: int = 0  # predictions a sweep did not show (polled on their own)


@dataclass
class _Sweep:
    """One pass over the list, and the predictions waiting for it."""

    done: asyncio.Future[dict[str, Prediction]]
    wanted: dict[str, Prediction] = field(default_factory=dict)


class Follower:
    """Answers ``news(prediction)`` for the predictions a client waits for, by list or by poll."""

    def __init__(
        self,
        *,
        pages: Pages,
        poll: Callable[[Prediction, float | None], Awaitable[Prediction]],
        interval: float,
        other_per_minute: float,
        sleep: Sleep,
        clock: Clock,
    ) -> None:
        self._pages, self._poll = pages, poll
        self._interval, self._other_per_minute = interval, other_per_minute
        self._sleep, self._clock = sleep, clock
        self.stats = FollowerStats()
        self.waiting = 0  # predictions inside PredictionsClient.wait
        self.listing = True  # False once the list has failed: polls only
        self._next: _Sweep | None = None  # the sweep predictions join; not started yet
        self._task: asyncio.Task[None] | None = None
        self._last_start = -math.inf
        self._last_pages = 1

    async def news(self, prediction: Prediction, deadline: float | None) -> Prediction:
        """The latest state of ``prediction`` (by the next sweep, else a poll of its own)."""
        if not self.listing or self.waiting < LIST_FROM or _created(prediction) is None:
            return await self._poll(prediction, deadline)
        found = await self._join(prediction, deadline)
        if found is not None:
            return found
        self.stats.missed += 1
        return await self._poll(prediction, deadline)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._next is not None:  # joined, never swept: its waiters end with the client
            self._next.done.cancel()
            self._next = None

    def interval(self) -> float:
        """How far apart sweeps start: the poll interval, or longer if the pages would be too many."""
        rate = self._other_per_minute * LIST_SHARE / 60.0
        paced = self._last_pages / rate if rate > 0 else 0.0
        return max(self._interval, paced)

    async def _join(self, prediction: Prediction, deadline: float | None) -> Prediction | None:
        """Wait for the next sweep's word on ``prediction`` (None: it did not show it)."""
        assert prediction.id is not None
        sweep = self._next
        if sweep is None:
            sweep = self._next = _Sweep(asyncio.get_running_loop().create_future())
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name="kkiai-follower")
        sweep.wanted[prediction.id] = prediction
        timeout = None if deadline is None else max(deadline - self._clock(), 0.0)
        try:
            # shield: one waiter giving up (its deadline, Ctrl-C) must not end the sweep for the others
            seen = await asyncio.wait_for(asyncio.shield(sweep.done), timeout)
        except asyncio.TimeoutError:
            sweep.wanted.pop(prediction.id, None)
            return prediction  # unchanged: the caller sees its deadline has passed
        return seen.get(prediction.id)

    async def _run(self) -> None:
        """Run sweeps while predictions join them."""
        while self._next is not None:
            pause = self._last_start + self.interval() - self._clock()
            if pause > 0:
                await self._sleep(pause)
            sweep, self._next = self._next, None
            self._last_start = self._clock()
            try:
                seen = await self._sweep(sweep.wanted) if sweep.wanted else {}
            except asyncio.CancelledError:  # the client is closing
                sweep.done.cancel()
                raise
            except Exception as exc:  # an ApiError, or a bug here: either way, polls take over
                if not isinstance(exc, KkiaiError):
                    log.exception("following predictions through the list failed")
                log.info("the list of predictions failed (%s): following each prediction on its own", exc)
                self.listing = False
                seen = {}
            if not sweep.done.done():
                sweep.done.set_result(seen)

    async def _sweep(self, wanted: dict[str, Prediction]) -> dict[str, Prediction]:
        """Page the list down to the oldest prediction wanted; the wanted ones it shows, parsed."""
        self.stats.sweeps += 1
        times = [created for p in wanted.values() if (created := _created(p)) is not None]
        margin = timedelta(seconds=1)  # created_at may be rounded
        # Only the span of the predictions waited for: not the newest, still held by their creates.
        params = {
            "created_after": rfc3339(min(times) - margin),
            "created_before": rfc3339(max(times) + margin),
        }
        seen: dict[str, Prediction] = {}
        pages = 0
        async with contextlib.aclosing(self._pages(params)) as listing:
            async for results in listing:
                pages += 1
                for item in results:
                    found = _usable(item, wanted)
                    if found is not None:
                        seen[found.id or ""] = found
                if len(seen) == len(wanted) or pages >= MAX_SWEEP_PAGES:
                    break
        self.stats.pages += pages
        self.stats.answered += len(seen)
        self._last_pages = max(pages, 1)
        return seen


def _created(prediction: Prediction) -> datetime | None:
    return parse_timestamp(prediction.created_at) if prediction.created_at else None


def _usable(item: Any, wanted: dict[str, Prediction]) -> Prediction | None:
    """The listed state of a wanted prediction, or None (not wanted, unusable, or less than a GET)."""
    if not isinstance(item, dict):
        return None
    item_id = item.get("id")
    if not isinstance(item_id, str) or item_id not in wanted or not PREDICTION_ID.fullmatch(item_id):
        return None
    try:
        listed = parse_prediction(item)
    except ValueError:
        return None
    if listed.id != item_id or (listed.status == "succeeded" and listed.output is None):
        return None  # a list may leave outputs out: a GET tells
    return listed

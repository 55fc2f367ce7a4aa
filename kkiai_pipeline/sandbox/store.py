"""Predictions and their lifecycle.

A prediction's status is not advanced by a task of its own: it is derived, whenever someone asks,
from its timestamps and from whether its files are drawn yet (see ``Store.snapshot``)::

    starting    for queue_seconds after creation
    processing  for predict_seconds after that, and for as long as the files are still being drawn
    succeeded   output files ready
    failed      the input carried the fail marker, an unusable file, the stand-in model refused it, or
                a failure was injected (at the end of processing, or when it should have started)
    canceled    cancel was called before it reached one of the other terminal states, or its
                ``Cancel-After`` deadline passed while it was processing
    aborted     its deadline passed while it was still starting; only predictions created with a
                deadline can end so, which keeps clients that predate ``aborted`` working

Files are drawn in a thread pool as soon as the prediction is created, so the event loop stays free
and thousands of predictions can be in flight at once. The store is used from the server's event loop
only (the render callbacks run there too), so it needs no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import string
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal

from ..catalog import ModelSpec
from . import models
from .models import OutputFile

Status = Literal["starting", "processing", "succeeded", "failed", "canceled", "aborted"]
STATUSES: tuple[Status, ...] = ("starting", "processing", "succeeded", "failed", "canceled", "aborted")
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "aborted"})

_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_LENGTH = 26


def new_id() -> str:
    """A random prediction id: 26 lowercase letters and digits, like Replicate's."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def model_error(reason: str) -> str:
    """The ``error`` text of a prediction the sandbox failed on purpose or could not run."""
    return f"E1000 Prediction failed (sandbox: {reason})"


@dataclass(frozen=True)
class RenderResult:
    """What the thread pool hands back: the files, or why there are none, and when it finished."""

    files: tuple[OutputFile, ...]
    error: str | None
    finished: float


@dataclass(eq=False)
class Prediction:
    """One prediction as the store keeps it; times are on the store's monotonic clock.

    ``planned_error`` fails it at ``due`` (after processing), or at ``started`` without ever processing
    when ``fails_starting``. ``deadline`` comes from ``Cancel-After``; once it passes, ``canceled_at``
    holds it and ``aborted`` says whether the prediction had not started by then.
    """

    id: str
    model: ModelSpec
    input: dict[str, Any]
    seed: int
    steps: int
    created: float
    started: float
    due: float
    sequence: int
    planned_error: str | None = None
    fails_starting: bool = False
    deadline: float | None = None
    render: asyncio.Future[RenderResult] | None = None
    canceled_at: float | None = None
    aborted: bool = False
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class Snapshot:
    """A prediction's state at one instant."""

    status: Status
    started: float | None = None
    completed: float | None = None
    files: tuple[OutputFile, ...] = ()
    error: str | None = None
    progress: float = 0.0


class Store:
    """All predictions of one sandbox, with their files."""

    def __init__(
        self,
        *,
        queue_seconds: float,
        predict_seconds: float,
        executor: Executor,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue_seconds = queue_seconds
        self._predict_seconds = predict_seconds
        self._executor = executor
        self._clock = clock
        self._epoch = time.time() - clock()
        self._predictions: dict[str, Prediction] = {}
        self._mark = 0
        self._released = asyncio.Event()

    def now(self) -> float:
        """The store's clock."""
        return self._clock()

    def wall(self, moment: float) -> float:
        """``moment`` (store clock) as seconds since the Unix epoch."""
        return self._epoch + moment

    def create(
        self,
        model: ModelSpec,
        input: Mapping[str, Any],
        *,
        files: Mapping[str, bytes],
        planned_error: str | None = None,
        fails_starting: bool = False,
        cancel_after: float | None = None,
    ) -> Prediction:
        """A new prediction; its files start being drawn at once unless it is meant to fail.

        ``cancel_after`` (seconds from now) sets its deadline. Must be called from the running event loop.
        """
        now = self._clock()
        prediction = Prediction(
            id=new_id(),
            model=model,
            input=dict(sorted(input.items())),
            seed=models.seed_for(model, input),
            steps=models.steps_for(model, input),
            created=now,
            started=now + self._queue_seconds,
            due=now + self._queue_seconds + self._predict_seconds,
            sequence=len(self._predictions),
            planned_error=planned_error,
            fails_starting=planned_error is not None and fails_starting,
            deadline=None if cancel_after is None else now + cancel_after,
        )
        if planned_error is None:
            prediction.render = self._submit(prediction, dict(files))
        self._predictions[prediction.id] = prediction
        return prediction

    def _submit(self, prediction: Prediction, files: dict[str, bytes]) -> asyncio.Future[RenderResult]:
        def job() -> RenderResult:
            if prediction.canceled_at is not None:
                return RenderResult((), "canceled", self._clock())
            try:
                outputs = models.predict(
                    prediction.model, prediction.input, seed=prediction.seed, files=files
                )
            except models.ModelError as exc:
                return RenderResult((), model_error(str(exc)), self._clock())
            except Exception as exc:  # a bug in a stand-in must fail the prediction, not hang it
                return RenderResult((), model_error(f"{type(exc).__name__}: {exc}"), self._clock())
            return RenderResult(tuple(outputs), None, self._clock())

        return asyncio.get_running_loop().run_in_executor(self._executor, job)

    def get(self, prediction_id: str) -> Prediction | None:
        """The prediction with this id, or None."""
        return self._predictions.get(prediction_id)

    def page(
        self, *, offset: int, limit: int, created_after: float | None = None
    ) -> tuple[list[Prediction], bool]:
        """Predictions newest first, from ``offset``, at most ``limit``; and whether more follow.

        ``created_after`` is a Unix time: older predictions are left out, as the API's filter does.
        """
        newest = list(reversed(self._predictions.values()))
        if created_after is not None:
            newest = [p for p in newest if self.wall(p.created) >= created_after]
        return newest[offset : offset + limit], offset + limit < len(newest)

    def file(self, prediction_id: str, name: str) -> OutputFile | None:
        """An output file of a succeeded prediction, or None."""
        prediction = self._predictions.get(prediction_id)
        if prediction is None:
            return None
        snapshot = self.snapshot(prediction)
        return next((f for f in snapshot.files if f.name == name), None)

    def cancel(self, prediction: Prediction) -> None:
        """Cancels ``prediction`` unless it already reached a terminal state."""
        if self.snapshot(prediction).status in TERMINAL:
            return
        prediction.canceled_at = self._clock()
        prediction.cancel_event.set()
        if prediction.render is not None:
            prediction.render.cancel()

    def snapshot(self, prediction: Prediction) -> Snapshot:
        """The state of ``prediction`` now."""
        now = self._clock()
        p = prediction
        if p.canceled_at is None:
            natural = self._natural(p, now)
            if not self._missed_deadline(p, natural, now):
                return natural
            self._expire(p)
        assert p.canceled_at is not None
        if p.aborted:
            return Snapshot("aborted", completed=p.canceled_at)
        started = p.started if p.canceled_at >= p.started else None
        return Snapshot("canceled", started=started, completed=p.canceled_at)

    def _natural(self, p: Prediction, now: float) -> Snapshot:
        """The state of ``p`` if nobody cancels it and no deadline stops it."""
        if p.fails_starting and now >= p.started:
            return Snapshot("failed", completed=p.started, error=p.planned_error)
        if now < p.started:
            return Snapshot("starting")
        if now < p.due:
            progress = (now - p.started) / (p.due - p.started)
            return Snapshot("processing", started=p.started, progress=progress)
        if p.planned_error is not None:
            return Snapshot("failed", started=p.started, completed=p.due, error=p.planned_error, progress=1.0)
        result = _result(p.render, now)
        if result is None:
            return Snapshot("processing", started=p.started, progress=1.0)
        completed = max(p.due, result.finished)
        if result.error is not None:
            return Snapshot(
                "failed", started=p.started, completed=completed, error=result.error, progress=1.0
            )
        return Snapshot("succeeded", started=p.started, completed=completed, files=result.files, progress=1.0)

    @staticmethod
    def _missed_deadline(p: Prediction, natural: Snapshot, now: float) -> bool:
        """Whether ``p`` has a deadline that passed before it reached a terminal state."""
        if p.deadline is None or now < p.deadline:
            return False
        return natural.completed is None or natural.completed > p.deadline

    def _expire(self, p: Prediction) -> None:
        """Stops ``p`` at its deadline, for good: aborted if it had not started by then, else canceled."""
        assert p.deadline is not None
        p.canceled_at = p.deadline
        p.aborted = p.deadline < p.started
        p.cancel_event.set()
        if p.render is not None:
            p.render.cancel()

    async def settle(self, prediction: Prediction, timeout: float) -> Snapshot:
        """Waits (without blocking the loop) until ``prediction`` is terminal or ``timeout`` passed."""
        until = self._clock() + timeout
        canceled = asyncio.ensure_future(prediction.cancel_event.wait())
        released = asyncio.ensure_future(self._released.wait())
        try:
            while (snapshot := self.snapshot(prediction)).status not in TERMINAL:
                now = self._clock()
                if now >= until or self._released.is_set():
                    return snapshot
                waiting: set[asyncio.Future[Any]] = {canceled, released}
                if now >= prediction.due and prediction.render is not None:
                    waiting.add(prediction.render)
                wake = min(until, _next_change(prediction, now))
                await asyncio.wait(waiting, timeout=wake - now, return_when=asyncio.FIRST_COMPLETED)
            return snapshot
        finally:
            canceled.cancel()
            released.cancel()

    async def idle(self, seconds: float) -> None:
        """Sleeps ``seconds`` without blocking the loop, or less if the server starts stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._released.wait(), timeout=seconds)

    def release_waiters(self) -> None:
        """Makes every ``settle``, pending or future, return at once: the server is stopping."""
        self._released.set()

    def reset_counts(self) -> None:
        """Counts from now on only the predictions created after this call (files stay served)."""
        self._mark = len(self._predictions)

    def counts(self) -> dict[str, int]:
        """``total`` and one count per status, of the predictions created since the last reset."""
        counts = dict.fromkeys(("total", *STATUSES), 0)
        for prediction in list(self._predictions.values())[self._mark :]:
            counts["total"] += 1
            counts[self.snapshot(prediction).status] += 1
        return counts


def _next_change(p: Prediction, now: float) -> float:
    """The next moment after ``now`` at which the clock alone may change the status of ``p``."""
    moments = [p.due, p.deadline, p.started if p.fails_starting else None]
    upcoming = [moment for moment in moments if moment is not None and moment > now]
    return min(upcoming, default=float("inf"))


def _result(render: asyncio.Future[RenderResult] | None, now: float) -> RenderResult | None:
    """The render's result once it is done; a cancelled render (server shutdown) is a failure."""
    if render is None or not render.done():
        return None
    if render.cancelled():
        return RenderResult((), model_error("the sandbox stopped before the files were drawn"), now)
    return render.result()

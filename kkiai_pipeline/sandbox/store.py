"""Predictions and their lifecycle, kept in the persistent store (``database``).

A prediction's status is not advanced by a task of its own: it is derived, whenever someone asks,
from its recorded timestamps and from whether its files are drawn yet (see ``Store.snapshot``)::

    starting    for queue_seconds after creation
    processing  for predict_seconds after that, and for as long as the files are still being drawn
    succeeded   output files ready
    failed      the input carried the fail marker, an unusable file, the stand-in model refused it, or
                a failure was injected (at the end of processing, or when it should have started)
    canceled    cancel was called before it reached one of the other terminal states, or its
                ``Cancel-After`` deadline passed while it was processing
    aborted     its deadline passed while it was still starting; only predictions created with a
                deadline can end so, which keeps clients that predate ``aborted`` working

Retention, as the service does it: ``file_ttl`` seconds after a prediction completed its output files
are gone; it then reports ``data_removed`` and no output, and its file URLs answer 404.

Files are drawn in a thread pool as soon as the prediction is created, so the event loop stays free
and thousands of predictions can be in flight at once; the drawing thread records the outcome and the
files in one transaction. Because everything is recorded, any sandbox process using the same store
answers for any prediction. One that finds a prediction past its predict time with no files yet, and
whose owner (the process that created it) is no longer running, draws them itself: the prediction
ends as it would have, had its process lived, as the service's predictions do when a client dies.

The store is used from the server's event loop (the drawing threads only record outcomes), so the
process-local state (drawings under way, waiters) needs no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import string
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..catalog import ModelSpec
from . import inputs, models
from .database import Cursor, Database
from .models import OutputFile
from .records import FileRef, Prediction

Status = Literal["starting", "processing", "succeeded", "failed", "canceled", "aborted"]
STATUSES: tuple[Status, ...] = ("starting", "processing", "succeeded", "failed", "canceled", "aborted")
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled", "aborted"})

#: How often a ``Prefer: wait`` re-reads its prediction, to see what other processes did to it.
RECHECK_SECONDS = 1.0
#: How long the answer to "is that owner still running?" is trusted.
OWNER_CHECK_SECONDS = 1.0

_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_LENGTH = 26


def new_id() -> str:
    """A random prediction id: 26 lowercase letters and digits, like Replicate's."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def model_error(reason: str) -> str:
    """The ``error`` text of a prediction the sandbox failed on purpose or could not run."""
    return f"E1000 Prediction failed (sandbox: {reason})"


@dataclass(frozen=True)
class Snapshot:
    """A prediction's state at one instant.

    ``files`` are those it made (for its metrics); once ``removed`` by retention they are not served.
    """

    status: Status
    started: float | None = None
    completed: float | None = None
    files: tuple[FileRef, ...] = ()
    error: str | None = None
    progress: float = 0.0
    removed: bool = False


class Store:
    """All predictions of a persistent store, as one sandbox process sees and serves them."""

    def __init__(
        self,
        database: Database,
        *,
        queue_seconds: float,
        predict_seconds: float,
        file_ttl: float,
        executor: Executor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = database
        self._queue_seconds = queue_seconds
        self._predict_seconds = predict_seconds
        self._file_ttl = file_ttl
        self._executor = executor
        self._clock = clock
        self._token = new_id()
        self._renders: dict[str, asyncio.Future[None]] = {}
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._owners: dict[str, tuple[float, bool]] = {}
        self._mine: list[str] = []
        self._mark = 0
        self._purged = float("-inf")
        self._released = asyncio.Event()
        database.register(self._token)
        self.purge()

    def close(self) -> None:
        """Records that this process stopped, so that others draw what it left unfinished."""
        self._db.unregister(self._token)

    def now(self) -> float:
        """The store's clock: a Unix time."""
        return self._clock()

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
        """A new prediction, recorded; its files start being drawn at once unless it is meant to fail.

        ``cancel_after`` (seconds from now) sets its deadline. Must be called from the running event loop.
        """
        # To the microsecond, as ``created_at`` shows it: a client filtering the list by the very
        # ``created_at`` it was shown must find the prediction on the right side of it.
        now = round(self._clock(), 6)
        prediction = Prediction(
            id=new_id(),
            model=model,
            input=dict(sorted(input.items())),
            seed=models.seed_for(model, input),
            steps=models.steps_for(model, input),
            created=now,
            started=now + self._queue_seconds,
            due=now + self._queue_seconds + self._predict_seconds,
            owner=self._token,
            planned_error=planned_error,
            fails_starting=planned_error is not None and fails_starting,
            deadline=None if cancel_after is None else now + cancel_after,
        )
        self._db.insert(prediction)
        self._mine.append(prediction.id)
        if planned_error is None:
            self._draw(prediction, dict(files))
        if now - self._purged >= min(max(self._file_ttl, 1.0), 60.0):
            self.purge()
        return prediction

    def _draw(self, prediction: Prediction, files: Mapping[str, bytes] | None) -> None:
        """Draws the files in the thread pool; ``files=None`` resolves the input files there first."""

        def job() -> None:
            if self._db.stopped(prediction.id):
                return
            outputs, error = _run(prediction, files, self._kept_file)
            self._db.finish(prediction.id, files=outputs, error=error, clock=self._clock)

        try:
            render = asyncio.get_running_loop().run_in_executor(self._executor, job)
        except RuntimeError:  # no loop, or the pool is shut down: the server is stopping
            return
        self._renders[prediction.id] = render
        render.add_done_callback(lambda done: self._drawn(prediction.id, done))

    def _drawn(self, prediction_id: str, render: asyncio.Future[None]) -> None:
        self._renders.pop(prediction_id, None)
        if not render.cancelled():
            render.exception()  # retrieved: a failed record is drawn again by whoever asks next

    def rendering(self, prediction_id: str) -> asyncio.Future[None] | None:
        """The drawing of the prediction's files in this process, while it runs."""
        return self._renders.get(prediction_id)

    def lookup(self, prediction_id: str) -> tuple[Prediction, Snapshot] | None:
        """The prediction with this id and its state now, or None."""
        prediction = self._db.load(prediction_id)
        return None if prediction is None else self._state(prediction)

    def snapshot(self, prediction_id: str) -> Snapshot:
        """The state now of a prediction known to exist."""
        found = self.lookup(prediction_id)
        assert found is not None, prediction_id
        return found[1]

    def page(
        self,
        *,
        limit: int,
        after: Cursor | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> tuple[list[tuple[Prediction, Snapshot]], Cursor | None]:
        """Predictions newest first, after the cursor ``after``, at most ``limit``; and the next cursor.

        ``created_after`` and ``created_before`` are Unix times, filtering as the API's do.
        """
        predictions, next_cursor = self._db.page(
            limit=limit, after=after, created_after=created_after, created_before=created_before
        )
        return [self._state(p) for p in predictions], next_cursor

    def file(self, prediction_id: str, name: str) -> OutputFile | None:
        """An output file of a succeeded prediction whose data is still kept, or None."""
        found = self.lookup(prediction_id)
        return None if found is None else self._content(found[1], prediction_id, name)

    def _kept_file(self, prediction_id: str, name: str) -> OutputFile | None:
        """``file`` for the drawing threads: reads the record and changes nothing."""
        prediction = self._db.load(prediction_id)
        if prediction is None:
            return None
        return self._content(self._state(prediction, act=False)[1], prediction_id, name)

    def _content(self, snapshot: Snapshot, prediction_id: str, name: str) -> OutputFile | None:
        if snapshot.status != "succeeded" or snapshot.removed:
            return None
        ref = next((f for f in snapshot.files if f.name == name), None)
        content = None if ref is None else self._db.content(prediction_id, name)
        return None if ref is None or content is None else OutputFile(name, content, ref.media_type)

    def cancel(self, prediction_id: str) -> None:
        """Cancels the prediction unless it already reached a terminal state."""
        found = self.lookup(prediction_id)
        if found is None or found[1].status in TERMINAL:
            return
        self._stop(found[0].id, at=self._clock(), aborted=False)

    def _stop(self, prediction_id: str, *, at: float, aborted: bool) -> None:
        self._db.stop(prediction_id, at=at, aborted=aborted)
        render = self._renders.get(prediction_id)
        if render is not None:
            render.cancel()
        for waiter in self._waiters.get(prediction_id, ()):
            waiter.set()

    def _state(self, p: Prediction, *, act: bool = True) -> tuple[Prediction, Snapshot]:
        """``p`` and its state now; unless told not to ``act``, records a deadline that just passed,
        and draws the files of orphans."""
        now = self._clock()
        if p.canceled_at is None:
            natural = self._natural(p, now, act=act)
            if not _missed_deadline(p, natural, now):
                return p, self._retained(natural, now)
            p = self._expire(p) if act else _expired(p)
        assert p.canceled_at is not None
        if p.aborted:
            return p, self._retained(Snapshot("aborted", completed=p.canceled_at), now)
        started = p.started if p.canceled_at >= p.started else None
        return p, self._retained(Snapshot("canceled", started=started, completed=p.canceled_at), now)

    def _natural(self, p: Prediction, now: float, *, act: bool) -> Snapshot:
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
        outcome = p.outcome
        if outcome is None:
            if act:
                self._adopt(p, now)
            return Snapshot("processing", started=p.started, progress=1.0)
        completed = max(p.due, outcome.finished)
        if outcome.error is not None:
            return Snapshot(
                "failed", started=p.started, completed=completed, error=outcome.error, progress=1.0
            )
        files = outcome.files
        return Snapshot("succeeded", started=p.started, completed=completed, files=files, progress=1.0)

    def _retained(self, snapshot: Snapshot, now: float) -> Snapshot:
        """``snapshot``, marked removed once ``file_ttl`` has passed since it completed."""
        if snapshot.completed is None or now < snapshot.completed + self._file_ttl:
            return snapshot
        return replace(snapshot, removed=True)

    def _expire(self, p: Prediction) -> Prediction:
        """Stops ``p`` at its deadline, for good: aborted if it had not started by then, else canceled."""
        expired = _expired(p)
        self._stop(p.id, at=expired.canceled_at or 0.0, aborted=expired.aborted)
        # Another process may have recorded its own stop first: the record says which one holds.
        return self._db.load(p.id) or expired

    def _adopt(self, p: Prediction, now: float) -> None:
        """Draws the files of ``p`` here if nobody is drawing them: its process stopped or died."""
        if p.id in self._renders:
            return
        if p.owner != self._token and self._owner_alive(p.owner, now):
            return
        self._draw(p, None)

    def _owner_alive(self, token: str, now: float) -> bool:
        checked = self._owners.get(token)
        if checked is None or now - checked[0] >= OWNER_CHECK_SECONDS:
            checked = (now, self._db.owner_alive(token))
            self._owners[token] = checked
        return checked[1]

    async def settle(self, prediction_id: str, timeout: float) -> tuple[Prediction, Snapshot]:
        """Waits (without blocking the loop) until the prediction is terminal or ``timeout`` passed."""
        until = self._clock() + timeout
        changed = asyncio.Event()
        self._waiters.setdefault(prediction_id, set()).add(changed)
        waits = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(self._released.wait())]
        try:
            while True:
                found = self.lookup(prediction_id)
                assert found is not None, prediction_id
                p, snapshot = found
                now = self._clock()
                if snapshot.status in TERMINAL or now >= until or self._released.is_set():
                    return found
                waiting: set[asyncio.Future[Any]] = set(waits)
                render = self._renders.get(prediction_id)
                if now >= p.due and render is not None:
                    waiting.add(render)
                wake = min(until, _next_change(p, now), now + RECHECK_SECONDS)
                await asyncio.wait(waiting, timeout=wake - now, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            waiters = self._waiters.get(prediction_id, set())
            waiters.discard(changed)
            if not waiters:
                self._waiters.pop(prediction_id, None)

    async def idle(self, seconds: float) -> None:
        """Sleeps ``seconds`` without blocking the loop, or less if the server starts stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._released.wait(), timeout=seconds)

    def release_waiters(self) -> None:
        """Makes every ``settle``, pending or future, return at once: the server is stopping."""
        self._released.set()

    def purge(self) -> None:
        """Removes the files that retention no longer keeps (they are not served either way)."""
        now = self._clock()
        self._purged = now
        self._db.purge(completed_by=now - self._file_ttl)

    def reset_counts(self) -> None:
        """Counts from now on only the predictions created after this call (files stay served)."""
        self._mark = len(self._mine)

    def counts(self) -> dict[str, int]:
        """``total`` and one count per status, of this process's predictions since the last reset."""
        counts = dict.fromkeys(("total", *STATUSES), 0)
        for prediction in self._db.load_many(self._mine[self._mark :]):
            counts["total"] += 1
            counts[self._state(prediction)[1].status] += 1
        return counts


def _run(
    p: Prediction, files: Mapping[str, bytes] | None, lookup: inputs.FileLookup
) -> tuple[list[OutputFile], str | None]:
    """Runs the stand-in model of ``p``: its files, or the error it fails with."""
    try:
        if files is None:
            files = inputs.resolve_files(p.model, p.input, lookup)
        return models.predict(p.model, p.input, seed=p.seed, files=files), None
    except (models.ModelError, inputs.InputFileError) as exc:
        return [], model_error(str(exc))
    except Exception as exc:  # a bug in a stand-in must fail the prediction, not hang it
        return [], model_error(f"{type(exc).__name__}: {exc}")


def _expired(p: Prediction) -> Prediction:
    """``p`` stopped at its deadline: aborted if it had not started by then, else canceled."""
    assert p.deadline is not None
    return replace(p, canceled_at=p.deadline, aborted=p.deadline < p.started)


def _missed_deadline(p: Prediction, natural: Snapshot, now: float) -> bool:
    """Whether ``p`` has a deadline that passed before it reached a terminal state."""
    if p.deadline is None or now < p.deadline:
        return False
    return natural.completed is None or natural.completed > p.deadline


def _next_change(p: Prediction, now: float) -> float:
    """The next moment after ``now`` at which the clock alone may change the status of ``p``."""
    moments = [p.due, p.deadline, p.started if p.fails_starting else None]
    upcoming = [moment for moment in moments if moment is not None and moment > now]
    return min(upcoming, default=float("inf"))

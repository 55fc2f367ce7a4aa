"""Getting the result of a prediction key: the one place that decides whether to pay.

:meth:`Purchaser.obtain` takes an :class:`Order` (a key and what to send) and returns a
:class:`Receipt` (the prediction and its stored files). It carries on from whatever the ledger holds
for the key, so a rerun, a resume, another job of a sweep or another process all take the same path:

- ``stored``: reused, nothing sent;
- busy under another live owner (another process): waited for, then reused;
- ``created``: followed by id (re-attached), never created again;
- ``succeeded``: its files fetched again by id; if the service deleted them, the step says so and
  pays again only with ``repay_expired=true``;
- ``sending`` / ``unresolved`` (a create whose answer was lost): looked for in the service's list by
  the server's clock; sent again only on proof of absence (a complete scan of the window, made after
  the list's lag has passed); otherwise it stays ``unresolved`` and nothing is sent;
- nothing yet, ``intended`` or ``failed``: created.

Within one process, orders for the same key share one acquisition: two steps, items or jobs that need
the same prediction pay for it once, and each gets the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, NoReturn

from .api.backend import PredictionBackend
from .api.client import ClientOptions
from .api.prediction import Prediction, output_urls
from .artifacts import Downloader, all_or_none, private_outputs_allowed
from .catalog import OutputKind
from .errors import (
    AmbiguousCreateError,
    DeadlineExceeded,
    DownloadError,
    KkiaiError,
    OutputsExpired,
    PredictionFailed,
    UnresolvedCreate,
)
from .inflight import ClusterClaims
from .ledger import Entry, Ledger, PredictionKey, StoredFile
from .outputs import as_declared, kept_output

log = logging.getLogger(__name__)

OnInterrupt = Literal["cancel", "leave"]
How = Literal["created", "reused", "shared", "reattached", "recovered"]
MAX_RESENDS = 3  # creates sent again after their absence was proven, per order
WAIT_OTHER_SECONDS = 0.5  # how often a key another process is working on is looked at again
LOOKUP_PAUSE_SECONDS = 2.0  # between looks at a list that may lag
CANCEL_SECONDS = 1.5  # a cancel (on a timeout or Ctrl-C) gets this long
INTERRUPT_LOOKUP_SECONDS = 3.0  # on Ctrl-C, a create without an answer is looked for this long
MAX_DOWNLOADS = 8  # files of one prediction fetched at once (and api.max_downloads_in_flight in all)


@dataclass(frozen=True)
class PurchaseOptions:
    """How hard to look before paying, and what Ctrl-C does to running predictions."""

    list_lag_seconds: float = 60.0
    clock_skew_seconds: float = 300.0
    repay_expired: bool = False
    on_interrupt: OnInterrupt = "cancel"


@dataclass(frozen=True)
class Order:
    """One prediction to obtain: its key, where it runs and exactly what is sent."""

    key: PredictionKey
    backend: str
    input: Mapping[str, Any]
    timeout: float
    streams: bool = False  # the model streams its output: a Prefer: wait answer is not final
    output_kind: OutputKind | None = None  # the model's declared output: one file or a list
    label: str = ""  # for messages: "cutout" or "cutout[2]"


@dataclass(frozen=True)
class Receipt:
    """What an order got: the prediction, its output as the service gave it, its stored files."""

    key: str
    how: How
    prediction: Prediction
    files: tuple[StoredFile, ...]
    urls: tuple[str, ...]  # the output's file URLs, in the order of ``files``
    fresh: bool  # the URLs came from the service during this process (later steps may use them)


class Purchaser:
    """Obtains orders over ``backends`` (by name), recording every move in ``ledger``."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        backends: Mapping[str, PredictionBackend],
        downloader: Downloader,
        options: PurchaseOptions,
        claims: ClusterClaims | None = None,
    ) -> None:
        self.ledger = ledger
        self.backends = backends
        self.downloader = downloader
        self.options = options
        self._inflight: dict[str, asyncio.Task[Receipt]] = {}
        self.creates = 0  # creates this purchaser sent (attempts the API may bill)
        self.claims = claims  # who buys which key across the machines of a Ray cluster (or None)

    async def obtain(self, order: Order) -> Receipt:
        """The result of ``order``'s key: reused, shared, re-attached, recovered or, if need be, paid."""
        digest = order.key.digest
        task = self._inflight.get(digest)
        shared = task is not None
        if task is None:
            task = asyncio.create_task(self._acquire(order), name=f"acquire {order.label}")
            self._inflight[digest] = task
            task.add_done_callback(lambda done: self._forget(digest, done))
        receipt = await asyncio.shield(task)
        return dataclasses.replace(receipt, how="shared") if shared else receipt

    def _forget(self, digest: str, task: asyncio.Task[Receipt]) -> None:
        if self._inflight.get(digest) is task:
            del self._inflight[digest]
        if not task.cancelled():
            task.exception()  # retrieved here: every consumer gets it through its own await

    async def abandon(self, key: str, *, budget: float) -> Entry | None:
        """On Ctrl-C: stop working on ``key`` (its prediction canceled or left, as configured) and
        return what the ledger then holds for it. Takes at most about ``budget`` seconds."""
        task = self._inflight.get(key)
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=budget)
        return await self.ledger.get(key)

    # -- the decision ----------------------------------------------------------------------------

    async def _acquire(self, order: Order) -> Receipt:
        while True:
            claim = await self.ledger.claim(order.key)
            entry = claim.entry
            if entry is not None and entry.state == "stored" and not claim.mine:
                log.info("%s: reusing prediction %s, nothing created", order.label, entry.prediction_id)
                return self._reused(entry)
            if claim.mine:
                if self.claims is not None and (entry is None or entry.state in ("intended", "failed")):
                    return await self._claimed_in_cluster(order, self.claims, entry)
                return await self._carry_on(order, entry)
            await asyncio.sleep(WAIT_OTHER_SECONDS)  # another process is creating it: wait, never pay twice

    async def _claimed_in_cluster(self, order: Order, claims: ClusterClaims, entry: Entry | None) -> Receipt:
        """Nothing sent for this key from here: follow another machine's prediction of it, or buy it
        and tell the cluster (see :mod:`.inflight`)."""
        digest = order.key.digest
        while (holder := await claims.claim(digest)) is not None and self.backends[order.backend].reattach:
            if holder.prediction_id is not None:
                return await self._follow_theirs(order, claims, holder.prediction_id)
            await asyncio.sleep(WAIT_OTHER_SECONDS)  # their create is on its way: wait, never pay twice
        try:
            receipt = await self._carry_on(order, entry)
        except Exception:
            await claims.done(digest, stored=False)
            raise
        await claims.done(digest, stored=True)
        return receipt

    async def _follow_theirs(self, order: Order, claims: ClusterClaims, prediction_id: str) -> Receipt:
        log.info("%s: prediction %s is bought on another machine; following it", order.label, prediction_id)
        prediction = await self.backends[order.backend].get(prediction_id)
        await self._created(order, prediction)  # a resume re-attaches to it, never creates
        try:
            return await self._follow(order, prediction, how="shared")
        except PredictionFailed:
            await claims.failed(order.key.digest, prediction_id)
            raise

    async def aclose(self) -> None:
        """Release this process's claims in the cluster (predictions still running stay followable)."""
        if self.claims is not None:
            await self.claims.aclose()

    async def _carry_on(self, order: Order, entry: Entry | None) -> Receipt:
        backend = self.backends[order.backend]
        state = entry.state if entry is not None else "intended"
        if entry is not None and entry.prediction_id and state in ("stored", "succeeded", "expired"):
            if state == "expired" and self.options.repay_expired:
                log.warning("%s: paying again for expired prediction %s", order.label, entry.prediction_id)
                return await self._create(order)
            return await self._recover(order, entry)
        if entry is not None and state == "created" and entry.prediction_id and backend.reattach:
            log.info("%s: re-attaching to prediction %s", order.label, entry.prediction_id)
            prediction = await backend.get(entry.prediction_id)
            return await self._follow(order, prediction, how="reattached")
        if entry is not None and state in ("sending", "unresolved") and backend.lookup:
            found = await self._look_up(order, entry)
            if found is not None:
                await self._created(order, found)
                return await self._follow(order, found, how="reattached")
        return await self._create(order)

    async def _create(self, order: Order) -> Receipt:
        backend = self.backends[order.backend]
        digest = order.key.digest
        for _ in range(MAX_RESENDS + 1):

            async def on_send() -> None:
                self.creates += 1
                # the intent, with when and by which clock, is on disk before the request is
                await self.ledger.move(
                    digest,
                    "sending",
                    sent_at=time.time(),
                    server_offset=backend.server_offset,
                    request=dict(order.input),
                )

            try:
                prediction = await backend.create(
                    order.key.version, order.input, cancel_after=order.timeout, on_send=on_send
                )
            except AmbiguousCreateError as exc:
                log.warning("%s: %s; looking for it before anything else", order.label, exc.reason)
                entry = await self.ledger.get(digest)
                assert entry is not None
                found = await self._look_up(order, entry)
                if found is None:
                    continue  # its absence is proven: sending again pays once
                prediction = found
            except asyncio.CancelledError:
                await self._interrupted_create(order)
                raise
            except KkiaiError as exc:  # refused or unreachable: nothing was created
                await self.ledger.move(digest, "failed", error=str(exc))
                raise
            try:
                await self._created(order, prediction)
            except asyncio.CancelledError:  # Ctrl-C while the id is written: _follow's guard is not yet up
                await self._stop(order, prediction)
                raise
            return await self._follow(order, prediction, how="created")
        raise UnresolvedCreate(
            f"{order.label}: {MAX_RESENDS + 1} creates were lost on the way; stopped sending",
            key=digest,
            window=("", ""),
        )

    async def _created(self, order: Order, prediction: Prediction) -> None:
        await self.ledger.move(
            order.key.digest, "created", prediction_id=prediction.id, created_at=prediction.created_at
        )
        if self.claims is not None and prediction.id:
            await self.claims.created(order.key.digest, prediction.id)
        log.info("%s: created prediction %s (%s)", order.label, prediction.id, prediction.status)

    # -- lost creates ------------------------------------------------------------------------------

    async def _look_up(self, order: Order, entry: Entry) -> Prediction | None:
        """The prediction a lost create made; None only on proof that it never arrived.

        Raises UnresolvedCreate when absence cannot be proven (no usable list), after recording it.
        """
        backend = self.backends[order.backend]
        sent = entry.sent_at if entry.sent_at is not None else time.time()
        offset = entry.server_offset if entry.server_offset is not None else backend.server_offset
        since = sent + offset - self.options.clock_skew_seconds  # on the server's clock
        proof_after = sent + self.options.list_lag_seconds + 1.0  # on ours: the list has caught up
        window = (_iso(since), _iso(sent + offset + self.options.list_lag_seconds))
        while True:
            looked_at = time.time()
            try:
                found = await backend.find_created(
                    order.key.version, _sent(entry, order), since=datetime.fromtimestamp(since, timezone.utc)
                )
            except KkiaiError as exc:
                await self._unresolved(order, window, f"the service's list cannot tell ({exc})")
            if found is not None:
                log.warning("%s: found the lost create's prediction %s", order.label, found.id)
                return found
            if looked_at >= proof_after:
                log.warning(
                    "%s: the lost create never arrived (the list shows none); sending it", order.label
                )
                return None
            await asyncio.sleep(min(LOOKUP_PAUSE_SECONDS, max(proof_after - time.time(), 0.05)))

    async def _unresolved(self, order: Order, window: tuple[str, str], why: str) -> NoReturn:
        message = (
            f"{order.label}: a create may have reached the service and {why}. Nothing was sent again. "
            f"Check the account's predictions for {order.key.version} created between {window[0]} and "
            f"{window[1]}; rerun or resume to look again (key {order.key.digest[:12]})"
        )
        await self.ledger.move(order.key.digest, "unresolved", error=message)
        raise UnresolvedCreate(message, key=order.key.digest, window=window)

    async def _interrupted_create(self, order: Order) -> None:
        """Ctrl-C while a create was on the wire: find it (for a few seconds) and cancel it, or leave it
        ``sending`` for the next run to resolve."""
        entry = await self.ledger.get(order.key.digest)
        backend = self.backends[order.backend]
        if entry is None or entry.state != "sending" or not backend.lookup:
            return
        sent = entry.sent_at or time.time()
        since = sent + (entry.server_offset or 0.0) - self.options.clock_skew_seconds
        give_up = min(
            time.monotonic() + INTERRUPT_LOOKUP_SECONDS,
            time.monotonic() + max(sent + self.options.list_lag_seconds + 1.0 - time.time(), 0.0),
        )
        while True:
            try:
                found = await asyncio.wait_for(
                    backend.find_created(
                        order.key.version,
                        _sent(entry, order),
                        since=datetime.fromtimestamp(since, timezone.utc),
                    ),
                    max(give_up - time.monotonic(), 0.1),
                )
            except (KkiaiError, asyncio.TimeoutError):
                return
            if found is not None:
                await self._created(order, found)
                await self._stop(order, found)
                return
            if time.monotonic() >= give_up:
                return
            await asyncio.sleep(min(0.5, max(give_up - time.monotonic(), 0.0)))

    # -- following ---------------------------------------------------------------------------------

    async def _follow(self, order: Order, prediction: Prediction, *, how: How) -> Receipt:
        deadline = time.monotonic() + order.timeout  # for the prediction and its downloads together
        backend = self.backends[order.backend]
        prediction = _settled(prediction, streams=order.streams)
        theirs = how == "shared"  # another machine's prediction: never ours to cancel
        try:
            prediction = await backend.wait(prediction, deadline=deadline)
        except DeadlineExceeded as exc:
            reason = f"canceled after the step's timeout of {order.timeout:g} s"
            if theirs:
                raise
            prediction = dataclasses.replace(await self._cancel(order, exc.prediction), error=reason)
        except asyncio.CancelledError:
            if not theirs:
                await self._stop(order, prediction)
            raise
        if prediction.status != "succeeded":
            error = prediction.error or f"the prediction ended {prediction.status}"
            await self.ledger.move(order.key.digest, "failed", error=error)
            raise PredictionFailed(
                error,
                prediction_id=prediction.id,
                status=prediction.status,
                logs=prediction.logs,
            )
        await self.ledger.move(
            order.key.digest,
            "succeeded",
            output=kept_output(prediction.output),
            metrics=dict(prediction.metrics),
            completed_at=prediction.completed_at,
        )
        return await self._store(order, prediction, how=how, deadline=deadline)

    async def _stop(self, order: Order, prediction: Prediction) -> None:
        """Ctrl-C while a prediction runs: cancel it (or leave it, as configured); the ledger says which."""
        if prediction.id is None or self.options.on_interrupt == "leave":
            return
        final = await self._cancel(order, prediction)
        if final.status == "succeeded":
            await self.ledger.move(order.key.digest, "succeeded", completed_at=final.completed_at)
        elif final.terminal:
            await self.ledger.move(order.key.digest, "failed", error="canceled when the run was interrupted")

    async def _cancel(self, order: Order, prediction: Prediction) -> Prediction:
        assert prediction.id is not None
        try:
            return await asyncio.wait_for(self.backends[order.backend].cancel(prediction.id), CANCEL_SECONDS)
        except (KkiaiError, asyncio.TimeoutError) as exc:  # reported, never raised over what caused it
            log.error("%s: could not cancel prediction %s: %s", order.label, prediction.id, exc)
            return prediction

    # -- files -------------------------------------------------------------------------------------

    async def _recover(self, order: Order, entry: Entry) -> Receipt:
        """A prediction that succeeded but whose files are not stored: fetch it again by id."""
        backend = self.backends[order.backend]
        assert entry.prediction_id is not None
        if not backend.reattach:
            return await self._create(order)
        log.info("%s: fetching the files of prediction %s again", order.label, entry.prediction_id)
        prediction = _settled(await backend.get(entry.prediction_id), streams=order.streams)
        if prediction.status == "succeeded" and not output_urls(prediction.output):
            if self.options.repay_expired:  # found expired only now: pay now, not on the next run
                log.warning("%s: paying again for expired prediction %s", order.label, prediction.id)
                return await self._create(order)
            await self._expired(order, prediction)
        if not prediction.terminal:
            return await self._follow(order, prediction, how="reattached")
        return await self._store(
            order, prediction, how="recovered", deadline=time.monotonic() + order.timeout
        )

    async def _expired(self, order: Order, prediction: Prediction) -> NoReturn:
        message = (
            f"prediction {prediction.id} succeeded, but the service removed its files before they were "
            "stored; set repay_expired=true to pay for a new prediction"
        )
        await self.ledger.move(order.key.digest, "expired", error=message)
        raise OutputsExpired(message, prediction_id=prediction.id)

    async def _store(self, order: Order, prediction: Prediction, *, how: How, deadline: float) -> Receipt:
        """Check the output, fetch its files (within the caps of the backend's options) and record them.

        The receipt's prediction carries the output in its model's declared kind, which is what later
        steps see and the ledger keeps. An output that cannot be used (ApiError) leaves the ledger
        entry ``succeeded``: a rerun fetches it again by id rather than paying for another.
        """
        backend = self.backends[order.backend]
        found = getattr(backend, "options", None)
        options = found if isinstance(found, ClientOptions) else None
        limits = options or ClientOptions()  # a Cog backend: the default caps
        folder = self.ledger.root / "incoming" / order.key.digest
        slots = asyncio.Semaphore(MAX_DOWNLOADS)
        allow_private = private_outputs_allowed(
            options.allow_private_outputs if options else None, getattr(backend, "base_url", None)
        )
        deadline = min(deadline, time.monotonic() + limits.download_timeout)  # within the step's timeout

        async def fetch(i: int, url: str) -> StoredFile:
            async with slots:
                artifact = await self.downloader.download(
                    url,
                    folder=folder,
                    stem=f"output_{i}",
                    allow_private=allow_private,
                    deadline=deadline,
                    in_flight=limits.max_downloads_in_flight,
                )
            log.info("%s: downloaded %s (%d bytes)", order.label, artifact.url, artifact.bytes)
            self.ledger.adopt(self.downloader.run_dir / artifact.path, artifact.sha256)
            return StoredFile(artifact.sha256, artifact.bytes, artifact.content_type)

        try:
            output = as_declared(
                prediction.output,
                order.output_kind,
                max_depth=limits.max_output_depth,
                max_files=limits.max_output_files,
            )
            urls = tuple(output_urls(output))
            files = tuple(await all_or_none([fetch(i, url) for i, url in enumerate(urls)]))
        except DownloadError:
            again = None
            if backend.reattach and prediction.id:
                with contextlib.suppress(KkiaiError):
                    again = await backend.get(prediction.id)
            # outside the suppress, which would swallow the OutputsExpired this raises
            if again is not None and again.status == "succeeded" and not output_urls(again.output):
                await self._expired(order, again)
            raise
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        prediction = await self._final_metrics(order, dataclasses.replace(prediction, output=output))
        await self.ledger.move(
            order.key.digest,
            "stored",
            prediction_id=prediction.id,
            files=files,
            output=kept_output(output),
            metrics=dict(prediction.metrics),
            error=None,
            completed_at=prediction.completed_at or _iso(time.time()),
        )
        return Receipt(order.key.digest, how, prediction, files, urls, fresh=True)

    async def _final_metrics(self, order: Order, prediction: Prediction) -> Prediction:
        """A ``Prefer: wait`` answer taken as final carries no metrics (no ``predict_time``, the billed
        seconds) and maybe not all its logs: once its files are stored, the prediction is asked for
        once by id, and its metrics, logs and completion time are taken if it says succeeded. Best
        effort: nothing is paid, and an error leaves the prediction as it was."""
        backend = self.backends[order.backend]
        if "predict_time" in prediction.metrics or not prediction.id or not backend.reattach:
            return prediction
        try:
            final = await backend.get(prediction.id)
        except KkiaiError as exc:
            log.info("%s: no metrics for prediction %s: %s", order.label, prediction.id, exc)
            return prediction
        if final.status != "succeeded" or not final.metrics:
            return prediction
        return dataclasses.replace(
            prediction,
            metrics=final.metrics,
            logs=final.logs or prediction.logs,
            completed_at=final.completed_at or prediction.completed_at,
        )

    def _reused(self, entry: Entry) -> Receipt:
        prediction = Prediction(
            id=entry.prediction_id,
            status="succeeded",
            output=entry.output,
            metrics=entry.metrics,
            created_at=entry.created_at,
            completed_at=entry.completed_at,
        )
        return Receipt(entry.key, "reused", prediction, entry.files, tuple(output_urls(entry.output)), False)


def _settled(prediction: Prediction, *, streams: bool) -> Prediction:
    """A ``Prefer: wait`` answer that already holds the whole output, taken as final.

    The API answers a create that finished within the wait with all its files but, as recorded,
    status ``processing``: the files are complete for models whose output does not stream.
    """
    if prediction.status == "processing" and prediction.output is not None and not streams:
        completed = prediction.completed_at or _iso(time.time())
        return dataclasses.replace(prediction, status="succeeded", completed_at=completed)
    return prediction


def _sent(entry: Entry, order: Order) -> Mapping[str, Any]:
    """What a lost create sent: recorded with it (its file URLs may differ from today's rendering)."""
    return entry.request if isinstance(entry.request, Mapping) else order.input


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")

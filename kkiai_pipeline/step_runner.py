"""One step, from its rendered input to stored outputs: cache, create, wait, cancel, retry, download.

Money rules kept here:

- the intent to create is on disk before the POST, and the prediction id right after the answer,
  before anything waits on it (resume re-attaches by id, never creates again);
- a create already sent is never abandoned: on Ctrl-C its answer is awaited so the prediction can be
  canceled (or left running and recorded, as configured);
- past the step's timeout the prediction is canceled (the create also carries ``Cancel-After``);
- ``retries`` runs again only predictions that *failed*; every attempt is recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .api.backend import PredictionBackend
from .api.cog import CogClient
from .api.prediction import Prediction, output_urls, parse_timestamp
from .artifacts import Downloader
from .cache import CacheEntry, PredictionCache, cache_key, files_of
from .errors import AmbiguousCreateError, ApiError, DeadlineExceeded, KkiaiError
from .outputs import content_keys, kept_output, reusable_output
from .planning import PlannedStep
from .rundir import RunRecord, StepRecord, StepStatus, utc_now

log = logging.getLogger(__name__)

OnInterrupt = Literal["cancel", "leave"]
_ENDED: dict[str, StepStatus] = {"succeeded": "succeeded", "canceled": "canceled", "aborted": "aborted"}
CANCEL_GRACE_SECONDS = 15.0
MAX_LOST_CREATES = 5  # how often a create the API's list shows never arrived is sent again
LIST_SETTLE_SECONDS = 0.5


@dataclass(frozen=True)
class Unit:
    """What one prediction is made for: a whole step, or one item of a step's ``foreach``."""

    step: PlannedStep
    rec: StepRecord  # where it is recorded (the step's record, or the item's inside it)
    key: str  # the step id the run's journal files the change under
    label: str  # for messages: "cutout", or "cutout[2]" for an item
    folder: Path  # where its output files go
    item: int | None = None  # the item's index, for a foreach step


@dataclass(frozen=True)
class StepOptions:
    """How steps are run: timeouts, what Ctrl-C does, and the cache."""

    timeout: float = 1800.0  # Replicate stops predictions after 30 min anyway
    on_interrupt: OnInterrupt = "cancel"
    api_identity: str = ""  # part of every cache key: sandbox results never stand in for real ones
    default_backend: str = "api"  # "api" or "cog": where steps without their own `backend:` run


class StepRunner:
    """Runs single steps for an Executor and records them in its RunRecord."""

    def __init__(
        self,
        *,
        backends: Mapping[str, PredictionBackend],
        downloader: Downloader,
        record: RunRecord,
        options: StepOptions,
        cache: PredictionCache | None = None,
    ) -> None:
        self.backends = backends
        self.downloader = downloader
        self.record = record
        self.options = options
        self.cache = cache

    async def run(self, unit: Unit, input: dict[str, Any], *, known: Mapping[str, str]) -> Any:
        """Make ``unit`` succeed if possible; returns its output for later steps (None if it did not)."""
        key = self._key(unit, input, known)
        if key is not None and self.cache is not None:
            entry = self.cache.get(key)
            if entry is not None:
                return self._restore(unit, entry, self.cache)
        prediction = await self._attempts(unit, input)
        if prediction is None or prediction.status != "succeeded":
            return None
        return await self._finish(unit, prediction, key)

    async def reattach(self, unit: Unit, *, known: Mapping[str, str]) -> Any:
        """Continue a step an earlier run left running: follow its prediction by id, never create again.

        If that run crashed between sending the create and storing its answer, the prediction is looked
        up in the API's list by version and input; only when none is found is the step run anew.
        """
        if isinstance(self._backend(unit), CogClient):
            # A Cog server keeps no record to re-attach to once the process that followed it is gone.
            log.warning(
                "step %s: a Cog prediction cannot be followed after a restart; running it again", unit.label
            )
            return await self.run(unit, unit.rec.input or {}, known=known)
        if unit.rec.prediction_id is None:
            found = await self._find_lost_create(unit, unit.rec.input or {})
            if found is None:
                log.warning(
                    "step %s: the interrupted create never reached the API; creating it now", unit.label
                )
                return await self.run(unit, unit.rec.input or {}, known=known)
            self._created(unit, found)
        log.info("step %s: re-attaching to prediction %s", unit.label, unit.rec.prediction_id)
        assert unit.rec.prediction_id is not None
        prediction = await self._backend(unit).get(unit.rec.prediction_id)
        prediction = await self._follow(unit, prediction)
        self._end_attempt(unit, prediction)
        if prediction.status != "succeeded":
            return None
        key = self._key(unit, unit.rec.input or {}, {})
        return await self._finish(unit, prediction, key)

    def _backend(self, unit: Unit) -> PredictionBackend:
        return self.backends[self.backend_name(unit.step)]

    def backend_name(self, step: PlannedStep) -> str:
        """Where ``step`` runs: its own ``backend:``, else the run's default."""
        return step.step.backend or self.options.default_backend

    def _identity(self, unit: Unit) -> str:
        backend = self._backend(unit)
        if isinstance(backend, CogClient):
            return f"cog:{backend.server_url(unit.step.model.version_ref)}"
        return self.options.api_identity

    def _key(self, unit: Unit, input: Mapping[str, Any], known: Mapping[str, str]) -> str | None:
        if self.cache is None or not unit.step.step.cache:
            return None
        canonical = content_keys(input, known)
        return cache_key(
            api=self._identity(unit), version=unit.step.model.version_ref, canonical_input=canonical
        )

    def _restore(self, unit: Unit, entry: CacheEntry, cache: PredictionCache) -> Any:
        folder = unit.folder
        unit.rec.outputs = cache.restore(entry, folder, self.record.run_dir)
        unit.rec.status, unit.rec.cache, unit.rec.cache_key = "succeeded", "hit", entry.key
        unit.rec.prediction_id, unit.rec.output, unit.rec.metrics = (
            entry.prediction_id,
            entry.output,
            dict(entry.metrics),
        )
        unit.rec.completed_at = entry.completed_at
        log.info(
            "step %s: cache hit %s (prediction %s), nothing created",
            unit.label,
            entry.key[:12],
            entry.prediction_id,
        )
        return reusable_output(
            entry.output, unit.rec.outputs, self.record.run_dir, completed_at=entry.completed_at
        )

    async def _attempts(self, unit: Unit, input: dict[str, Any]) -> Prediction | None:
        prediction = None
        for attempt in range(unit.step.step.retries + 1):
            if attempt:
                log.warning(
                    "step %s: prediction failed, retry %d of %d", unit.label, attempt, unit.step.step.retries
                )
            prediction = await self._attempt(unit, input)
            if prediction.status != "failed":
                break
        return prediction

    async def _attempt(self, unit: Unit, input: dict[str, Any]) -> Prediction:
        timeout = unit.step.step.timeout or self.options.timeout
        unit.rec.status, unit.rec.error = "running", None
        prediction = self._settled(unit, await self._create(unit, input, timeout))
        prediction = await self._follow(unit, prediction, deadline=time.monotonic() + timeout)
        self._end_attempt(unit, prediction)
        return prediction

    async def _create(self, unit: Unit, input: dict[str, Any], timeout: float) -> Prediction:
        """Create once, even when answers get lost: a lost create is looked up in the API's list and sent
        again only when the list shows it never arrived."""
        for resend in range(MAX_LOST_CREATES + 1):
            unit.rec.creating_since = utc_now()
            # the intent is on disk before the POST
            self.record.note(unit.key, durable=True, item=unit.item)
            create = asyncio.ensure_future(
                self._backend(unit).create(unit.step.model.version_ref, input, cancel_after=timeout)
            )
            try:
                prediction = await asyncio.shield(create)
            except asyncio.CancelledError:
                # Interrupted while the create was in flight: its answer is the only way to know the id.
                prediction = await create
                self._created(unit, prediction)
                await self._interrupted(unit, prediction)
                raise
            except AmbiguousCreateError:
                found = await self._find_lost_create(unit, input)
                if found is None and resend < MAX_LOST_CREATES:
                    log.warning(
                        "step %s: the create never reached the API (not in its list); sending it again",
                        unit.label,
                    )
                    continue
                if found is None:
                    raise
                prediction = found
            self._created(unit, prediction)
            return prediction
        raise AssertionError("unreachable")

    async def _find_lost_create(self, unit: Unit, input: Mapping[str, Any]) -> Prediction | None:
        """The prediction a create whose answer was lost made, or None if the API's list shows none.

        Raises AmbiguousCreateError when the list cannot tell (it is unavailable, or answers an error).
        """
        since = parse_timestamp(unit.rec.creating_since)
        try:
            if since is None:
                raise ApiError("no time of the create is on record", status_code=0)
            await asyncio.sleep(LIST_SETTLE_SECONDS)  # let the API's list catch up with the create
            found = await self._backend(unit).find_created(unit.step.model.version_ref, input, since=since)
        except KkiaiError as exc:
            reason = f"its answer was lost and the API's list of predictions cannot tell ({exc})"
            raise AmbiguousCreateError(method="POST", path="/predictions", reason=reason) from exc
        if found is not None:
            log.warning(
                "step %s: the create's answer was lost; found its prediction %s", unit.label, found.id
            )
        return found

    def _settled(self, unit: Unit, prediction: Prediction) -> Prediction:
        """A ``Prefer: wait`` answer that already holds the whole output, taken as final.

        The API answers a create that finished within the wait with all its files but, as recorded,
        status ``processing``: the files are complete for models whose output does not stream, so a
        poll would only cost a request and a delay.
        """
        if (
            prediction.status == "processing"
            and prediction.output is not None
            and not unit.step.model.streams
        ):
            return dataclasses.replace(
                prediction, status="succeeded", completed_at=prediction.completed_at or utc_now()
            )
        return prediction

    def _created(self, unit: Unit, prediction: Prediction) -> None:
        unit.rec.prediction_id, unit.rec.creating_since = prediction.id, None
        unit.rec.attempts.append({"prediction_id": prediction.id, "status": prediction.status, "error": None})
        self._note(unit.rec, prediction)
        self.record.note(
            unit.key, durable=True, item=unit.item
        )  # the id is on disk before anything waits on it
        log.info("step %s: created prediction %s (%s)", unit.label, prediction.id, prediction.status)

    async def _follow(
        self, unit: Unit, prediction: Prediction, *, deadline: float | None = None
    ) -> Prediction:
        async def on_update(update: Prediction) -> None:
            log.info("step %s: prediction %s is %s", unit.label, update.id, update.status)
            self._note(unit.rec, update)
            self.record.note(unit.key, item=unit.item)

        try:
            return await self._backend(unit).wait(prediction, on_update=on_update, deadline=deadline)
        except DeadlineExceeded as exc:
            timeout = unit.step.step.timeout or self.options.timeout
            return await self._cancel(
                unit, exc.prediction, reason=f"canceled after the step's timeout of {timeout:g} s"
            )
        except asyncio.CancelledError:
            await self._interrupted(unit, prediction)
            raise

    async def _interrupted(self, unit: Unit, prediction: Prediction) -> None:
        if prediction.terminal or prediction.id is None:
            return
        if self.options.on_interrupt == "leave":
            unit.rec.status, unit.rec.error = (
                "running",
                "left running when interrupted; resume re-attaches to it",
            )
            log.warning("step %s: prediction %s left running", unit.label, prediction.id)
            self.record.note(unit.key, durable=True, item=unit.item)
            return
        final = await self._cancel(unit, prediction, reason="canceled when the run was interrupted")
        self._end_attempt(unit, final)
        self.record.note(unit.key, durable=True, item=unit.item)

    async def _cancel(self, unit: Unit, prediction: Prediction, *, reason: str) -> Prediction:
        assert prediction.id is not None
        try:
            final = await asyncio.wait_for(self._backend(unit).cancel(prediction.id), CANCEL_GRACE_SECONDS)
        except Exception as exc:  # a failed cancel is reported, never raised over what caused it
            unit.rec.error = f"{reason}, but the cancel failed: {exc}"
            log.error("prediction %s: %s", prediction.id, unit.rec.error)
            return prediction
        log.warning("prediction %s: %s", prediction.id, reason)
        return dataclasses.replace(final, error=final.error or reason)

    def _end_attempt(self, unit: Unit, prediction: Prediction) -> None:
        self._note(unit.rec, prediction)
        if unit.rec.attempts:
            unit.rec.attempts[-1].update(status=prediction.status, error=prediction.error)
        if prediction.status != "succeeded" and prediction.terminal:
            unit.rec.status = _ENDED.get(prediction.status, "failed")
            unit.rec.error = prediction.error or f"the prediction ended {prediction.status}"
            log.error(
                "step %s: prediction %s %s: %s", unit.label, prediction.id, prediction.status, unit.rec.error
            )

    async def _finish(self, unit: Unit, prediction: Prediction, key: str | None) -> Any:
        folder = unit.folder
        urls = output_urls(prediction.output)
        downloads = [
            self.downloader.download(url, folder=folder, stem=f"output_{i}") for i, url in enumerate(urls)
        ]
        unit.rec.outputs = list(await asyncio.gather(*downloads))
        for artifact in unit.rec.outputs:
            log.info(
                "step %s: downloaded %s -> %s (%d bytes)",
                unit.label,
                artifact.url,
                artifact.path,
                artifact.bytes,
            )
        unit.rec.output = kept_output(prediction.output)
        unit.rec.completed_at = unit.rec.completed_at or utc_now()
        unit.rec.status, unit.rec.error = "succeeded", None
        if key is not None and self.cache is not None:
            entry = CacheEntry(
                key,
                unit.step.model.version_ref,
                prediction.id,
                unit.rec.output,
                unit.rec.completed_at,
                files_of(unit.rec.outputs),
                unit.rec.metrics,
            )
            self.cache.put(entry, unit.rec.outputs, self.record.run_dir)
            unit.rec.cache, unit.rec.cache_key = "stored", key
        return prediction.output

    @staticmethod
    def _note(rec: StepRecord, prediction: Prediction) -> None:
        rec.created_at = prediction.created_at or rec.created_at
        rec.started_at = prediction.started_at or rec.started_at
        rec.completed_at = prediction.completed_at or rec.completed_at
        rec.metrics = dict(prediction.metrics) or rec.metrics

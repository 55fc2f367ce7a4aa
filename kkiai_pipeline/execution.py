"""The async scheduler over a plan: the only place with concurrency.

A step starts as soon as all its dependencies have succeeded; independent steps run concurrently, at
most ``max_concurrency`` predictions at a time. A step whose dependency did not succeed is ``skipped``;
the other steps still run to the end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .api.client import PredictionsClient
from .api.prediction import Prediction, output_urls
from .artifacts import Downloader
from .errors import KkiaiError, StepInputError
from .planning import Plan, PlannedStep, render_input
from .rundir import RunRecord, StepStatus, utc_now
from .templating import TemplateProblem
from .validation import omit_unset, validate_input

log = logging.getLogger(__name__)

NOT_SUCCEEDED = frozenset({"failed", "canceled", "aborted", "skipped"})
_ENDED: dict[str, StepStatus] = {"canceled": "canceled", "aborted": "aborted"}


class Progress(Protocol):
    """What the scheduler tells the outside world as steps start and end."""

    def step_started(self, step_id: str) -> None: ...
    def step_finished(self, step_id: str, status: str) -> None: ...


@dataclass(frozen=True)
class ExecutionOptions:
    """Knobs of the scheduler."""

    max_concurrency: int = 16


class Executor:
    """Runs the steps of one plan and keeps ``record`` (run.json) up to date."""

    def __init__(
        self,
        plan: Plan,
        *,
        client: PredictionsClient,
        downloader: Downloader,
        record: RunRecord,
        options: ExecutionOptions,
        progress: Progress | None = None,
    ) -> None:
        self.plan = plan
        self.client = client
        self.downloader = downloader
        self.record = record
        self.progress = progress
        self._slots = asyncio.Semaphore(options.max_concurrency)
        self._outputs: dict[str, Any] = {}

    async def run(self) -> RunRecord:
        """Execute every step that can run; returns the final record."""
        waiting = {step.id: step for step in self.plan.steps}
        running: set[asyncio.Task[None]] = set()
        self.record.save()
        while waiting or running:
            for step in self._ready(waiting):
                running.add(asyncio.create_task(self._run_step(step), name=step.id))
            if not running:
                break
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a bug in _run_step must not pass silently
        return self._finish()

    def _ready(self, waiting: dict[str, PlannedStep]) -> list[PlannedStep]:
        """Pop the steps that can start now; mark those that never can as skipped (in plan order)."""
        ready = []
        for sid in list(waiting):
            step = waiting[sid]
            statuses = {d: self.record.steps[d].status for d in step.depends_on}
            blocked = sorted(d for d, s in statuses.items() if s in NOT_SUCCEEDED)
            if blocked:
                del waiting[sid]
                self._skip(step, blocked)
            elif all(s == "succeeded" for s in statuses.values()):
                del waiting[sid]
                ready.append(step)
        return ready

    def _skip(self, step: PlannedStep, blocked: list[str]) -> None:
        rec = self.record.steps[step.id]
        rec.status = "skipped"
        rec.error = f"skipped: dependency {', '.join(repr(b) for b in blocked)} did not succeed"
        log.info("step %s skipped (%s)", step.id, rec.error)
        self.record.save()
        if self.progress:
            self.progress.step_finished(step.id, "skipped")

    async def _run_step(self, step: PlannedStep) -> None:
        rec = self.record.steps[step.id]
        async with self._slots:
            rec.status = "running"
            if self.progress:
                self.progress.step_started(step.id)
            try:
                await self._predict(step)
            except (KkiaiError, TemplateProblem) as exc:
                rec.status = "failed"
                rec.error = str(exc)
                log.error("step %s failed: %s", step.id, exc)
        self.record.save()
        if self.progress:
            self.progress.step_finished(step.id, rec.status)

    async def _predict(self, step: PlannedStep) -> None:
        rec = self.record.steps[step.id]
        rendered = render_input(step, self._context())
        rec.input = omit_unset(rendered)
        problems = validate_input(step.model, rendered)
        if problems:
            fields = "; ".join(f"input.{p.field}: {p.message}" for p in problems)
            raise StepInputError(
                f"the rendered input was rejected before sending (no prediction made): {fields}"
            )
        prediction = await self.client.create(step.model.version_ref, rec.input)
        rec.prediction_id = prediction.id
        self._note(step.id, prediction)
        log.info("step %s: created prediction %s (%s)", step.id, prediction.id, prediction.status)
        self.record.save()

        async def on_update(update: Prediction) -> None:
            log.info("step %s: prediction %s is %s", step.id, update.id, update.status)
            self._note(step.id, update)
            self.record.save()

        prediction = await self.client.wait(prediction, on_update=on_update)
        self._note(step.id, prediction)
        if prediction.status != "succeeded":
            rec.status = _ENDED.get(prediction.status, "failed")
            rec.error = prediction.error or f"the prediction ended {prediction.status}"
            log.error("step %s: prediction %s %s: %s", step.id, prediction.id, prediction.status, rec.error)
            return
        await self._download(step, prediction)
        self._outputs[step.id] = prediction.output
        rec.status = "succeeded"

    def _note(self, step_id: str, prediction: Prediction) -> None:
        rec = self.record.steps[step_id]
        rec.created_at = prediction.created_at or rec.created_at
        rec.started_at = prediction.started_at or rec.started_at
        rec.completed_at = prediction.completed_at or rec.completed_at
        rec.metrics = dict(prediction.metrics) or rec.metrics

    async def _download(self, step: PlannedStep, prediction: Prediction) -> None:
        rec = self.record.steps[step.id]
        folder = self.record.run_dir / "steps" / step.id  # ids are checked to be safe names
        urls = output_urls(prediction.output)
        downloads = [
            self.downloader.download(url, folder=folder, stem=f"output_{i}") for i, url in enumerate(urls)
        ]
        rec.outputs = list(await asyncio.gather(*downloads))
        for artifact in rec.outputs:
            log.info(
                "step %s: downloaded %s -> %s (%d bytes)",
                step.id,
                artifact.url,
                artifact.path,
                artifact.bytes,
            )
        if not rec.completed_at:
            rec.completed_at = utc_now()

    def _context(self) -> Mapping[str, Any]:
        steps = {sid: {"output": output} for sid, output in self._outputs.items()}
        return {"params": self.plan.pipeline.params, "steps": steps}

    def _finish(self) -> RunRecord:
        statuses = {s.status for s in self.record.steps.values()}
        self.record.status = "succeeded" if statuses == {"succeeded"} else "failed"
        self.record.finished_at = utc_now()
        self.record.save()
        return self.record

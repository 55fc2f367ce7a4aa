"""The async scheduler over a plan: the only place with concurrency.

A step starts as soon as all its dependencies have succeeded; independent steps run concurrently, at
most ``max_concurrency`` predictions at a time. A step whose dependency did not succeed is ``skipped``;
the other steps still run to the end. When the run is interrupted (its task is canceled, as the
runner does on Ctrl-C or SIGTERM), every running step deals with its prediction (see step_runner) and
the run ends ``canceled`` with run.json written.

On resume, steps that succeeded before are reused (their files checked against their sha256), steps
whose prediction was still running are re-attached to by id, and the rest run again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .artifacts import verify
from .errors import KkiaiError, StepInputError
from .outputs import known_files, reusable_output
from .planning import Plan, PlannedStep, render_input
from .rundir import RunRecord, utc_now
from .step_runner import StepRunner
from .templating import TemplateProblem
from .validation import omit_unset, validate_input

log = logging.getLogger(__name__)

NOT_SUCCEEDED = frozenset({"failed", "canceled", "aborted", "skipped"})


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
        steps: StepRunner,
        record: RunRecord,
        options: ExecutionOptions,
        progress: Progress | None = None,
    ) -> None:
        self.plan = plan
        self.steps = steps
        self.record = record
        self.progress = progress
        self._slots = asyncio.Semaphore(options.max_concurrency)
        self._outputs: dict[str, Any] = {}  # what later steps' templates see as steps.<id>.output
        self._known: dict[str, str] = {}  # output URL -> sha256, for content-based cache keys

    async def run(self) -> RunRecord:
        """Execute every step that can run; returns the final record (``canceled`` if interrupted)."""
        waiting = {step.id: step for step in self.plan.steps if not self._reused(step)}
        running: set[asyncio.Task[None]] = set()
        self.record.status, self.record.finished_at = "running", None
        self.record.save()
        try:
            while waiting or running:
                for step in self._ready(waiting):
                    running.add(asyncio.create_task(self._run_step(step), name=step.id))
                if not running:
                    break
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # a bug in a step must not pass silently
        except asyncio.CancelledError:
            await _cancel_all(running)
            return self._finish(interrupted=True)
        return self._finish(interrupted=False)

    def _reused(self, step: PlannedStep) -> bool:
        """Whether ``step`` succeeded in an earlier run of this directory and its files are intact."""
        rec = self.record.steps[step.id]
        if rec.status != "succeeded":
            return False
        if not all(verify(self.record.run_dir / a.path, a.sha256) for a in rec.outputs):
            log.warning("step %s: stored outputs are missing or changed; running it again", step.id)
            rec.status = "pending"
            return False
        self._succeeded(
            step, reusable_output(rec.output, rec.outputs, self.record.run_dir, completed_at=rec.completed_at)
        )
        if self.progress:
            self.progress.step_finished(step.id, "succeeded")
        return True

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
        self.record.note(step.id)
        if self.progress:
            self.progress.step_finished(step.id, "skipped")

    async def _run_step(self, step: PlannedStep) -> None:
        rec = self.record.steps[step.id]
        async with self._slots:
            if self.progress:
                self.progress.step_started(step.id)
            try:
                output = await self._execute(step)
            except (KkiaiError, TemplateProblem) as exc:
                rec.status, rec.error, output = "failed", str(exc), None
                log.error("step %s failed: %s", step.id, exc)
            if output is not None:
                self._succeeded(step, output)
        self.record.note(step.id)
        if self.progress:
            self.progress.step_finished(step.id, rec.status)

    async def _execute(self, step: PlannedStep) -> Any:
        rec = self.record.steps[step.id]
        if rec.status == "running" and (rec.prediction_id or rec.creating_since):
            return await self.steps.reattach(step, known=self._known)
        rec.status, rec.error = "running", None
        rendered = render_input(step, self._context())
        rec.input = omit_unset(rendered)
        problems = validate_input(step.model, rendered)
        if problems:
            fields = "; ".join(f"input.{p.field}: {p.message}" for p in problems)
            raise StepInputError(
                f"the rendered input was rejected before sending (no prediction made): {fields}"
            )
        return await self.steps.run(step, rec.input, known=self._known)

    def _succeeded(self, step: PlannedStep, output: Any) -> None:
        self._outputs[step.id] = output
        self._known.update(known_files(output, self.record.steps[step.id].outputs))

    def _context(self) -> Mapping[str, Any]:
        steps = {sid: {"output": output} for sid, output in self._outputs.items()}
        return {"params": self.plan.pipeline.params, "steps": steps}

    def _finish(self, *, interrupted: bool) -> RunRecord:
        statuses = {s.status for s in self.record.steps.values()}
        if interrupted:
            self.record.status = "canceled"
        else:
            self.record.status = "succeeded" if statuses == {"succeeded"} else "failed"
        self.record.finished_at = utc_now()
        self.record.close()
        return self.record


async def _cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until each has dealt with its prediction."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            log.error("while canceling: %s", result)

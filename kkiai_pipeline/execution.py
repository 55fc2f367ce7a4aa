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
from .rundir import RunRecord, StepRecord, utc_now
from .step_runner import StepRunner, Unit
from .templating import Template, TemplateProblem
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
        self._outputs: dict[str, dict[str, Any]] = {}  # what templates see as steps: {id: {"output": ...}}
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
        if not self._intact(rec):
            log.warning("step %s: stored outputs are missing or changed; running it again", step.id)
            rec.status = "pending"
            return False
        self._succeeded(step, self._reusable(rec))
        if self.progress:
            self.progress.step_finished(step.id, "succeeded")
        return True

    def _intact(self, rec: StepRecord) -> bool:
        """Whether every file ``rec`` stored is still on disk with its recorded sha256."""
        return all(verify(self.record.run_dir / a.path, a.sha256) for a in rec.outputs)

    def _reusable(self, rec: StepRecord) -> Any:
        """What later steps see as a finished step's output (a foreach step: its items' outputs)."""
        if rec.items:
            return [self._reusable(item) for item in rec.items]
        return reusable_output(rec.output, rec.outputs, self.record.run_dir, completed_at=rec.completed_at)

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
        if step.foreach is not None:
            return await self._fan_out(step, rec)
        unit = Unit(step, rec, step.id, step.id, self.record.run_dir / "steps" / step.id)
        async with self._slots:
            if rec.status == "running" and (rec.prediction_id or rec.creating_since):
                return await self.steps.reattach(unit, known=self._known)
            rec.input = self._input(step, self._context())
            rec.status, rec.error = "running", None
            return await self.steps.run(unit, rec.input, known=self._known)

    def _input(self, step: PlannedStep, context: Mapping[str, Any]) -> dict[str, Any]:
        """The step's input rendered and checked; raises StepInputError before anything is sent."""
        rendered = render_input(step, context)
        problems = validate_input(step.model, rendered)
        if problems:
            fields = "; ".join(f"input.{p.field}: {p.message}" for p in problems)
            raise StepInputError(
                f"the rendered input was rejected before sending (no prediction made): {fields}"
            )
        return omit_unset(rendered)

    async def _fan_out(self, step: PlannedStep, rec: StepRecord) -> Any:
        """One prediction per item of ``foreach``; the step's output is the list of the items' outputs."""
        context = self._context()
        items = step.foreach.render(context) if isinstance(step.foreach, Template) else step.foreach
        if not isinstance(items, list):
            raise StepInputError(f"foreach must give a list, not {type(items).__name__}: {items!r:.80}")
        earlier = {old.index: old for old in rec.items}  # a resumed run keeps what its items did
        rec.items = [_item_record(rec, earlier.get(i), i, value) for i, value in enumerate(items)]
        self.record.note(step.id)  # the items, once; each item's changes are then journaled on their own
        rec.status, rec.error = "running", None
        results = await asyncio.gather(
            *(self._run_item(step, rec, item_rec, context) for item_rec in rec.items)
        )
        rec.outputs = [artifact for item_rec in rec.items for artifact in item_rec.outputs]
        failed = [i.index for i in rec.items if i.status != "succeeded"]
        if failed:
            rec.status = "failed"
            rec.error = f"{len(failed)} of {len(items)} items did not succeed: " + "; ".join(
                f"[{i.index}] {i.error}" for i in rec.items if i.status != "succeeded"
            )
            return None
        rec.status = "succeeded"
        return list(results)

    async def _run_item(
        self, step: PlannedStep, rec: StepRecord, item: StepRecord, context: Mapping[str, Any]
    ) -> Any:
        label = f"{step.id}[{item.index}]"
        folder = self.record.run_dir / "steps" / step.id / str(item.index)
        unit = Unit(step, item, step.id, label, folder, item=item.index)
        if item.status == "succeeded" and self._intact(item):
            return reusable_output(
                item.output, item.outputs, self.record.run_dir, completed_at=item.completed_at
            )
        async with self._slots:
            try:
                if item.status == "running" and (item.prediction_id or item.creating_since):
                    return await self.steps.reattach(unit, known=self._known)
                item.input = self._input(step, {**context, "item": item.item, "index": item.index})
                item.status, item.error = "running", None
                return await self.steps.run(unit, item.input, known=self._known)
            except (KkiaiError, TemplateProblem) as exc:
                item.status, item.error = "failed", str(exc)
                log.error("step %s failed: %s", label, exc)
                return None

    def _succeeded(self, step: PlannedStep, output: Any) -> None:
        self._outputs[step.id] = {"output": output}
        self._known.update(known_files(output, self.record.steps[step.id].outputs))

    def _context(self) -> Mapping[str, Any]:
        # kept up to date as steps succeed, not rebuilt for every step that starts
        return {"params": self.plan.pipeline.params, "steps": self._outputs}

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


def _item_record(step: StepRecord, earlier: StepRecord | None, index: int, value: Any) -> StepRecord:
    """The record of item ``index``: the earlier run's if it was for the same value, else a new one."""
    if earlier is not None and earlier.item == value:
        return earlier
    return StepRecord(step.model, step.version, index=index, item=value)

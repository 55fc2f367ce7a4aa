"""The async scheduler over one job's plan.

A step starts as soon as all its dependencies have succeeded; independent steps run concurrently, at
most ``max_concurrency`` predictions at a time. A step whose dependency did not succeed is
``skipped`` with all that depends on it; the other steps still run to the end.

Every step (and every item of a ``foreach``) renders its input, computes its prediction key and asks
the :class:`~kkiai_pipeline.purchase.Purchaser` for the result: whether anything is paid is decided
there, from the ledger, never here. So a rerun, a resume and a sweep are the same code: what is
stored is reused, what runs is followed, what changed runs again.

When the run is interrupted (its task is canceled on Ctrl-C or SIGTERM), each unit hands its key back
to the purchaser, which cancels or leaves its prediction, and records what the ledger then says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .api.backend import PredictionBackend
from .artifacts import Artifact, describe_url, extension_for
from .errors import KkiaiError, PredictionFailed, StepInputError, UnresolvedCreate
from .ledger import Entry, PredictionKey, prediction_key
from .outputs import kept_output, known_files, reusable_output
from .planning import Plan, PlannedStep, render_input
from .prediction_logs import logs_by_key, save_logs
from .purchase import Order, Purchaser, Receipt
from .rundir import RunRecord, StepRecord, StepStatus
from .templating import Template, TemplateProblem
from .validation import omit_unset, validate_input

log = logging.getLogger(__name__)

INTERRUPT_BUDGET = 4.7  # seconds a unit may take to wind down its prediction after Ctrl-C (goal: 5)


class Progress(Protocol):
    """What the scheduler tells the outside world as predictions start and end."""

    def started(self, label: str) -> None: ...
    def finished(self, label: str, status: str) -> None: ...
    def expect(self, count: int) -> None: ...


@dataclass(frozen=True)
class ExecutionOptions:
    """Knobs of the scheduler."""

    max_concurrency: int = 16


@dataclass(frozen=True)
class JobContext:
    """What one job's executor needs besides its plan and record."""

    purchaser: Purchaser
    backends: Mapping[str, PredictionBackend]
    identity: Any  # (backend name, version) -> service identity, from the backends registry
    default_backend: str
    timeout: float
    cache: bool
    options: ExecutionOptions
    previous: RunRecord | None = None  # the run this one resumes, to say what changed


class Executor:
    """Runs the steps of one plan and keeps ``record`` (run.json) up to date."""

    def __init__(
        self, plan: Plan, *, record: RunRecord, context: JobContext, progress: Progress | None = None
    ) -> None:
        self.plan = plan
        self.record = record
        self.context = context
        self.progress = progress
        self._slots = asyncio.Semaphore(context.options.max_concurrency)
        self._outputs: dict[str, dict[str, Any]] = {}  # what templates see as steps: {id: {"output": ...}}
        self._known: dict[str, str] = {}  # output URL -> sha256, for content-based keys
        self._steps = {step.id: step for step in plan.steps}
        self._earlier_logs = logs_by_key(context.previous)  # key -> logs file, for results now reused
        self._dependents: dict[str, list[str]] = {step.id: [] for step in plan.steps}  # direct ones
        for step in plan.steps:
            for dependency in step.depends_on:
                self._dependents[dependency].append(step.id)

    async def run(self) -> RunRecord:
        """Execute every step that can run; returns the final record (``canceled`` if interrupted)."""
        self.record.start()
        waiting_on = {step.id: len(step.depends_on) for step in self.plan.steps}
        running: dict[asyncio.Task[StepStatus], str] = {}

        def launch(ids: list[str]) -> None:
            for sid in ids:
                running[asyncio.create_task(self._run_step(self._steps[sid]), name=sid)] = sid

        launch([sid for sid, n in waiting_on.items() if n == 0])
        try:
            while running:
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    sid = running.pop(task)
                    if task.result() == "succeeded":
                        launch(self._unblocked(sid, waiting_on))
                    else:
                        self._skip_after(sid)
        except asyncio.CancelledError:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            self.record.finish(interrupted=True)
            raise
        self.record.finish(interrupted=False)
        return self.record

    def _unblocked(self, sid: str, waiting_on: dict[str, int]) -> list[str]:
        ready = []
        for dependent in self._dependents[sid]:
            waiting_on[dependent] -= 1
            if waiting_on[dependent] == 0:
                ready.append(dependent)
        return ready

    def _skip_after(self, failed: str) -> None:
        """Skip everything downstream of ``failed``, each step once."""
        blocked, queue = {failed}, [failed]
        while queue:
            for dependent in self._dependents[queue.pop()]:
                rec = self.record.steps[dependent]
                if dependent in blocked or rec.status != "pending":
                    continue
                blocked.add(dependent)
                queue.append(dependent)
                causes = sorted(d for d in self._steps[dependent].depends_on if d in blocked)
                rec.skip(f"skipped: dependency {', '.join(repr(c) for c in causes)} did not succeed")
                log.info("step %s %s", dependent, rec.error)
                self.record.note(dependent)
                if self.progress:
                    self.progress.finished(dependent, "skipped")

    # -- one step ----------------------------------------------------------------------------------

    async def _run_step(self, step: PlannedStep) -> StepStatus:
        rec = self.record.steps[step.id]
        rec.start()
        try:
            if step.foreach is not None:
                output = await self._fan_out(step, rec)
            else:
                output = await self._unit(step, rec, self._context(), step.id, self._folder(step.id))
        except asyncio.CancelledError:
            if rec.status == "running":
                rec.end("canceled", "interrupted")
            self.record.note(step.id)
            raise
        except (KkiaiError, TemplateProblem) as exc:
            if rec.status == "running":
                rec.end(_status_of(exc), str(exc))
            log.error("step %s %s: %s", step.id, rec.status, exc)
        else:
            if rec.status == "succeeded":
                self._outputs[step.id] = {"output": output}
        self.record.note(step.id)
        return rec.status

    async def _fan_out(self, step: PlannedStep, rec: StepRecord) -> Any:
        """One prediction per item of ``foreach``; the step's output is the list of the items' outputs.

        Ends the step's record: succeeded, or failed (unresolved) with what each missed item said.
        """
        context = self._context()
        items = step.foreach.render(context) if isinstance(step.foreach, Template) else step.foreach
        if not isinstance(items, list):
            raise StepInputError(f"foreach must give a list, not {type(items).__name__}: {items!r:.80}")
        rec.items = [StepRecord(rec.model, rec.version, index=i, item=value) for i, value in enumerate(items)]
        self.record.note(step.id)  # the items, once; each item's changes are then journaled on their own
        if self.progress:
            self.progress.expect(len(items) - 1)
        results = await asyncio.gather(*(self._run_item(step, rec, i, context) for i in range(len(items))))
        rec_outputs = [artifact for item in rec.items for artifact in item.outputs]
        missed = [i for i in rec.items if i.status != "succeeded"]
        if missed:
            status: StepStatus = "unresolved" if {i.status for i in missed} == {"unresolved"} else "failed"
            rec.outputs = rec_outputs
            rec.end(
                status,
                f"{len(missed)} of {len(items)} items did not succeed: "
                + "; ".join(f"[{i.index}] {i.error}" for i in missed),
            )
            return None
        rec.succeed(outputs=rec_outputs)
        return list(results)

    async def _run_item(
        self, step: PlannedStep, rec: StepRecord, index: int, context: Mapping[str, Any]
    ) -> Any:
        item = rec.items[index]
        item.start()
        label = f"{step.id}[{index}]"
        try:
            scope = {**context, "item": item.item, "index": index}
            return await self._unit(step, item, scope, label, self._folder(step.id) / str(index), index=index)
        except (KkiaiError, TemplateProblem) as exc:
            if item.status == "running":
                item.end(_status_of(exc), str(exc))
            log.error("step %s %s: %s", label, item.status, exc)
            return None
        finally:
            self.record.note(step.id, item=index)

    async def _unit(
        self,
        step: PlannedStep,
        rec: StepRecord,
        scope: Mapping[str, Any],
        label: str,
        folder: Path,
        *,
        index: int | None = None,
    ) -> Any:
        """Render, key and obtain one prediction for ``rec``; returns the output later steps see."""
        input = self._input(step, scope)
        rec.input = kept_output(input)  # as sent, data: URIs shortened (an output handed on may be MBs)
        key = self._key(step, input, index)
        rec.key = key.digest
        rec.note = self._why(step.id, index, key)
        order = Order(
            key=key,
            backend=self._backend(step),
            input=input,
            timeout=step.step.timeout or self.context.timeout,
            streams=step.model.streams,
            output_kind=step.model.output_kind,
            label=label,
        )
        try:
            receipt = await self._obtain(order, rec, step.step.retries)
            handed_on = self._record(rec, receipt, folder)
        except asyncio.CancelledError:
            entry = await self.context.purchaser.abandon(key.digest, budget=INTERRUPT_BUDGET)
            rec.prediction_id = entry.prediction_id if entry else None
            rec.end(*_interrupted(entry))
            raise
        except KkiaiError as exc:
            if isinstance(exc, PredictionFailed):
                rec.logs = save_logs(folder, exc.logs, run_dir=self.record.run_dir)
            if rec.status == "running":  # ended here, so that progress hears how, not "running"
                rec.end(_status_of(exc), str(exc))
            raise
        finally:
            if self.progress:
                self.progress.finished(label, rec.status)
        return handed_on

    async def _obtain(self, order: Order, rec: StepRecord, retries: int) -> Receipt:
        """The receipt; a prediction that *failed* is tried again ``retries`` times, each on record."""
        attempt = 0
        while True:
            try:
                async with self._slots:
                    if self.progress:  # running once it has a slot, not while it waits for one
                        self.progress.started(order.label)
                    receipt = await self.context.purchaser.obtain(order)
            except PredictionFailed as exc:
                rec.prediction_id = exc.prediction_id
                rec.attempts.append(
                    {"prediction_id": exc.prediction_id, "status": exc.status, "error": str(exc)}
                )
                if exc.status != "failed" or attempt >= retries:
                    raise
                attempt += 1
                log.warning("%s: prediction failed, retry %d of %d", order.label, attempt, retries)
                continue
            prediction = receipt.prediction
            rec.attempts.append({"prediction_id": prediction.id, "status": prediction.status, "error": None})
            return receipt

    def _record(self, rec: StepRecord, receipt: Receipt, folder: Path) -> Any:
        """Copy the receipt's files into ``folder``, record them, and return what later steps see."""
        ledger = self.context.purchaser.ledger
        outputs = []
        for i, stored in enumerate(receipt.files):
            target = folder / f"output_{i}{extension_for(stored.content_type)}"
            ledger.copy_out(stored.sha256, target)
            url = describe_url(receipt.urls[i]) if i < len(receipt.urls) else ""
            path = target.relative_to(self.record.run_dir).as_posix()
            outputs.append(Artifact(path, url, stored.sha256, stored.bytes, stored.content_type))
        prediction = receipt.prediction
        rec.prediction_id, rec.obtained = prediction.id, receipt.how
        rec.created_at, rec.started_at = prediction.created_at, prediction.started_at
        rec.completed_at, rec.metrics = prediction.completed_at, dict(prediction.metrics)
        rec.logs = save_logs(folder, prediction.logs, run_dir=self.record.run_dir)
        if rec.logs is None and rec.key:  # reused: the ledger keeps no logs, an earlier attempt may
            rec.logs = self._earlier_logs.get(rec.key)
        rec.succeed(outputs=outputs, output=kept_output(prediction.output))
        log.info(
            "%s: %s, prediction %s, %d files",
            rec.key and rec.key[:12],
            receipt.how,
            prediction.id,
            len(outputs),
        )
        # Fresh URLs may go on as they are; anything older goes on as the stored bytes.
        completed = prediction.completed_at if receipt.fresh else None
        handed_on = reusable_output(prediction.output, outputs, self.record.run_dir, completed_at=completed)
        self._known.update(known_files(handed_on, outputs))
        return handed_on

    # -- helpers -----------------------------------------------------------------------------------

    def _input(self, step: PlannedStep, scope: Mapping[str, Any]) -> dict[str, Any]:
        """The step's input rendered and checked; raises StepInputError before anything is sent."""
        rendered = render_input(step, scope)
        problems = validate_input(step.model, rendered)
        if problems:
            fields = "; ".join(f"input.{p.field}: {p.message}" for p in problems)
            raise StepInputError(
                f"the rendered input was rejected before sending (no prediction made): {fields}"
            )
        return omit_unset(rendered)

    def _backend(self, step: PlannedStep) -> str:
        return step.step.backend or self.context.default_backend

    def _key(self, step: PlannedStep, input: Mapping[str, Any], index: int | None) -> PredictionKey:
        private = not (self.context.cache and step.step.cache)
        nonce = f"{self.record.run_id}/{step.id}/{index}" if private else None
        return prediction_key(
            identity=self.context.identity(self._backend(step), step.model.version_ref),
            version=step.model.version_ref,
            input=input,
            known=self._known,
            nonce=nonce,
        )

    def _why(self, step_id: str, index: int | None, key: PredictionKey) -> str | None:
        """On a rerun or resume: what changed since the last attempt of this run directory."""
        previous = self.context.previous
        before = previous.steps.get(step_id) if previous else None
        if before is not None and index is not None:
            before = before.items[index] if index < len(before.items) else None
        if before is None or before.key is None:
            return None
        if before.key != key.digest:
            return "its input changed since the last attempt"
        if before.status != "succeeded":
            return f"it ended {before.status} in the last attempt"
        return "unchanged since the last attempt"

    def _folder(self, step_id: str) -> Path:
        return self.record.run_dir / "steps" / step_id

    def _context(self) -> Mapping[str, Any]:
        # kept up to date as steps succeed, not rebuilt for every step that starts
        return {"params": self.plan.pipeline.params, "steps": self._outputs}


def _status_of(exc: BaseException) -> StepStatus:
    if isinstance(exc, UnresolvedCreate):
        return "unresolved"
    if isinstance(exc, PredictionFailed) and exc.status in ("canceled", "aborted"):
        return "canceled" if exc.status == "canceled" else "aborted"
    return "failed"


def _interrupted(entry: Entry | None) -> tuple[StepStatus, str]:
    """A unit's status after Ctrl-C, from what the ledger holds for its key."""
    if entry is None or entry.state == "intended":
        return "canceled", "interrupted before anything was sent"
    pid = entry.prediction_id
    if entry.state == "sending":
        return "unresolved", (
            "interrupted while a create was on its way, and its prediction could not be found yet: "
            "the next run or resume looks for it before sending anything"
        )
    if entry.state == "created":
        return "canceled", f"interrupted; prediction {pid} was left running: a resume re-attaches to it"
    if entry.state in ("succeeded", "stored"):
        return (
            "canceled",
            f"interrupted; prediction {pid} succeeded: a resume stores its files, paying nothing",
        )
    return "canceled", f"interrupted; prediction {pid} was canceled"

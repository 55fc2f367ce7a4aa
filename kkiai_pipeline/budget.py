"""The budget: how many predictions a run or a sweep would create, counted before anything is sent.

:func:`count` walks a plan as execution would: each step's (and each ``foreach`` item's) input is
rendered and keyed with :func:`~.ledger.prediction_key`, and the ledger says whether the key is already
paid for. A step downstream of one that will run renders against a *stand-in* of its output (see
:mod:`.standins`) whose URLs are made from the upstream key; so the count is exact where the inputs are
known, and two jobs of a sweep that would share a prediction (the same key) share it here too.

A ``foreach`` over an earlier step's output that is not stored yet is counted from the stand-in: its
length is ``num_outputs`` (or the schema's maximum), an *upper bound* (filtered images are dropped at
run time). A list whose length is known only at run time (a model without ``num_outputs``) is counted
as one item, and the budget says it is a lower bound (``unknown``).

:func:`check` refuses, with :class:`~.errors.BudgetExceeded` (exit 2), a count over
``max_predictions``. The orchestrator calls it once for all the jobs it runs, before the first
request; the dry run prints :meth:`Budget.summary`.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import standins
from .api.prediction import output_urls
from .backends import BACKENDS, default_backend
from .errors import BudgetExceeded
from .ledger import LEDGER_FILE, Entry, Ledger, prediction_key
from .planning import Plan, PlannedStep, render_input
from .rundir import RunRecord
from .settings import Settings
from .templating import Template, TemplateProblem
from .validation import omit_unset

_ITEMS_NOTE = {
    "upper": "at most: one per output of an earlier step, counted from num_outputs",
    "unknown": "at least: the list is known only at run time, counted as one item",
}


@dataclass(frozen=True)
class StepCount:
    """One step of one job: how many predictions it creates and reuses, and why (the dry run's line)."""

    step: str
    model: str  # owner/name:version
    created: int
    reused: int
    verdict: str  # "hit: ...", "miss: ...", "per item: ..." (what the dry run prints as "cache ...")
    upper_bound: bool = False  # a foreach counted from num_outputs: at most this many
    unknown: bool = False  # a foreach whose length is known only at run time: counted as one item


@dataclass(frozen=True)
class Budget:
    """What a run (or, combined, a sweep) would create and reuse.

    ``created`` and ``reused`` map each prediction's key to its model (``owner/name:version``), so a
    prediction shared by several steps or jobs is counted once, and a price table can be applied per
    model (:meth:`by_model`).
    """

    created: Mapping[str, str] = field(default_factory=dict)
    reused: Mapping[str, str] = field(default_factory=dict)
    steps: tuple[StepCount, ...] = ()
    jobs: int = 1
    limit: int | None = None  # max_predictions in force (the smallest of the jobs')

    @property
    def to_create(self) -> int:
        return len(self.created)

    @property
    def to_reuse(self) -> int:
        return sum(1 for key in self.reused if key not in self.created)

    @property
    def over_limit(self) -> bool:
        """Whether running it would be refused (more to create than ``max_predictions``)."""
        return self.limit is not None and self.to_create > self.limit

    def refusal(self) -> str:
        """Why it is refused, and the override that allows it."""
        what = f"this sweep of {self.jobs} jobs" if self.jobs > 1 else "this run"
        return (
            f"{what} {self.summary()}, more than max_predictions={self.limit}. Nothing was sent. "
            f"To allow it, add max_predictions={self.to_create} (or more) to the command"
        )

    @property
    def upper_bound(self) -> bool:
        """Whether the count is an upper bound (a foreach over outputs counted from num_outputs)."""
        return any(s.upper_bound for s in self.steps)

    @property
    def unknown(self) -> tuple[str, ...]:
        """Steps fanning out over a list of unknown length (each counted as one item), in order."""
        return tuple(dict.fromkeys(s.step for s in self.steps if s.unknown))

    def by_model(self) -> dict[str, int]:
        """Predictions to create per model, ``owner/name`` (as a price table names them)."""
        return dict(Counter(ref.partition(":")[0] for ref in self.created.values()))

    def summary(self) -> str:
        """``would create N predictions, M reused`` with what makes N uncertain."""
        n = self.to_create
        qualifier = "at least " if self.unknown else "up to " if self.upper_bound else ""
        text = f"would create {qualifier}{n} prediction{'s' if n != 1 else ''}, {self.to_reuse} reused"
        return text + self._why_uncertain()

    def _why_uncertain(self) -> str:
        notes = []
        if self.upper_bound:
            notes.append("a foreach over an earlier step's outputs counts one item per possible output")
        if self.unknown:
            steps = ", ".join(self.unknown)
            notes.append(f"{steps} fans out over a list known only at run time, counted as one item")
        return f" ({'; '.join(notes)})" if notes else ""


def combine(budgets: Iterable[Budget]) -> Budget:
    """The budget of several jobs run together: a key shared by several is counted once."""
    created: dict[str, str] = {}
    reused: dict[str, str] = {}
    steps: list[StepCount] = []
    jobs = 0
    limits = []
    for budget in budgets:
        created.update(budget.created)
        reused.update(budget.reused)
        steps.extend(budget.steps)
        jobs += budget.jobs
        if budget.limit is not None:
            limits.append(budget.limit)
    return Budget(created, reused, tuple(steps), jobs, min(limits, default=None))


class JobLike(Protocol):
    """What :func:`count_jobs` needs of a job (an :class:`~.orchestrator.Job`)."""

    @property
    def plan(self) -> Plan: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def previous(self) -> RunRecord | None: ...


def count_jobs(jobs: Sequence[JobLike]) -> Budget:
    """The budget of ``jobs`` run together (each cache directory's ledger opened once, read only)."""
    ledgers: dict[Any, Ledger | None] = {}
    try:
        budgets = []
        for job in jobs:
            root = job.settings.cache_dir
            if root not in ledgers:
                ledgers[root] = open_ledger(job.settings)
            run_id = job.previous.run_id if job.previous is not None else None
            budgets.append(count(job.plan, job.settings, ledger=ledgers[root], run_id=run_id))
        return combine(budgets)
    finally:
        for ledger in ledgers.values():
            if ledger is not None:
                ledger.close()


def open_ledger(settings: Settings) -> Ledger | None:
    """The ledger of ``settings``'s cache directory, or None when there is none yet (never created)."""
    root = settings.cache_dir
    return Ledger(root) if root is not None and (root / LEDGER_FILE).exists() else None


def check(jobs: Sequence[JobLike]) -> Budget:
    """Count ``jobs`` together; raise BudgetExceeded when over the smallest ``max_predictions``."""
    budget = count_jobs(jobs)
    if budget.over_limit:
        assert budget.limit is not None
        raise BudgetExceeded(budget.refusal(), count=budget.to_create, limit=budget.limit)
    return budget


def count(
    plan: Plan, settings: Settings, *, ledger: Ledger | None = None, run_id: str | None = None
) -> Budget:
    """The budget of one job; ``ledger`` is read (never written), ``run_id`` is the run it resumes."""
    walk = _Walk(plan, settings, ledger, run_id)
    steps = tuple(walk.step(step) for step in plan.steps)
    return Budget(walk.created, walk.reused, steps, limit=settings.max_predictions)


class _Walk:
    """One pass over a plan in order, keeping each step's output (real when stored, else stand-in)."""

    def __init__(self, plan: Plan, settings: Settings, ledger: Ledger | None, run_id: str | None) -> None:
        self.plan, self.settings, self.ledger = plan, settings, ledger
        self.run_id = run_id or f"budget-{uuid.uuid4().hex}"  # a fresh run: its private keys are new
        self.resumed = run_id is not None
        self.outputs: dict[str, dict[str, Any]] = {}
        self.real: set[str] = set()  # steps whose output is the stored one (the rest: stand-ins)
        self.known: dict[str, str] = {}
        self.created: dict[str, str] = {}
        self.reused: dict[str, str] = {}

    def step(self, step: PlannedStep) -> StepCount:
        scope = {"params": self.plan.pipeline.params, "steps": self.outputs}
        model = step.model.version_ref
        if step.foreach is None:
            paid, verdict, output = self._unit(step, scope, None)
            self.outputs[step.id] = {"output": output}
            return StepCount(step.id, model, int(paid), int(not paid), verdict)
        items, how = self._items(step, scope)
        each = [self._unit(step, {**scope, "item": v, "index": i}, i) for i, v in enumerate(items)]
        created = sum(paid for paid, _, _ in each)
        if how == "exact" and all(v.startswith("hit") for _, v, _ in each):
            self.real.add(step.id)
            self.outputs[step.id] = {"output": [out for _, _, out in each]}
        else:
            outputs = [out for _, _, out in each]
            self.outputs[step.id] = {
                "output": standins.fanned_out(step.id, outputs, bounded=how != "unknown")
            }
        verdict = f"per item: {created} of {len(each)} items created, {len(each) - created} reused"
        if how != "exact":
            verdict += f" ({_ITEMS_NOTE[how]})"
        upper, unknown = how == "upper", how == "unknown"
        return StepCount(step.id, model, created, len(each) - created, verdict, upper, unknown)

    def _items(self, step: PlannedStep, scope: Mapping[str, Any]) -> tuple[list[Any], str]:
        """The foreach's items, and whether their count is "exact", an "upper" bound or "unknown"."""
        if not isinstance(step.foreach, Template):
            return list(step.foreach), "exact"
        try:
            items = step.foreach.render(scope)
        except TemplateProblem:
            return [None], "unknown"
        if not isinstance(items, list):
            return [None], "unknown"
        refs = step.foreach.references.steps
        if refs <= self.real:
            return list(items), "exact"
        # made from stand-ins whose lengths are all bounded (num_outputs): at most this many
        certain = all(_bounded(self.outputs[s]["output"]) for s in refs if s in self.outputs)
        return list(items), "upper" if certain else "unknown"

    def _unit(self, step: PlannedStep, scope: Mapping[str, Any], index: int | None) -> tuple[bool, str, Any]:
        """One prediction: (paid, the verdict, the output later steps see)."""
        try:
            rendered = omit_unset(render_input(step, scope))
        except TemplateProblem as exc:
            token = f"unrenderable:{self.run_id}/{step.id}/{index}"
            self.created[token] = step.model.version_ref
            return True, f"miss: {exc}", self._stand_in(step, token, {}, index)
        private = not (self.settings.cache and step.step.cache)
        backend = step.step.backend or default_backend(self.settings)
        version = step.model.version_ref
        identity = BACKENDS[backend].identity(self.settings, self.settings.api.base_url or "", version)
        nonce = f"{self.run_id}/{step.id}/{index}" if private else None
        key = prediction_key(
            identity=identity, version=version, input=rendered, known=self.known, nonce=nonce
        )
        digest = key.digest
        waiting = sorted(d for d in step.depends_on if d not in self.real)
        entry = None
        if self.ledger is not None and not waiting and (not private or self.resumed):
            entry = self.ledger.get_now(digest)
        paid, verdict = self._judge(entry, backend, digest)
        if private and entry is None:
            verdict = (
                "miss: the cache is off (cache=false)"
                if not self.settings.cache
                else "miss: this step has cache: false"
            )
        elif waiting and entry is None:
            verdict = f"miss: it reads {', '.join(waiting)}, which will run first"
        (self.created if paid else self.reused)[digest] = version
        if verdict.startswith("hit") and entry is not None:
            self.known.update(zip(output_urls(entry.output), (f.sha256 for f in entry.files), strict=False))
            if index is None:
                self.real.add(step.id)
            return paid, verdict, entry.output
        return paid, verdict, self._stand_in(step, digest, rendered, index)

    def _judge(self, entry: Entry | None, backend: str, digest: str) -> tuple[bool, str]:
        """Whether the purchaser would pay for ``entry``'s key, and the dry run's words for it."""
        short = digest[:12]
        if entry is None:
            return True, f"miss: nothing stored for this input (key {short})"
        pid = entry.prediction_id
        ledger = self.ledger
        assert ledger is not None
        if entry.state == "stored" and ledger.intact(entry):
            return False, f"hit: prediction {pid} of {entry.completed_at} (key {short})"
        if entry.state in ("stored", "succeeded") and pid and BACKENDS[backend].reattach:
            return False, f"miss: prediction {pid} succeeded; its files are fetched again by id (key {short})"
        if entry.state == "expired" and not self.settings.repay_expired:
            return False, f"miss: prediction {pid}'s files expired; paid again only with repay_expired=true"
        if entry.state == "created" and pid and BACKENDS[backend].reattach:
            return False, f"miss: prediction {pid} is running; it is followed, not created (key {short})"
        if entry.state in ("sending", "unresolved"):
            return True, (
                f"miss: a create may have reached the service; it is looked for first, "
                f"counted as paid (key {short})"
            )
        return True, f"miss: nothing stored for this input (key {short})"

    def _stand_in(self, step: PlannedStep, key: str, rendered: Mapping[str, Any], index: int | None) -> Any:
        """The output a prediction will hand on, with URLs made from its key (the same key, the same URLs)."""
        return standins.stand_in(f"k{key[-24:]}", step.model, rendered, index=index)


def _bounded(value: Any) -> bool:
    """Whether no list inside ``value`` is a stand-in of unknown length."""
    if isinstance(value, standins.StandInList) and not standins.is_bounded(value):
        return False
    if isinstance(value, list):
        return all(_bounded(v) for v in list.__iter__(value))
    if isinstance(value, Mapping):
        return all(_bounded(v) for v in value.values())
    return True

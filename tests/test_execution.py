"""The per-job scheduler (:class:`~kkiai_pipeline.execution.Executor`) against an in-memory backend.

Plans come from small pipelines of catalog models through ``orchestrator.make_plan``; the purchaser has
a real ledger in ``tmp_path``. Every status change of every step is watched (``moves``): a test fails
if the executor ever asks a record for a move it refuses, even where the executor would swallow the
StateError into a failed step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kkiai_pipeline.api.client import ClientOptions
from kkiai_pipeline.artifacts import Downloader
from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.errors import ApiError, StateError
from kkiai_pipeline.execution import ExecutionOptions, Executor, JobContext
from kkiai_pipeline.ledger import Ledger
from kkiai_pipeline.orchestrator import Job, make_plan, new_record
from kkiai_pipeline.pipeline import parse_pipeline
from kkiai_pipeline.purchase import PurchaseOptions, Purchaser
from kkiai_pipeline.rundir import RunRecord, StepRecord, StepStatus, load_record
from kkiai_pipeline.settings import ApiSettings, Settings

from .memory_backend import Behaviour, MemoryBackend, canonical, until

CATALOG = default_catalog()
SDXL = CATALOG.resolve("stability-ai/sdxl").version_ref
SD = CATALOG.resolve("stability-ai/stable-diffusion").version_ref
REMBG = CATALOG.resolve("cjwbw/rembg").version_ref
STATUSES: tuple[StepStatus, ...] = (
    "pending",
    "running",
    "succeeded",
    "failed",
    "canceled",
    "aborted",
    "skipped",
    "unresolved",
)
ALLOWED = {
    ("pending", "running"),
    ("pending", "skipped"),
    *(("running", end) for end in ("succeeded", "failed", "canceled", "aborted", "unresolved")),
}


def steps(**defs: dict[str, Any]) -> dict[str, Any]:
    return {"name": "unit", "steps": defs}


def shot(prompt: str = "a mug", **more: Any) -> dict[str, Any]:
    return {"model": "stability-ai/sdxl", "input": {"prompt": prompt}, **more}


def cutout(source: str, **more: Any) -> dict[str, Any]:
    return {"model": "cjwbw/rembg", "input": {"image": f"{{{{ steps.{source} }}}}"}, **more}


def removal(source: str, objects: str = "person", **more: Any) -> dict[str, Any]:
    return {
        "model": "sujaykhandekar/object-removal",
        "input": {"image_path": f"{{{{ steps.{source} }}}}", "objects_to_remove": objects},
        **more,
    }


def variation(source: str, prompt: str, **more: Any) -> dict[str, Any]:
    return {
        "model": "stability-ai/stable-diffusion-img2img",
        "input": {"image": f"{{{{ steps.{source} }}}}", "prompt": prompt},
        **more,
    }


def diamond(objects: str = "person") -> dict[str, Any]:
    """shot -> (cut, clean) -> blend: blend reads clean's output and needs cut."""
    return steps(
        shot=shot(),
        cut=cutout("shot.output[0]"),
        clean=removal("shot.output[0]", objects),
        blend=variation("clean.output", "blend", needs=["cut"]),
    )


@dataclass
class Events:
    """A Progress that keeps what it heard, in order."""

    heard: list[tuple[str, ...]] = field(default_factory=list)

    def started(self, label: str) -> None:
        self.heard.append(("started", label))

    def finished(self, label: str, status: str) -> None:
        self.heard.append(("finished", label, status))

    def expect(self, count: int) -> None:
        self.heard.append(("expect", str(count)))

    def at(self, *event: str) -> int:
        return self.heard.index(event)


@dataclass
class Bench:
    """One backend and one ledger, for any number of runs (each with its own purchaser)."""

    tmp_path: Path
    backend: MemoryBackend
    ledger: Ledger
    downloader: Downloader
    options: PurchaseOptions = field(default_factory=lambda: PurchaseOptions(list_lag_seconds=0.0))
    purchaser: Purchaser | None = None

    def executor(
        self,
        pipeline: dict[str, Any],
        *,
        run: str = "run",
        previous: RunRecord | None = None,
        progress: Events | None = None,
    ) -> Executor:
        settings = Settings(
            api=ApiSettings("kkiai", "http://memory.test", "t", ClientOptions()),
            execution=ExecutionOptions(max_concurrency=16),
            progress=False,
            run_dir=self.tmp_path / run,
        )
        plan = make_plan(parse_pipeline(pipeline), settings, catalog=CATALOG)
        record = new_record(Job(plan, settings, previous=previous), base_url="http://memory.test")
        self.purchaser = Purchaser(
            ledger=self.ledger,
            backends={"api": self.backend},
            downloader=self.downloader,
            options=self.options,
        )
        context = JobContext(
            purchaser=self.purchaser,
            backends={"api": self.backend},
            identity=lambda _name, _version: "memory",
            default_backend="api",
            timeout=30.0,
            cache=True,
            options=ExecutionOptions(max_concurrency=16),
            previous=previous,
        )
        return Executor(plan, record=record, context=context, progress=progress)

    async def run(self, pipeline: dict[str, Any], **kw: Any) -> RunRecord:
        return await self.executor(pipeline, **kw).run()

    def ids(self, version: str, input: dict[str, Any]) -> list[str]:
        """The predictions the backend made for exactly (version, input), in order."""
        wanted = canonical(input)
        return [
            r.id
            for r in self.backend.predictions.values()
            if (r.version, canonical(r.input)) == (version, wanted)
        ]


def bench(tmp_path: Path, scenario: Callable[[Bench], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        backend = MemoryBackend()
        ledger = Ledger(tmp_path / "cache")
        downloader = Downloader(run_dir=ledger.root / "incoming")
        b = Bench(
            tmp_path, backend, ledger, downloader, PurchaseOptions(**{"list_lag_seconds": 0.0, **options})
        )
        try:
            await scenario(b)
        finally:
            await downloader.aclose()
            ledger.close()

    asyncio.run(main())


@pytest.fixture(autouse=True)
def moves(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Every status move asked of any StepRecord; none may be refused."""
    seen: list[tuple[str, str]] = []
    real = StepRecord._move

    def spy(self: StepRecord, status: StepStatus) -> None:
        seen.append((self.status, status))
        real(self, status)

    monkeypatch.setattr(StepRecord, "_move", spy)
    yield seen
    assert set(seen) <= ALLOWED


def statuses(record: RunRecord) -> dict[str, str]:
    return {sid: rec.status for sid, rec in record.steps.items()}


def field_of(record: RunRecord, name: str) -> dict[str, Any]:
    return {sid: getattr(rec, name) for sid, rec in record.steps.items()}


# -- order and failures ------------------------------------------------------------------------------


def test_a_diamond_runs_each_step_only_after_its_dependencies(tmp_path: Path) -> None:
    async def scenario(b: Bench) -> None:
        gate = asyncio.Event()
        b.backend.when(Behaviour(gate=gate), match=lambda version, _input: version == REMBG)
        events = Events()
        task = asyncio.create_task(b.run(diamond(), progress=events))
        await until(lambda: ("finished", "clean", "succeeded") in events.heard)
        await asyncio.sleep(0.01)
        assert ("started", "blend") not in events.heard  # clean is done, but cut still runs
        gate.set()
        record = await task
        assert statuses(record) == dict.fromkeys(("shot", "cut", "clean", "blend"), "succeeded")
        assert record.status == "succeeded"
        for sid, deps in {"cut": ["shot"], "clean": ["shot"], "blend": ["clean", "cut"]}.items():
            assert record.steps[sid].depends_on == deps
            for dep in deps:
                assert events.at("started", sid) > events.at("finished", dep, "succeeded")
        assert (b.backend.stats.creates, b.backend.made) == (4, 4)
        assert field_of(record, "obtained") == dict.fromkeys(("shot", "cut", "clean", "blend"), "created")
        assert (tmp_path / "run" / "steps" / "blend" / "output_0.png").is_file()

    bench(tmp_path, scenario)


def test_the_items_of_a_batch_are_running_only_once_they_have_a_slot(tmp_path: Path) -> None:
    async def scenario(b: Bench) -> None:
        gate = asyncio.Event()
        b.backend.when(Behaviour(gate=gate))
        events = Events()
        batch = shot("{{ item }}", foreach=[f"prompt {i}" for i in range(40)])
        task = asyncio.create_task(b.run(steps(batch=batch), progress=events))
        await until(lambda: b.backend.stats.creates == 16)
        await asyncio.sleep(0.01)
        assert sum(e[0] == "started" for e in events.heard) == 16  # max_concurrency, not all 40
        gate.set()
        record = await task
        assert record.status == "succeeded"
        assert sum(e[0] == "started" for e in events.heard) == 40

    bench(tmp_path, scenario)


def test_a_failed_step_skips_exactly_its_transitive_dependents(tmp_path: Path) -> None:
    pipeline = steps(
        shot=shot(),
        cut=cutout("shot.output[0]"),  # fails
        clean=removal("shot.output[0]"),
        blend=variation("cut.output", "blend"),
        final=cutout("blend.output[0]", needs=["clean"]),
        side=variation("clean.output", "side"),
    )

    async def scenario(b: Bench) -> None:
        b.backend.when(Behaviour(fail="no foreground found"), match=lambda version, _input: version == REMBG)
        events = Events()
        record = await b.run(pipeline, progress=events)
        assert statuses(record) == {
            "shot": "succeeded",
            "cut": "failed",
            "clean": "succeeded",
            "blend": "skipped",
            "final": "skipped",
            "side": "succeeded",
        }
        assert field_of(record, "error") == {
            "shot": None,
            "cut": "no foreground found",
            "clean": None,
            "blend": "skipped: dependency 'cut' did not succeed",
            "final": "skipped: dependency 'blend' did not succeed",
            "side": None,
        }
        assert record.status == "failed"
        assert (b.backend.stats.creates, b.backend.made) == (4, 4)  # shot, cut, clean, side
        assert sorted(e for e in events.heard if e[0] == "finished") == [
            ("finished", "blend", "skipped"),
            ("finished", "clean", "succeeded"),
            ("finished", "cut", "failed"),  # as it ended, not "running"
            ("finished", "final", "skipped"),
            ("finished", "shot", "succeeded"),
            ("finished", "side", "succeeded"),
        ]
        assert ("started", "blend") not in events.heard and ("started", "final") not in events.heard

    bench(tmp_path, scenario)


# -- reruns and resumes ------------------------------------------------------------------------------


def test_a_rerun_with_the_same_ledger_creates_nothing_and_reuses_every_step(tmp_path: Path) -> None:
    async def scenario(b: Bench) -> None:
        first = await b.run(diamond(), run="first")
        assert (first.status, b.backend.stats.creates) == ("succeeded", 4)
        second = await b.run(diamond(), run="second")
        assert second.status == "succeeded"
        assert (b.backend.stats.creates, b.backend.made, b.backend.gets) == (4, 4, [])
        assert field_of(second, "obtained") == dict.fromkeys(("shot", "cut", "clean", "blend"), "reused")
        assert field_of(second, "prediction_id") == field_of(first, "prediction_id")
        assert field_of(second, "key") == field_of(first, "key")
        for sid in first.steps:
            assert [a.sha256 for a in second.steps[sid].outputs] == [
                a.sha256 for a in first.steps[sid].outputs
            ]
            assert (
                tmp_path / second.steps[sid].outputs[0].path.replace("steps", "second/steps", 1)
            ).is_file()

    bench(tmp_path, scenario)


def test_a_changed_input_reruns_that_step_and_its_dependents_only(tmp_path: Path) -> None:
    async def scenario(b: Bench) -> None:
        first = await b.run(diamond("person"))
        assert b.backend.stats.creates == 4
        previous = load_record(tmp_path / "run")
        resumed = await b.run(diamond("car"), previous=previous)
        assert resumed.run_id == first.run_id and resumed.status == "succeeded"
        assert field_of(resumed, "obtained") == {
            "shot": "reused",
            "cut": "reused",
            "clean": "created",
            "blend": "created",
        }
        assert field_of(resumed, "note") == {
            "shot": "unchanged since the last attempt",
            "cut": "unchanged since the last attempt",
            "clean": "its input changed since the last attempt",
            "blend": "its input changed since the last attempt",
        }
        assert (b.backend.stats.creates, b.backend.made) == (6, 6)
        before = first.steps["clean"].input
        assert before is not None and before["objects_to_remove"] == "person"
        assert resumed.steps["clean"].input == {**before, "objects_to_remove": "car"}  # the same image

    bench(tmp_path, scenario)


def test_a_resume_after_a_failure_says_why_the_step_runs_again(tmp_path: Path) -> None:
    async def scenario(b: Bench) -> None:
        b.backend.when(Behaviour(fail="no foreground found"), match=lambda version, _input: version == REMBG)
        first = await b.run(steps(shot=shot(), cut=cutout("shot.output[0]")))
        assert statuses(first) == {"shot": "succeeded", "cut": "failed"}
        resumed = await b.run(
            steps(shot=shot(), cut=cutout("shot.output[0]")), previous=load_record(tmp_path / "run")
        )
        assert statuses(resumed) == {"shot": "succeeded", "cut": "succeeded"}
        assert field_of(resumed, "note") == {
            "shot": "unchanged since the last attempt",
            "cut": "it ended failed in the last attempt",
        }
        assert field_of(resumed, "obtained") == {"shot": "reused", "cut": "created"}
        assert (b.backend.stats.creates, b.backend.made) == (3, 3)

    bench(tmp_path, scenario)


# -- fan-out and retries -----------------------------------------------------------------------------


def test_foreach_items_each_get_a_record_and_identical_items_are_paid_once(tmp_path: Path) -> None:
    pipeline = steps(
        shots={**shot("{{ item }}"), "foreach": ["a mug", "a vase", "a mug"]},
        cuts={
            **cutout("shots.output[0]"),
            "foreach": "{{ steps.shots.output }}",
            "input": {"image": "{{ item[0] }}"},
        },
    )

    async def scenario(b: Bench) -> None:
        record = await b.run(pipeline)
        assert statuses(record) == {"shots": "succeeded", "cuts": "succeeded"}
        shots, cuts = record.steps["shots"], record.steps["cuts"]
        assert [(i.index, i.item, i.status) for i in shots.items] == [
            (0, "a mug", "succeeded"),
            (1, "a vase", "succeeded"),
            (2, "a mug", "succeeded"),
        ]
        assert [i.obtained for i in shots.items] == ["created", "created", "shared"]
        assert [i.obtained for i in cuts.items] == ["created", "created", "shared"]
        assert [i.prediction_id for i in shots.items] == ["p1", "p2", "p1"]
        assert shots.items[0].key == shots.items[2].key != shots.items[1].key
        assert cuts.items[0].key == cuts.items[2].key != cuts.items[1].key
        assert b.backend.creates_of(SDXL, {"prompt": "a mug"}) == 1
        assert (b.backend.stats.creates, b.backend.made) == (4, 4)
        assert [a.path for a in shots.outputs] == [f"steps/shots/{i}/output_0.png" for i in range(3)]
        assert [a.path for a in cuts.outputs] == [f"steps/cuts/{i}/output_0.png" for i in range(3)]

    bench(tmp_path, scenario)


def test_retries_recreate_only_failed_predictions_and_record_every_attempt(tmp_path: Path) -> None:
    pipeline = steps(
        shots={**shot("{{ item }}"), "foreach": ["steady", "flaky"], "retries": 2},
        hopeless={**shot("hopeless"), "retries": 1},
    )

    async def scenario(b: Bench) -> None:
        b.backend.when_input(Behaviour(fail="CUDA out of memory"), prompt="flaky", times=2)
        b.backend.when_input(Behaviour(fail="NSFW content detected"), prompt="hopeless", times=-1)
        record = await b.run(pipeline)
        assert statuses(record) == {"shots": "succeeded", "hopeless": "failed"}
        steady, flaky = record.steps["shots"].items
        [p_steady] = b.ids(SDXL, {"prompt": "steady"})
        p_flaky = b.ids(SDXL, {"prompt": "flaky"})
        assert steady.attempts == [{"prediction_id": p_steady, "status": "succeeded", "error": None}]
        assert flaky.attempts == [
            {"prediction_id": p_flaky[0], "status": "failed", "error": "CUDA out of memory"},
            {"prediction_id": p_flaky[1], "status": "failed", "error": "CUDA out of memory"},
            {"prediction_id": p_flaky[2], "status": "succeeded", "error": None},
        ]
        assert flaky.prediction_id == p_flaky[2]
        hopeless = record.steps["hopeless"]
        p_hopeless = b.ids(SDXL, {"prompt": "hopeless"})
        assert hopeless.attempts == [
            {"prediction_id": p, "status": "failed", "error": "NSFW content detected"} for p in p_hopeless
        ]
        assert (len(p_hopeless), hopeless.error, hopeless.prediction_id) == (
            2,
            "NSFW content detected",
            p_hopeless[1],
        )
        assert (b.backend.stats.creates, b.backend.made) == (6, 6)

    bench(tmp_path, scenario)


def test_a_canceled_prediction_is_not_retried(tmp_path: Path) -> None:
    async def scenario(b: Bench) -> None:
        b.backend.when(Behaviour(gate=asyncio.Event()))  # runs past the step's timeout
        record = await b.run(steps(shot=shot(timeout=0.05, retries=3)))
        rec = record.steps["shot"]
        assert (rec.status, rec.error) == ("canceled", "canceled after the step's timeout of 0.05 s")
        assert rec.attempts == [
            {
                "prediction_id": "p1",
                "status": "canceled",
                "error": "canceled after the step's timeout of 0.05 s",
            }
        ]
        assert (b.backend.stats.creates, b.backend.cancels) == (1, ["p1"])

    bench(tmp_path, scenario)


# -- status moves ------------------------------------------------------------------------------------

ACTIONS: dict[str, tuple[StepStatus, Callable[[StepRecord], None]]] = {
    "start": ("running", lambda r: r.start()),
    "succeed": ("succeeded", lambda r: r.succeed(outputs=[])),
    "skip": ("skipped", lambda r: r.skip("a dependency did not succeed")),
    **{f"end {s}": (s, lambda r, s=s: r.end(s, "why")) for s in STATUSES},  # type: ignore[misc]
}


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize("status", STATUSES)
def test_a_step_record_moves_only_along_allowed_moves(
    status: StepStatus, action: str, moves: list[tuple[str, str]]
) -> None:
    target, act = ACTIONS[action]
    rec = StepRecord("cjwbw/rembg", "fb8af171", status=status)
    if (status, target) in ALLOWED:
        act(rec)
        assert rec.status == target
    else:
        with pytest.raises(StateError) as caught:
            act(rec)
        assert str(caught.value) == f"a step cannot go from {status} to {target}"
        assert rec.status == status
    assert moves == [(status, target)]
    moves.clear()  # refusals are what this test asks for


def test_the_allowed_moves_are_exactly_these() -> None:
    assert len(ALLOWED) == 7  # the table above is the whole lifecycle; anything else is a bug


# -- interrupts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("on_interrupt", ["cancel", "leave"])
def test_interrupting_the_executor_leaves_no_step_running(tmp_path: Path, on_interrupt: str) -> None:
    pipeline = steps(
        slow=shot("slow"),
        lost={"model": "stability-ai/stable-diffusion", "input": {"prompt": "lost"}},
        quick=shot("quick"),
        after=cutout("slow.output[0]"),
    )

    async def scenario(b: Bench) -> None:
        b.backend.when_input(Behaviour(gate=asyncio.Event()), prompt="slow")
        b.backend.when_input(Behaviour(hold=asyncio.Event(), hold_at="before"), prompt="lost")
        b.backend.list_error = ApiError(
            "the API answered 404 to GET /v1/predictions: Not found", status_code=404
        )
        executor = b.executor(pipeline)
        task = asyncio.create_task(executor.run())
        await until(
            lambda: (
                executor.record.steps["quick"].status == "succeeded"
                and canonical({"prompt": "lost"}) in b.backend.holding
                and sum(b.backend.waiting.values()) == 1
            )
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        record = executor.record
        [slow_id] = b.ids(SDXL, {"prompt": "slow"})
        assert record.status == "canceled"
        assert statuses(record) == {
            "slow": "canceled",
            "lost": "unresolved",
            "quick": "succeeded",
            "after": "pending",
        }
        if on_interrupt == "cancel":
            slow_error = f"interrupted; prediction {slow_id} was canceled"
            slow_state, at_backend = "failed", "canceled"
        else:
            slow_error = f"interrupted; prediction {slow_id} was left running: a resume re-attaches to it"
            slow_state, at_backend = "created", "processing"
        assert field_of(record, "error") == {
            "slow": slow_error,
            "lost": "interrupted while a create was on its way, and its prediction could not be found yet: "
            "the next run or resume looks for it before sending anything",
            "quick": None,
            "after": None,
        }
        assert b.backend.status_of(slow_id) == at_backend
        assert field_of(record, "prediction_id")["slow"] == slow_id
        ledger = {sid: await b.ledger.get(rec.key) for sid, rec in record.steps.items() if rec.key}
        assert {sid: e.state for sid, e in ledger.items() if e} == {
            "slow": slow_state,
            "lost": "sending",
            "quick": "stored",
        }
        assert (b.backend.stats.creates, b.backend.made) == (3, 2)  # the lost create never arrived
        saved = load_record(tmp_path / "run")
        assert statuses(saved) == statuses(record)

    bench(tmp_path, scenario, on_interrupt=on_interrupt)


def test_an_interrupted_create_whose_prediction_shows_in_the_list_is_canceled(tmp_path: Path) -> None:
    async def scenario(b: Bench) -> None:
        b.backend.when(Behaviour(hold=asyncio.Event(), hold_at="after", gate=asyncio.Event()))
        executor = b.executor(steps(shot=shot()))
        task = asyncio.create_task(executor.run())
        await until(lambda: canonical({"prompt": "a mug"}) in b.backend.holding)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rec = executor.record.steps["shot"]
        assert (rec.status, rec.error, rec.prediction_id) == (
            "canceled",
            "interrupted; prediction p1 was canceled",
            "p1",
        )
        assert (b.backend.cancels, b.backend.status_of("p1"), b.backend.lookups) == (["p1"], "canceled", 1)
        entry = await b.ledger.get(rec.key or "")
        assert entry is not None and (entry.state, entry.prediction_id) == ("failed", "p1")

    bench(tmp_path, scenario)

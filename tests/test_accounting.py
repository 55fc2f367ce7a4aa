"""What each prediction cost and said: predict_time on every path, and its logs kept in the run directory.

The executor runs against the in-memory backend with a real ledger (the bench of test_execution); the
ledger is moved by hand to make the purchaser re-attach to, or recover, a prediction made earlier.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kkiai_pipeline import secrets
from kkiai_pipeline.api.prediction import Prediction
from kkiai_pipeline.errors import ApiError
from kkiai_pipeline.prediction_logs import MAX_LOG_CHARS, TRUNCATED, kept_logs
from kkiai_pipeline.rundir import RunRecord, StepRecord, Totals, load_record

from .memory_backend import Behaviour, MemoryBackend
from .test_execution import Bench, bench, shot, steps

TOKEN = "r8_accounting_secret_token_0123456789"


def logs_of(record: RunRecord, leaf: StepRecord) -> str:
    assert leaf.logs is not None
    return (record.run_dir / leaf.logs).read_text(encoding="utf-8")


def test_a_paid_prediction_keeps_its_predict_time_and_its_cleaned_logs(tmp_path: Path) -> None:
    secrets.register(TOKEN)
    hostile = f"Using seed: 7\n\x1b[31mred\x1b[0m bell\x07 nul\x00 {TOKEN}\n 50%|#####| 25/50\n"

    async def scenario(b: Bench) -> None:
        b.backend.when(Behaviour(logs=hostile))
        record = await b.run(steps(shot=shot()))
        step = record.steps["shot"]
        assert (step.obtained, step.metrics["predict_time"], step.logs) == (
            "created",
            0.01,
            "steps/shot/logs.txt",
        )
        assert logs_of(record, step) == "Using seed: 7\nred bell  nul  [redacted]\n 50%|#####| 25/50\n"
        assert record.totals() == Totals(created=1, reused=0, predict_time=0.01, cost=None)
        assert load_record(record.run_dir).steps["shot"].logs == "steps/shot/logs.txt"

    bench(tmp_path, scenario)


def test_long_logs_keep_their_end() -> None:
    text = kept_logs("x" * MAX_LOG_CHARS + "the end\n")
    assert text is not None and text.startswith(TRUNCATED) and text.endswith("the end\n")
    assert len(text) == len(TRUNCATED) + MAX_LOG_CHARS
    assert kept_logs(" \n") is None and kept_logs(None) is None


def test_each_item_of_a_foreach_step_keeps_its_own_logs(tmp_path: Path) -> None:
    async def scenario(b: Bench) -> None:
        b.backend.when_input(Behaviour(logs="about a mug\n"), prompt="a mug")
        b.backend.when_input(Behaviour(logs="about a vase\n"), prompt="a vase")
        record = await b.run(steps(shots={**shot("{{ item }}"), "foreach": ["a mug", "a vase"]}))
        items = record.steps["shots"].items
        assert [i.logs for i in items] == ["steps/shots/0/logs.txt", "steps/shots/1/logs.txt"]
        assert [logs_of(record, i) for i in items] == ["about a mug\n", "about a vase\n"]
        assert record.totals() == Totals(created=2, reused=0, predict_time=0.02, cost=None)

    bench(tmp_path, scenario)


def test_a_failed_prediction_keeps_its_logs(tmp_path: Path) -> None:
    async def scenario(b: Bench) -> None:
        b.backend.when(Behaviour(fail="CUDA out of memory", logs="loading weights\nCUDA out of memory\n"))
        record = await b.run(steps(shot=shot()))
        step = record.steps["shot"]
        assert step.status == "failed"
        assert logs_of(record, step) == "loading weights\nCUDA out of memory\n"
        # a failed prediction was created (and may be billed): paid, its time unknown
        assert record.totals() == Totals(created=1, reused=0, predict_time=0.0, cost=None)

    bench(tmp_path, scenario)


def test_reattached_and_recovered_predictions_carry_their_predict_time_and_logs(tmp_path: Path) -> None:
    async def scenario(b: Bench) -> None:
        b.backend.when(Behaviour(logs="made once\n"), times=-1)
        first = await b.run(steps(shot=shot()), run="first")
        key = first.steps["shot"].key
        assert key is not None
        for state, how in (("succeeded", "recovered"), ("created", "reattached")):
            await b.ledger.move(key, state)  # type: ignore[arg-type]
            again = await b.run(steps(shot=shot()), run=how)
            step = again.steps["shot"]
            assert (step.obtained, step.metrics.get("predict_time")) == (how, 0.01)
            assert logs_of(again, step) == "made once\n"
            assert again.totals() == Totals(created=1, reused=0, predict_time=0.01, cost=None)
        assert b.backend.made == 1  # nothing was paid twice

    bench(tmp_path, scenario)


def test_a_reused_result_shows_the_original_predict_time_but_is_not_paid(tmp_path: Path) -> None:
    async def scenario(b: Bench) -> None:
        b.backend.when(Behaviour(logs="made once\n"))
        first = await b.run(steps(shot=shot()))
        later = await b.run(steps(shot=shot()), run="later")
        step = later.steps["shot"]
        assert (step.obtained, step.metrics["predict_time"], step.logs) == ("reused", 0.01, None)
        assert later.totals() == Totals(created=0, reused=1, predict_time=0.0, cost=None)
        resumed = await b.run(steps(shot=shot()), previous=load_record(first.run_dir))
        step = resumed.steps["shot"]
        assert step.obtained == "reused"
        assert logs_of(resumed, step) == "made once\n"  # the logs this run directory kept when it paid

    bench(tmp_path, scenario)


class SyncAnswers(MemoryBackend):
    """Answers a create as the API's ``Prefer: wait`` does when it finished in time: ``processing``,
    the whole output, no metrics; ``wait`` polls nothing finished (as the API client); ``get`` fails
    while ``broken``."""

    broken = False

    async def create(self, version: str, input: Mapping[str, Any], **kw: Any) -> Prediction:
        made = await super().create(version, input, **kw)
        return dataclasses.replace(made, status="processing", metrics={}, completed_at=None, logs="partial")

    async def wait(self, prediction: Prediction, **kw: Any) -> Prediction:
        if prediction.terminal:  # as the API client: a finished prediction is not polled
            return prediction
        return await super().wait(prediction, **kw)

    async def get(self, prediction_id: str) -> Prediction:
        if self.broken:
            self.gets.append(prediction_id)
            raise ApiError("the API answered 503 to GET", status_code=503)
        return await super().get(prediction_id)


def test_an_answer_without_metrics_is_completed_by_one_get(tmp_path: Path) -> None:
    async def scenario(b: Bench) -> None:
        b.backend = SyncAnswers()
        b.backend.when(Behaviour(logs="the whole log\n"), times=-1)
        record = await b.run(steps(shot=shot()))
        step = record.steps["shot"]
        assert (step.obtained, step.metrics, b.backend.gets) == ("created", {"predict_time": 0.01}, ["p1"])
        assert logs_of(record, step) == "the whole log\n"
        reused = await b.run(steps(shot=shot()), run="again")  # the ledger kept the final metrics
        assert reused.steps["shot"].metrics == {"predict_time": 0.01} and b.backend.gets == ["p1"]
        assert isinstance(b.backend, SyncAnswers)
        b.backend.broken = True  # the GET fails: the step still succeeds, without a predict_time
        other = await b.run(steps(shot=shot("a vase")), run="broken")
        step = other.steps["shot"]
        assert (step.status, step.metrics, b.backend.gets) == ("succeeded", {}, ["p1", "p2"])
        assert logs_of(other, step) == "partial"
        assert b.backend.made == 2

    bench(tmp_path, scenario)

"""run.json read back: one typed record for resume, reports and sweeps; its JSON Schema stays true."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from kkiai_pipeline import rundir
from kkiai_pipeline.artifacts import Artifact
from kkiai_pipeline.multirun import collect_jobs
from kkiai_pipeline.pricing import Price
from kkiai_pipeline.rundir import (
    JOURNAL,
    MANIFEST,
    RunRecord,
    StepRecord,
    Totals,
    load_record,
    read_record,
    step_json,
)

from .integration import kkiai_run

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "run.schema.json"
VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"
STATUSES = "pending, running, succeeded, failed, canceled, aborted, skipped, unresolved"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(loaded)
    return loaded


def a_run(run_dir: Path, **steps: StepRecord) -> RunRecord:
    run_dir.mkdir(parents=True, exist_ok=True)
    steps = steps or {"gen": StepRecord("stability-ai/sdxl", VERSION)}
    record = RunRecord(run_dir, "demo", {"kind": "sandbox", "base_url": "http://127.0.0.1:9/v1"}, steps)
    record.start()
    return record


def write_manifest(run_dir: Path, data: Any) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / MANIFEST).write_text(json.dumps(data), encoding="utf-8")


def v1_manifest() -> dict[str, Any]:
    """run.json as the first version wrote it: no schema_version or run_id, ``cache`` for ``obtained``."""
    step = {
        "model": "stability-ai/sdxl",
        "version": VERSION,
        "depends_on": [],
        "status": "succeeded",
        "input": {"prompt": "a mug"},
        "prediction_id": "p1",
        "error": None,
        "created_at": "2026-01-02T03:04:05Z",
        "started_at": None,
        "completed_at": None,
        "metrics": {},
        "outputs": [],
        "output": None,
        "attempts": [],
        "cache": "hit",
        "cache_key": "abc",
        "creating_since": None,
        "items": [],
        "index": None,
        "item": None,
    }
    return {
        "pipeline": "demo",
        "source": None,
        "seed": None,
        "status": "succeeded",
        "started_at": "2026-01-02T03:04:05.000Z",
        "finished_at": "2026-01-02T03:04:07.500Z",
        "api": {"kind": "sandbox", "base_url": "http://127.0.0.1:9/v1"},
        "steps": {"gen": step},
    }


# -- the schema --------------------------------------------------------------------------------------


def test_the_run_json_of_a_real_run_is_valid_and_reads_back_whole(
    tmp_path: Path, schema: dict[str, Any]
) -> None:
    result = kkiai_run("pipeline=product_shots", "api=sandbox", cwd=tmp_path, token=None)
    assert result.code == 0, result.stderr
    manifest = result.manifest
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in Draft202012Validator(schema).iter_errors(manifest)
    ]
    assert errors == []
    reading = read_record(result.run_dir)
    assert reading.problems == ()
    assert reading.record is not None
    assert json.loads(json.dumps(reading.record.to_json(), default=str)) == manifest
    assert {s.obtained for s in reading.record.steps.values()} == {"created"}
    assert load_record(result.run_dir).run_id == manifest["run_id"]


def test_the_schema_s_step_properties_are_step_record_s_fields(schema: dict[str, Any]) -> None:
    step = schema["$defs"]["step"]
    names = [f.name for f in fields(StepRecord)]
    assert list(step["properties"]) == names
    assert step["required"] == names
    assert step["properties"]["status"]["enum"] == STATUSES.split(", ")


def test_the_schema_s_other_objects_are_what_the_writer_writes(
    schema: dict[str, Any], tmp_path: Path
) -> None:
    written = a_run(tmp_path).to_json()
    assert list(schema["properties"]) == list(written)
    assert schema["required"] == list(written)
    artifact = schema["$defs"]["artifact"]
    assert list(artifact["properties"]) == artifact["required"] == [f.name for f in fields(Artifact)]


def test_a_written_record_with_items_and_outputs_is_valid(schema: dict[str, Any], tmp_path: Path) -> None:
    step = StepRecord("o/m", VERSION, obtained="reused", note="reused: stored by an earlier run")
    step.items = [StepRecord("o/m", VERSION, index=0, item={"x": 1})]
    step.outputs = [Artifact("steps/gen/output_0.png", "http://x/a.png", "0" * 64, 3, "image/png")]
    record = a_run(tmp_path, gen=step)
    record.finish(interrupted=False)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert list(Draft202012Validator(schema).iter_errors(manifest)) == []
    reread = read_record(tmp_path).record
    assert reread is not None
    assert reread.steps["gen"] == step


def test_a_step_is_written_as_asdict_writes_it_without_copying() -> None:
    item = StepRecord("o/m", VERSION, index=3, item={"prompt": "x"}, input={"prompt": "x", "seed": [1]})
    item.outputs = [Artifact("steps/gen/3/output_0.png", "http://x/a.png", "0" * 64, 3, "image/png")]
    item.attempts = [{"prediction_id": "p", "status": "succeeded", "error": None}]
    step = StepRecord("o/m", VERSION, depends_on=["a"], items=[item], metrics={"predict_time": 1.5})
    assert step_json(step) == asdict(step)
    assert step_json(step)["items"][0]["input"] is item.input  # read once by json.dumps, not copied


def test_snapshots_of_a_large_foreach_cost_no_more_than_its_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rundir, "SNAPSHOT_INTERVAL", 0.0)  # by size alone: no clock lets it off
    written: list[int] = []
    write = rundir.write_json_atomic

    def counted(path: Path, data: Any, *, indent: int | None = 2) -> int:
        written.append(write(path, data, indent=indent))
        return written[-1]

    monkeypatch.setattr(rundir, "write_json_atomic", counted)
    step = StepRecord("o/m", VERSION, items=[StepRecord("o/m", VERSION, index=i) for i in range(2000)])
    record = a_run(tmp_path, gen=step)
    record.note("gen")
    for item in step.items:
        item.start()
        item.input, item.key = {"prompt": f"prompt {item.index}"}, f"{item.index:064d}"
        item.succeed(outputs=[Artifact(f"steps/gen/{item.index}/output_0.png", "", "0" * 64, 3, "image/png")])
        record.note("gen", item=item.index)
    journal = (tmp_path / JOURNAL).stat().st_size
    snapshots = written[1:]  # after the one of start()
    assert 1 <= len(snapshots) < 20
    assert sum(snapshots) <= 2 * journal  # each rewrite was paid for by as much journal
    record.finish(interrupted=False)
    assert read_record(tmp_path).record == record


# -- reading what is there --------------------------------------------------------------------------


def test_no_run_json_is_a_reading_without_a_record(tmp_path: Path) -> None:
    reading = read_record(tmp_path / "never")
    assert (reading.record, reading.problem) == (None, "no run.json (the run did not start)")
    with pytest.raises(FileNotFoundError):
        load_record(tmp_path / "never")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not json", "run.json could not be read: Expecting value: line 1 column 1 (char 0)"),
        ("[1, 2]", "run.json does not hold an object"),
        (
            b"\xff\xfe",
            "run.json could not be read: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
        ),
    ],
)
def test_an_unreadable_run_json_says_why(tmp_path: Path, content: str | bytes, problem: str) -> None:
    tmp_path.joinpath(MANIFEST).write_bytes(content if isinstance(content, bytes) else content.encode())
    reading = read_record(tmp_path)
    assert (reading.record, reading.problem) == (None, problem)


def test_nesting_beyond_reason_is_refused_not_raised(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    problem = read_record(tmp_path).problem
    assert problem is not None and problem.startswith("run.json could not be read: maximum recursion depth")
    step: dict[str, Any] = {"model": "o/m", "version": VERSION}
    for _ in range(400):  # deep enough for the reader, not for the JSON decoder
        step = {"model": "o/m", "version": VERSION, "items": [step]}
    manifest = a_run(tmp_path).to_json()
    manifest["steps"]["gen"] = step
    write_manifest(tmp_path, manifest)
    assert read_record(tmp_path).problem == "run.json is nested too deeply to read"


def test_a_directory_in_place_of_run_json(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).mkdir()
    assert (
        read_record(tmp_path).problem
        == f"run.json could not be read: [Errno 21] Is a directory: '{tmp_path / MANIFEST}'"
    )


def test_a_version_1_file_reads_without_a_word(tmp_path: Path) -> None:
    write_manifest(tmp_path, v1_manifest())
    reading = read_record(tmp_path)
    assert reading.problems == ()
    assert reading.record is not None
    assert reading.record.run_id == ""  # none is invented for a report
    step = reading.record.steps["gen"]
    assert (step.obtained, step.key, step.note, step.started) == ("reused", None, None, None)
    assert reading.record.seconds == 2.5
    resumed = load_record(tmp_path)
    assert len(resumed.run_id) == 32  # a resume gives the run an id from now on


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    manifest = a_run(tmp_path).to_json()
    manifest["from_the_future"] = {"x": 1}
    manifest["steps"]["gen"]["also_new"] = [1, 2]
    write_manifest(tmp_path, manifest)
    assert read_record(tmp_path).problems == ()
    assert load_record(tmp_path).steps["gen"] == StepRecord("stability-ai/sdxl", VERSION)


def test_wrong_values_are_set_aside_and_named(tmp_path: Path) -> None:
    manifest = a_run(tmp_path).to_json()
    manifest["seed"] = "7"
    del manifest["pipeline"]
    manifest["steps"]["gen"].update(status="queued", depends_on="a", obtained="bought", metrics=None)
    manifest["steps"]["gen"]["outputs"] = [None, {"path": "a.png"}]
    manifest["steps"]["odd"] = None
    write_manifest(tmp_path, manifest)
    reading = read_record(tmp_path)
    assert reading.problems == (
        "pipeline: missing",
        "steps.gen.depends_on: 'a' is not a list",
        f"steps.gen.status: 'queued' is not one of {STATUSES}",
        "steps.gen.obtained: 'bought' is not one of created, reused, shared, reattached, recovered",
        "steps.gen.metrics: None is not an object",
        "steps.gen.outputs[0]: None is not an object",
        "steps.gen.outputs[1].url: missing",
        "steps.gen.outputs[1].sha256: missing",
        "steps.gen.outputs[1].bytes: missing",
        "steps.gen.outputs[1].content_type: missing",
        "steps.odd: None is not an object",
        "seed: '7' is not an integer",
    )
    assert reading.record is not None
    assert (reading.record.pipeline, reading.record.seed) == ("", None)
    assert list(reading.record.steps) == ["gen"]
    assert reading.record.steps["gen"] == StepRecord("stability-ai/sdxl", VERSION)
    assert reading.problem == "; ".join(reading.problems[:5]) + " (and 7 more)"
    with pytest.raises(ValueError) as caught:
        load_record(tmp_path)
    assert str(caught.value) == f"run.json: {reading.problem}"


def test_a_file_from_a_newer_version_is_read_as_far_as_it_goes(tmp_path: Path) -> None:
    manifest = a_run(tmp_path).to_json()
    manifest["schema_version"] = 3
    write_manifest(tmp_path, manifest)
    reading = read_record(tmp_path)
    assert reading.problems == ("schema_version: 3 is not one this version reads (1 to 2)",)
    assert reading.record is not None and list(reading.record.steps) == ["gen"]
    with pytest.raises(ValueError, match=r"^run\.json: schema_version: 3 is not one"):
        load_record(tmp_path)


def test_a_step_record_from_json_is_strict() -> None:
    with pytest.raises(ValueError) as caught:
        StepRecord.from_json({"model": "o/m", "status": "done"})
    assert str(caught.value) == f"step.version: missing; step.status: 'done' is not one of {STATUSES}"


# -- a run that crashed: the journal --------------------------------------------------------------


def crashed_run(run_dir: Path) -> RunRecord:
    """A foreach step with two items: item 1 succeeded, the journal's last line torn by the crash."""
    step = StepRecord("o/m", VERSION)
    record = a_run(run_dir, gen=step)
    snapshot = (run_dir / MANIFEST).read_text()
    step.start()
    step.items = [StepRecord("o/m", VERSION, index=i, item=f"v{i}") for i in range(2)]
    record.note("gen")
    step.items[1].start()
    step.items[1].succeed(outputs=[])
    record.note("gen", item=1)
    assert record._journal is not None
    record._journal.close()
    (run_dir / MANIFEST).write_text(snapshot)  # the last snapshot is older than the journal
    with (run_dir / JOURNAL).open("a") as journal:
        journal.write(json.dumps({"step": "gen", "item": 7, "record": asdict(step.items[0])}) + "\n")
        journal.write('["not an entry"]\n{"step": "gen", "record": {"model": "o/m", "ver')
    return record


def test_a_crashed_run_is_read_with_its_journal(tmp_path: Path) -> None:
    crashed_run(tmp_path)
    reading = read_record(tmp_path)
    assert reading.problems == ()
    assert reading.record is not None
    step = reading.record.steps["gen"]
    assert step.status == "running"
    assert [(i.index, i.item, i.status) for i in step.items] == [(0, "v0", "pending"), (1, "v1", "succeeded")]
    assert load_record(tmp_path).steps == reading.record.steps


def test_the_sweep_summary_reads_its_jobs_through_the_record(tmp_path: Path) -> None:
    for number in range(3):
        (tmp_path / str(number) / ".hydra").mkdir(parents=True)
        (tmp_path / str(number) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={number}"]))
    write_manifest(tmp_path / "0", v1_manifest())
    crashed_run(tmp_path / "1")
    jobs = collect_jobs(tmp_path)
    assert [(j["job"], j["status"], j["duration_s"], j["error"]) for j in jobs] == [
        (0, "succeeded", 2.5, None),
        (1, "running", None, None),
        (2, "not run", None, None),
    ]
    assert jobs[0]["started_at"] == "2026-01-02T03:04:05.000Z"


def test_totals_count_paid_and_reused_predictions_and_the_predict_time_paid(tmp_path: Path) -> None:
    def leaf(obtained: str | None, seconds: Any = None) -> StepRecord:
        step = StepRecord(model="m", version="v")
        step.obtained = obtained  # type: ignore[assignment]
        if seconds is not None:
            step.metrics = {"predict_time": seconds}
        return step

    fanned = StepRecord(model="m", version="v")
    fanned.items = [leaf("created", 1.5), leaf("reused", 9.0), leaf("recovered", 2)]
    record = RunRecord(
        run_dir=tmp_path,
        pipeline="p",
        api={},
        steps={
            "a": leaf("created", 0.25),
            "b": leaf("shared", 4.0),
            "c": leaf("reattached", "oops"),
            "d": fanned,
            "e": leaf(None),
        },
    )
    assert record.totals() == Totals(created=4, reused=2, predict_time=3.75)


def test_totals_estimate_the_cost_of_what_was_paid_from_the_run_s_prices(tmp_path: Path) -> None:
    def leaf(model: str, obtained: str, seconds: float | None = None) -> StepRecord:
        step = StepRecord(model=model, version="v", obtained=obtained)  # type: ignore[arg-type]
        step.metrics = {} if seconds is None else {"predict_time": seconds}
        return step

    fanned = StepRecord(model="o/flat", version="v")
    fanned.items = [leaf("o/flat", "created"), leaf("o/flat", "reused"), leaf("o/flat", "reattached")]
    steps = {"a": leaf("o/timed", "created", 10.0), "b": leaf("o/timed", "shared", 99.0), "c": fanned}
    record = RunRecord(run_dir=tmp_path, pipeline="p", api={}, steps=steps)
    assert record.totals().cost is None  # no prices: no estimate, not a cost of 0
    record.prices = {"o/flat": Price(per_prediction=0.5), "o/timed": Price(per_second=0.01)}
    assert record.totals() == Totals(created=3, reused=2, predict_time=10.0, cost=1.1)
    assert record.cost_of(steps["a"]) == pytest.approx(0.1)
    assert record.cost_of(steps["b"]) is None  # shared: paid for elsewhere
    del record.prices["o/flat"]  # a paid prediction without a price: the total is unknown, not lower
    assert record.totals().cost is None
    record.prices["o/flat"] = Price(per_prediction=0.5)
    steps["a"].metrics = {"predict_time": float("nan")}  # per second without a usable time
    assert record.totals() == Totals(created=3, reused=2, predict_time=0.0, cost=None)
    steps["a"].metrics = {"predict_time": 10.0}
    # two failed attempts before a success: three predictions paid for; flat prices still add up, a
    # per-second one without the failed ones' time cannot
    fanned.items[0].attempts = [{"prediction_id": "p1", "status": "failed", "error": "E"}] * 2
    assert record.totals() == Totals(created=5, reused=2, predict_time=10.0, cost=2.1)
    steps["a"].attempts = [{"prediction_id": "p0", "status": "canceled", "error": "timed out"}]
    assert record.totals() == Totals(created=6, reused=2, predict_time=10.0, cost=None)
    steps["a"].attempts = [{"prediction_id": None, "status": "failed", "error": "refused"}]  # never created
    assert record.totals().created == 5


def test_prices_and_totals_are_written_and_read_back(schema: dict[str, Any], tmp_path: Path) -> None:
    step = StepRecord("o/m", VERSION, obtained="created", metrics={"predict_time": 2.0})
    record = a_run(tmp_path, gen=step)
    record.prices = {"o/m": Price(per_second=0.25, expected_seconds=3.0)}
    record.finish(interrupted=False)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert list(Draft202012Validator(schema).iter_errors(manifest)) == []
    assert manifest["totals"] == {"created": 1, "reused": 0, "predict_time": 2.0, "cost": 0.5}
    assert manifest["prices"] == {"o/m": {"per_prediction": 0.0, "per_second": 0.25, "expected_seconds": 3.0}}
    reread = read_record(tmp_path)
    assert reread.problems == ()
    assert reread.record is not None and reread.record.totals().cost == 0.5

"""Batches from files: lines(), csv() and jsonl() read rows beside the pipeline, checked row by row."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kkiai_pipeline import planning, rowfiles
from kkiai_pipeline.artifacts import Artifact
from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.errors import PipelineError
from kkiai_pipeline.localfiles import LocalFiles
from kkiai_pipeline.pipeline import parse_pipeline
from kkiai_pipeline.planning import Plan, plan
from kkiai_pipeline.rundir import RunRecord, StepRecord
from kkiai_pipeline.sandbox import SandboxConfig, serve_in_thread
from kkiai_pipeline.templating import TemplateProblem, Templates
from kkiai_pipeline.terminal import summary

from .integration import kkiai_run
from .test_reliability import manifest, start_run, wait_until

CONTEXT: dict[str, Any] = {"params": {}, "steps": {}}


def render(folder: Path, source: str, **files: Any) -> Any:
    return Templates(LocalFiles(folder, **files).functions()).parse(source).render(CONTEXT)


def test_lines_leave_out_blanks_and_comments_and_remember_their_line(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text(
        "\ufeff# a comment\n  first prompt  \n\n   \n\t# indented comment\nsecond\r\n"
    )
    rows = render(tmp_path, "{{ lines('p.txt') }}")
    assert rows == ["first prompt", "second"]
    assert [rows.where(i) for i in range(2)] == ["p.txt line 2", "p.txt line 6"]


def test_csv_rows_are_mappings_by_header_with_text_values(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text('prompt , seed\n"a mug, on marble",1\n\n"two\nlines",2\n')
    rows = render(tmp_path, "{{ csv('s.csv') }}")
    assert rows == [{"prompt": "a mug, on marble", "seed": "1"}, {"prompt": "two\nlines", "seed": "2"}]
    assert [rows.where(i) for i in range(2)] == ["s.csv line 2", "s.csv line 4"]
    assert render(tmp_path, "{{ csv('s.csv')[1].seed | int + 1 }}") == 3


def test_jsonl_rows_keep_their_json_types(tmp_path: Path) -> None:
    (tmp_path / "j.jsonl").write_text('{"prompt": "x", "seed": 3, "tags": ["a"]}\n\n{"prompt": "y"}\n')
    rows = render(tmp_path, "{{ jsonl('j.jsonl') }}")
    assert rows == [{"prompt": "x", "seed": 3, "tags": ["a"]}, {"prompt": "y"}]
    assert rows.where(1) == "j.jsonl line 3"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("s.csv", "a,b\n1,2\n3\n", r"csv\('s.csv'\): line 3 has 1 fields, but the header names 2"),
        ("s.csv", "a,a\n1,2\n", r"the header names a more than once"),
        ("s.csv", "a,\n1,2\n", r"the header \(line 1\) has an empty column name"),
        ("s.csv", "\n\n", r"csv\('s.csv'\) is empty: its first line must name the columns"),
        ("j.jsonl", '{"a": 1}\n[1, 2]\n', r"jsonl\('j.jsonl'\): line 2 is list, not a JSON object"),
        ("j.jsonl", '{"a": 1}\n\n{"a": \n', r"jsonl\('j.jsonl'\): line 3 is not JSON"),
        ("j.jsonl", "[" * 100_000 + "\n", r"line 1 is (nested too deeply|not JSON)"),
        ("p.txt", b"ok\nbad \xff\n", r"lines\('p.txt'\): line 2 is not UTF-8 text"),
    ],
)
def test_a_bad_file_names_the_line(tmp_path: Path, name: str, text: str | bytes, message: str) -> None:
    (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    function = {"csv": "csv", "jsonl": "jsonl", "txt": "lines"}[name.rsplit(".", 1)[1]]
    with pytest.raises(TemplateProblem, match=message):
        render(tmp_path, f"{{{{ {function}('{name}') }}}}")


def test_rows_are_confined_like_file(tmp_path: Path) -> None:
    base = tmp_path / "pipelines"
    base.mkdir()
    (tmp_path / "secret.txt").write_text("token\n")
    (base / "link.txt").symlink_to(tmp_path / "secret.txt")
    (base / "dir").mkdir()
    for name in ("../secret.txt", "link.txt", "/etc/passwd"):
        with pytest.raises(TemplateProblem, match=r"lines\('.*'\): .* is outside the pipeline's folder"):
            render(base, f"{{{{ lines('{name}') }}}}")
    with pytest.raises(TemplateProblem, match=r"csv\('dir'\): .* is not a regular file"):
        render(base, "{{ csv('dir') }}")
    with pytest.raises(TemplateProblem, match=r"jsonl\('nope.jsonl'\): no such file"):
        render(base, "{{ jsonl('nope.jsonl') }}")
    assert render(base, "{{ lines('link.txt') }}", allowed_dirs=(tmp_path,)) == ["token"]


def test_size_and_row_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "p.txt").write_text("a\nb\nc\n")
    monkeypatch.setattr(rowfiles, "MAX_BYTES", 5)
    with pytest.raises(TemplateProblem, match=r"lines\('p.txt'\) is over the limit of 5 bytes"):
        render(tmp_path, "{{ lines('p.txt') }}")
    monkeypatch.setattr(rowfiles, "MAX_BYTES", 100)
    monkeypatch.setattr(rowfiles, "MAX_ROWS", 2)
    with pytest.raises(TemplateProblem, match=r"lines\('p.txt'\) has 3 rows, over the limit of 2"):
        render(tmp_path, "{{ lines('p.txt') }}")


def test_a_large_file_fits_the_template_budget_but_what_templates_make_of_it_does_not(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("".join(f"{i:05d} " + "x" * 300 + "\n" for i in range(10_000)))
    assert len(render(tmp_path, "{{ lines('p.txt') }}")) == 10_000  # 3 MB of rows: the file's own limit
    with pytest.raises(TemplateProblem, match="size budget"):
        render(tmp_path, "{{ lines('p.txt') | join(',') }}")  # a 3 MB text made by a template
    with pytest.raises(TemplateProblem, match="size budget"):
        render(tmp_path, "{{ lines('p.txt') * 1000 }}")


# -- planning: every row checked before anything is paid ------------------------------------------------


def make_plan(folder: Path, steps: dict[str, Any]) -> Plan:
    source = folder / "p.yaml"
    pipeline = parse_pipeline({"name": "p", "params": {"style": "photo"}, "steps": steps}, source=source)
    return plan(pipeline, catalog=default_catalog(), templates=Templates(LocalFiles(folder).functions()))


def problems(folder: Path, steps: dict[str, Any]) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        make_plan(folder, steps)
    return [str(p) for p in caught.value.problems]


SHOTS = {
    "model": "stability-ai/sdxl",
    "foreach": "{{ csv('shots.csv') }}",
    "input": {
        "prompt": "{{ item.prompt }}, {{ params.style }}",
        "guidance_scale": "{{ item.guidance | float }}",
        "width": "{{ item.width | int }}",
        "height": 768,
    },
}


def test_every_bad_row_is_reported_with_file_step_line_and_field(tmp_path: Path) -> None:
    rows = ["prompt,guidance,width", "a,7,768", "b,200,768", "", "c,7,770", "d,0.5,768"]
    (tmp_path / "shots.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "jobs.jsonl").write_text('{"prompt": "x"}\n{"promt": "y"}\n')
    found = problems(
        tmp_path,
        {
            "shots": SHOTS,
            "jobs": {
                "model": "stability-ai/sdxl",
                "foreach": "{{ jsonl('jobs.jsonl') }}",
                "input": {"prompt": "{{ item.prompt }}"},
            },
            "missing": {
                "model": "stability-ai/sdxl",
                "foreach": "{{ lines('nope.txt') }}",
                "input": {"prompt": "{{ item }}"},
            },
        },
    )
    where = f"{tmp_path / 'p.yaml'}, step"
    assert found == [
        f"{where} 'shots', field 'input.guidance_scale': shots.csv line 3 (item 1): "
        "guidance_scale must be between 1 and 50 (inclusive), got 200",
        f"{where} 'shots', field 'input.width': shots.csv line 5 (item 2): "
        "width must be a multiple of 8, got 770; try 768 or 776",
        f"{where} 'shots', field 'input.guidance_scale': shots.csv line 6 (item 3): "
        "guidance_scale must be between 1 and 50 (inclusive), got 0.5",
        f"{where} 'jobs', field 'input.prompt': jobs.jsonl line 2 (item 1): "
        "undefined value in '{{ item.prompt }}': 'dict object' has no attribute 'prompt'",
        f"{where} 'missing', field 'foreach': cannot render '{{{{ lines('nope.txt') }}}}': "
        f"lines('nope.txt'): no such file {tmp_path / 'nope.txt'}",
    ]


def test_many_bad_rows_are_named_up_to_a_limit_then_counted(tmp_path: Path) -> None:
    count = planning.ROW_PROBLEMS_SHOWN + 7
    (tmp_path / "shots.csv").write_text("prompt,guidance,width\n" + "a,99,768\n" * count)
    found = problems(tmp_path, {"shots": SHOTS})
    assert len(found) == planning.ROW_PROBLEMS_SHOWN + 1
    assert found[0].endswith(
        "shots.csv line 2 (item 0): guidance_scale must be between 1 and 50 (inclusive), got 99"
    )
    assert found[-1].endswith("field 'input.guidance_scale': ... and 7 more items with a problem here")


def test_every_row_is_checked_not_only_the_first_ones(tmp_path: Path) -> None:
    rows = ["prompt,guidance,width"] + ["a,7,768"] * 5000 + ["b,7,769"]
    (tmp_path / "shots.csv").write_text("\n".join(rows) + "\n")
    assert problems(tmp_path, {"shots": SHOTS}) == [
        f"{tmp_path / 'p.yaml'}, step 'shots', field 'input.width': shots.csv line 5002 (item 5000): "
        "width must be a multiple of 8, got 769; try 768 or 776"
    ]


def test_the_run_uses_the_rows_planning_checked(tmp_path: Path) -> None:
    (tmp_path / "shots.csv").write_text("prompt,guidance,width\na,7,768\n")
    the_plan = make_plan(tmp_path, {"shots": SHOTS})
    (tmp_path / "shots.csv").write_text("prompt,guidance,width\nb,999,1\n")  # edited after the check
    foreach = the_plan["shots"].foreach
    assert foreach.render(CONTEXT) == [{"prompt": "a", "guidance": "7", "width": "768"}]


# -- the shipped example, run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    with serve_in_thread(SandboxConfig(queue_seconds=0, predict_seconds=0.02)) as running:
        yield running


def test_the_shipped_prompt_batch_runs_one_prediction_a_row(tmp_path: Path, sandbox: Any) -> None:
    result = kkiai_run("pipeline=prompt_batch", f"api.base_url={sandbox.base_url}", cwd=tmp_path)
    assert result.code == 0, result.stderr
    steps = result.manifest["steps"]
    assert [i["input"]["prompt"] for i in steps["prompts"]["items"]] == [
        f"a ceramic mug on {where}, product photo, 50mm, high detail"
        for where in (
            "white marble, soft studio light",
            "a walnut desk, morning sun",
            "a linen tablecloth, overcast window light",
            "slate, dramatic rim light",
        )
    ]
    shots = steps["shots"]["items"]
    assert [(i["input"]["seed"], i["input"]["guidance_scale"]) for i in shots] == [
        (11, 7.5),
        (12, 6.0),
        (13, 9.0),
    ]
    assert sandbox.stats()["requests"]["create"] == 7


def test_a_batch_killed_mid_run_resumes_item_by_item_without_paying_twice(tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "prompts.txt").write_text("".join(f"prompt {i}\n" for i in range(80)))
    (folder / "batch.yaml").write_text(
        "name: batch\nsteps:\n  each:\n    model: stability-ai/stable-diffusion\n"
        "    foreach: \"{{ lines('prompts.txt') }}\"\n"
        "    input: {prompt: '{{ item }}', width: 64, height: 64, num_inference_steps: 1}\n"
    )
    with serve_in_thread(SandboxConfig(queue_seconds=0, predict_seconds=0.3)) as sandbox:
        args = ["pipeline=batch", f"api.base_url={sandbox.base_url}", "api.list_lag_seconds=1"]
        args += ["max_concurrency=20", "api.wait_seconds=1"]
        run = start_run(tmp_path, *args)
        wait_until(lambda: sandbox.stats()["requests"]["create"] >= 30)
        run.kill()  # SIGKILL: no clean-up of any kind
        run.communicate(timeout=30)
        paid_before = sandbox.stats()["requests"]["create"]
        assert paid_before < 80

        resumed = start_run(tmp_path, *args, "resume=true")
        _, stderr = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, stderr
        stats = sandbox.stats()
    items = manifest(tmp_path)["steps"]["each"]["items"]
    assert [i["status"] for i in items] == ["succeeded"] * 80
    assert stats["requests"]["create"] == 80  # one per item, across both processes
    assert stats.get("duplicates", 0) == 0
    how = {i["obtained"] for i in items[:10]}  # the first items finished before the kill
    assert how <= {"reused", "reattached", "recovered"}, how


def test_the_summary_of_a_large_batch_names_its_first_and_last_files(tmp_path: Path) -> None:
    step = StepRecord("stability-ai/sdxl", "v", status="succeeded")
    step.outputs = [
        Artifact(f"steps/b/{i}/output_0.png", "", "0" * 64, 1, "image/png") for i in range(10_000)
    ]
    table = summary(RunRecord(tmp_path, "p", {}, {"b": step}, status="succeeded"))
    line = table.splitlines()[1]
    assert line.endswith(
        "steps/b/0/output_0.png, steps/b/1/output_0.png, steps/b/2/output_0.png, … steps/b/9997/output_0.png, "
        "steps/b/9998/output_0.png, steps/b/9999/output_0.png (10,000 files)"
    )

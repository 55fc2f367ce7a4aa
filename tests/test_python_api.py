"""The Python API: run / run_async / sweep, composed as kkiai-run composes, on the offline emulator."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
import yaml

import kkiai_pipeline
from kkiai_pipeline.errors import ConfigError, PipelineError, Problem
from kkiai_pipeline.python_api import expand_sweep


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory: default run directories (outputs/..., multirun/...) land here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sandbox(tmp_path: Path, *more: str) -> list[str]:
    return ["api=sandbox", f"cache_dir={tmp_path / 'cache'}", *more]


def test_notebook_style_run_async_and_sync_run_inside_a_running_loop(
    workdir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    async def main() -> tuple[kkiai_pipeline.RunResult, kkiai_pipeline.RunResult]:
        first = await kkiai_pipeline.run_async("product_shots", overrides=sandbox(workdir))
        # A notebook cell calling the blocking form: asyncio.run() would refuse inside this loop.
        second = kkiai_pipeline.run("product_shots", overrides=sandbox(workdir))
        return first, second

    first, second = asyncio.run(main())

    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert first.ok and second.ok
    assert first.run_dir != second.run_dir  # same second or not: two directories
    assert first.run_dir.parent == workdir / "outputs" / "product_shots"
    assert list(first.steps) == ["generate", "cleanup", "cutout"]
    assert [s.obtained for s in first.steps.values()] == ["created", "created", "created"]
    assert [s.obtained for s in second.steps.values()] == ["reused", "reused", "reused"]
    generate = first.steps["generate"]
    assert generate.status == "succeeded" and generate.prediction_id and generate.error is None
    assert len(generate.outputs) == 2
    assert len(first.outputs) == 4
    for out in first.outputs:
        assert out.path.is_file() and out.path.is_relative_to(first.run_dir)
        assert hashlib.sha256(out.path.read_bytes()).hexdigest() == out.sha256
        assert out.content_type == "image/png" and out.bytes == out.path.stat().st_size
    assert second.steps["cutout"].prediction_id == first.steps["cutout"].prediction_id
    # As kkiai-run leaves it: the record, Hydra's files, the log.
    manifest = json.loads((first.run_dir / "run.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "succeeded"
    overrides = yaml.safe_load((first.run_dir / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    assert overrides == ["pipeline=product_shots", *sandbox(workdir)]
    assert (first.run_dir / ".hydra" / "config.yaml").is_file()
    assert "generate: created prediction" in (first.run_dir / "run.log").read_text(encoding="utf-8")
    assert "generate: reusing prediction" in (second.run_dir / "run.log").read_text(encoding="utf-8")
    assert capfd.readouterr() == ("", "")  # nothing printed unless asked


def test_results_are_frozen(workdir: Path) -> None:
    result = kkiai_pipeline.run("product_shots", overrides=sandbox(workdir, "hydra.run.dir=mine"))
    assert result.run_dir == workdir / "mine"
    with pytest.raises(AttributeError):
        result.status = "failed"  # type: ignore[misc]


def test_a_chosen_run_directory_that_holds_a_run_is_refused(workdir: Path) -> None:
    kkiai_pipeline.run("product_shots", overrides=sandbox(workdir, "hydra.run.dir=mine"))
    with pytest.raises(ConfigError) as caught:
        kkiai_pipeline.run("product_shots", overrides=sandbox(workdir, "hydra.run.dir=mine"))
    assert str(caught.value) == (
        f"{workdir / 'mine'} already holds a run: resume it with resume=true, or choose another hydra.run.dir"
    )


def test_a_bad_pipeline_raises_every_problem_and_leaves_nothing(workdir: Path) -> None:
    (workdir / "pipelines").mkdir()
    source = workdir / "pipelines" / "bad.yaml"
    source.write_text(
        "name: bad\n"
        "steps:\n"
        "  first:\n"
        "    model: stability-ai/sdxl\n"
        "    input: {prompt: hello, no_such_input: 1}\n"
        "  second:\n"
        "    model: stability-ai/sdxl\n"
        "    input: {prompt: '{{ steps.missing.output }}'}\n",
        encoding="utf-8",
    )
    with pytest.raises(PipelineError) as caught:
        kkiai_pipeline.run("bad", overrides=sandbox(workdir))
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[1] == Problem(
        "reference to unknown step 'missing'", file=source.resolve(), step="second", field="input.prompt"
    )
    assert problems[0].step == "first" and "no_such_input" in str(problems[0])
    assert [p for p in (workdir / "outputs").rglob("*") if p.is_file()] == []


def test_an_unknown_setting_raises_with_did_you_mean(workdir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        kkiai_pipeline.run("product_shots", overrides=sandbox(workdir, "max_concurency=3"))
    assert str(caught.value) == "unknown setting 'max_concurency' (did you mean 'max_concurrency'?)"
    assert not (workdir / "outputs").exists()


def test_an_unknown_pipeline_raises_with_did_you_mean(workdir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        kkiai_pipeline.run("product_shot", overrides=sandbox(workdir))
    assert str(caught.value) == (
        "no pipeline named 'product_shot' (did you mean 'product_shots'?); searched KKIAI_PIPELINE_PATH, "
        "./pipelines"
    )


def test_the_token_never_goes_into_an_override(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KKIAI_API_TOKEN", "r8_secret_value_123")
    with pytest.raises(ConfigError) as caught:
        kkiai_pipeline.run("product_shots", overrides=["pipeline.params.subject=r8_secret_value_123"])
    assert str(caught.value).startswith("override 'pipeline.params.subject' holds the API token")
    with pytest.raises(ConfigError, match=r"^api\.token is not a setting"):
        kkiai_pipeline.run("product_shots", overrides=["api.token=abc"])
    assert not (workdir / "outputs").exists()


def test_a_sweep_override_needs_sweep(workdir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        kkiai_pipeline.run("product_shots", overrides=sandbox(workdir, "seed=1,2"))
    assert str(caught.value) == (
        "an override sweeps several values: use kkiai_pipeline.sweep() for a multirun"
    )


def test_expand_sweep_is_the_basic_sweepers_product() -> None:
    assert expand_sweep(["api=sandbox", "seed=1,2", "timeout=range(10,30,10)"]) == [
        ["api=sandbox", "seed=1", "timeout=10"],
        ["api=sandbox", "seed=1", "timeout=20"],
        ["api=sandbox", "seed=2", "timeout=10"],
        ["api=sandbox", "seed=2", "timeout=20"],
    ]
    assert expand_sweep([]) == [[]]


def test_a_sweep_pays_a_shared_step_once(workdir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    swept = "pipeline.steps.cleanup.input.objects_to_remove=person,dog"
    result = kkiai_pipeline.sweep("product_shots", overrides=sandbox(workdir, swept))

    assert result.status == "succeeded" and result.ok
    assert result.sweep_dir.parent == workdir / "multirun"
    assert [job.num for job in result.jobs] == [0, 1]
    assert [job.overrides[-1] for job in result.jobs] == [
        "pipeline.steps.cleanup.input.objects_to_remove=person",
        "pipeline.steps.cleanup.input.objects_to_remove=dog",
    ]
    generate = [job.result.steps["generate"] for job in result.jobs]
    assert sorted(str(step.obtained) for step in generate) == ["created", "shared"]  # paid once
    assert generate[0].prediction_id == generate[1].prediction_id
    cleanup = [job.result.steps["cleanup"] for job in result.jobs]
    assert [step.obtained for step in cleanup] == ["created", "created"]
    assert [job.result.run_dir for job in result.jobs] == [result.sweep_dir / "0", result.sweep_dir / "1"]
    summary = json.loads((result.sweep_dir / "sweep.json").read_text(encoding="utf-8"))
    assert summary["status"] == "succeeded"
    assert [job["status"] for job in summary["jobs"]] == ["succeeded", "succeeded"]
    assert (result.sweep_dir / "summary.csv").is_file()
    for job in result.jobs:
        assert "created prediction" in (job.result.run_dir / "run.log").read_text(encoding="utf-8")
    assert capfd.readouterr() == ("", "")


def test_a_sweep_with_one_bad_job_raises_before_anything_runs(workdir: Path) -> None:
    with pytest.raises(ConfigError):
        kkiai_pipeline.sweep("product_shots", overrides=sandbox(workdir, "seed=1,2", "max_concurency=1"))
    assert not (workdir / "multirun").exists()


def test_sweep_is_run_sweep() -> None:
    from kkiai_pipeline.python_api import run_sweep

    assert kkiai_pipeline.sweep is run_sweep


def test_the_readme_examples_run(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Python API") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(block, namespace)  # the cache is the test's own (conftest sets XDG_CACHE_HOME)
    printed = capsys.readouterr().out
    assert printed.startswith("succeeded ")
    assert "\nsucceeded [" in printed

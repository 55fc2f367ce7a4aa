from __future__ import annotations

from pathlib import Path

import pytest

from kkiai_pipeline.errors import PipelineError
from kkiai_pipeline.pipeline import parse_pipeline, read_pipeline_file


def test_parse_a_valid_pipeline() -> None:
    pipeline = parse_pipeline(
        {
            "name": "p",
            "params": {"s": "x"},
            "steps": {
                "a": {"model": "cjwbw/rembg", "input": {"image": "u"}, "needs": "b"},
                "b": {"model": "m"},
            },
        }
    )
    assert pipeline.name == "p"
    assert pipeline.steps["a"].needs == ("b",)
    assert pipeline.steps["b"].input == {}


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    source = tmp_path / "p.yaml"
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(
            {
                "name": "p",
                "stpes": {},
                "steps": {
                    "a": {"modle": "x", "input": {}},
                    "b": {"model": "m", "input": [1], "needs": [3]},
                    "bad id": {"model": "m"},
                },
            },
            source=source,
        )
    assert [str(p) for p in caught.value.problems] == [
        f"{source}, field 'stpes': unknown key 'stpes'; did you mean 'steps'?",
        f"{source}, step 'a', field 'modle': unknown key 'modle'; did you mean 'model'?",
        f"{source}, step 'a': missing 'model' (owner/name of a supported model)",
        f"{source}, step 'b', field 'input': 'input' must be a mapping",
        f"{source}, step 'b', field 'needs': 'needs' must be a list of step ids",
        f"{source}, step 'bad id': a step id uses letters, digits, '_' and '-', and starts with a letter or '_'",
    ]
    assert str(caught.value).startswith("pipeline 'p': 6 problems, nothing was sent to the API:\n  - ")


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "broken.yaml"
    source.write_text("name: x\nsteps:\n  a:\n    model: m\n    input: {prompt: {{ params.s }}}\n")
    with pytest.raises(PipelineError) as caught:
        read_pipeline_file(source)
    (problem,) = caught.value.problems
    assert problem.file == source
    assert problem.line == 5
    assert "must be quoted" in problem.message


def test_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    source = tmp_path / "list.yaml"
    source.write_text("- a\n- b\n")
    with pytest.raises(PipelineError, match="must be a mapping"):
        read_pipeline_file(source)


def test_only_selected_pipelines_are_read() -> None:
    from kkiai_pipeline.discovery import selected

    names = ["a", "b", "c", "shots"]
    assert selected(["pipeline=a", "pipeline.params.x=1", "-m", "--cfg", "job"], names) == {"a"}
    assert selected(["pipeline=a,b"], names) == {"a", "b"}
    assert selected(["+pipeline=choice(b,c)"], names) == {"b", "c"}
    assert selected(["pipeline=glob(s*)"], names) == {"shots"}
    assert selected(["pipeline=[a", "~pipeline", "seed=3"], names) == set()


def test_yaml_error_at_the_end_of_the_file_names_the_line(tmp_path: Path) -> None:
    source = tmp_path / "p.yaml"
    source.write_text("name: p\nsteps:\n  a: [\n")
    with pytest.raises(PipelineError) as caught:
        read_pipeline_file(source)
    assert caught.value.problems[0].line == 4
    assert caught.value.problems[0].message == (
        "YAML syntax error: expected the node content, but found '<stream end>'"
    )


def test_merge_keys_may_override_but_duplicates_may_not(tmp_path: Path) -> None:
    source = tmp_path / "p.yaml"
    source.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert read_pipeline_file(source)["other"] == {"x": 3, "y": 2}
    source.write_text("a: 1\nb: 2\na: 3\n")
    with pytest.raises(
        PipelineError, match=r"p.yaml:3: YAML syntax error: duplicate key 'a' \(first on line 1\)"
    ):
        read_pipeline_file(source)

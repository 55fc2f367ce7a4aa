"""``kkiai-runs``: the table, --json, index.html, --compare and the exit codes, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kkiai_pipeline.runs_cli import main

from .conftest import Home


def test_the_table_lists_outputs_and_multirun_and_writes_the_index(
    home: Home, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(home.root)
    assert main([]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    header = ["STARTED", "PIPELINE", "STATUS", "CREATED", "REUSED", "PREDICT", "COST", "PATH"]
    assert lines[0].split() == header  # COST: run B is priced
    assert len(lines) == 1 + 8
    assert lines[1].split()[:3] == ["-", "-", "unreadable"]
    assert lines[1].endswith(
        "outputs/junk/garbage  [run.json could not be read: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)]"
    )
    row = {line.split()[-1] if "(sweep" not in line else "multirun/s": line.split() for line in lines[2:]}
    assert row["outputs/product_shots/c"][2:6] == ["product_shots", "succeeded", "0", "3"]
    assert row["outputs/product_shots/a"][2:6] == ["product_shots", "succeeded", "3", "0"]
    assert row["outputs/product_shots/a"][7] == "-" and row["outputs/product_shots/b"][7] == "0.0350"
    assert lines[-1].endswith("multirun/s (sweep, 2 jobs)")  # the newest last
    assert err == "index: outputs/index.html\n"
    assert (home.outputs / "index.html").is_file()


def test_json_gives_the_same_rows_and_no_index_is_written_when_asked(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--json", "--no-index", str(home.root / "multirun"), str(home.a)]) == 0
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [(r["kind"], r["path"], r["created"], r["reused"]) for r in rows] == [
        ("run", str(home.a), 3, 0),
        ("sweep", str(home.sweep), 6, 0),
    ]
    assert rows[1]["page"] == str(home.sweep / "grid.html")
    assert err == ""
    assert not (home.root / "multirun" / "index.html").exists()


def test_a_folder_that_does_not_exist_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope"), str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"kkiai-runs: error: no such folder: {tmp_path / 'nope'}\n"


def test_no_runs_here_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    assert capsys.readouterr() == ("", "kkiai-runs: no runs or sweeps under outputs or multirun\n")
    assert list(tmp_path.iterdir()) == []


def test_compare_prints_what_differs_like_a_diff_and_writes_the_page(
    home: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--compare", str(home.a), str(home.b), "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(
        f"A  {home.a}  (product_shots, succeeded, 3 created, 0 reused)\n"
        f"B  {home.b}  (product_shots, succeeded, 3 created, 0 reused, estimated cost 0.0350)\n"
    )
    assert (
        "overrides that differ (.hydra/overrides.yaml):\n"
        "  pipeline.params.surface\n    A  (absent)\n    B  oak\n"
        "  seed\n    A  (absent)\n    B  7\n"
    ) in out
    assert (
        "settings that differ (.hydra/config.yaml):\n"
        "  pipeline.params.surface\n    A  white marble\n    B  oak\n"
        "  seed\n    A  null\n    B  7\n"
    ) in out
    assert (
        "step generate:\n  input.prompt\n"
        "    A  studio photo of a ceramic mug on white marble, soft light\n"
        "    B  studio photo of a ceramic mug on oak, soft light\n"
    ) in out
    assert "step cleanup:\n  input.image_path\n    A  output 1 of generate (sha256 " in out
    assert err == f"side by side: {tmp_path / 'compare.html'}\n"
    assert (tmp_path / "compare.html").is_file()


def test_compare_json_gives_the_differences_for_machines(
    home: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--compare", str(home.a), str(home.b), "--json", "--out", str(tmp_path)]) == 0
    found = json.loads(capsys.readouterr().out)
    assert (found["a"], found["b"]) == (str(home.a), str(home.b))
    assert {"key": "pipeline.params.surface", "a": "white marble", "b": "oak"} in found["settings"]
    assert found["steps"]["generate"][0] == {
        "key": "input.prompt",
        "a": "studio photo of a ceramic mug on white marble, soft light",
        "b": "studio photo of a ceramic mug on oak, soft light",
    }
    assert main(["--compare", str(home.a), str(home.b), str(home.root)]) == 2
    assert (
        capsys.readouterr().err
        == "kkiai-runs: error: --compare A B takes no other folder and writes no index.html\n"
    )


def test_compare_a_run_with_its_rerun_finds_nothing(
    home: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--compare", str(home.a), str(home.c), "--out", str(tmp_path / "same.html")]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n\nno setting or step input differs\n")
    assert (tmp_path / "same.html").is_file()


def test_compare_two_jobs_of_a_sweep_writes_compare_html_here(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["--compare", str(home.sweep / "0"), str(home.sweep / "1")]) == 0
    out, err = capsys.readouterr()
    assert "overrides that differ (.hydra/overrides.yaml):\n  seed\n    A  1\n    B  2\n" in out
    assert err == "side by side: compare.html\n"
    assert (tmp_path / "compare.html").is_file()


def test_compare_refuses_an_out_folder_that_does_not_exist(
    home: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no" / "page.html"
    assert main(["--compare", str(home.a), str(home.b), "--out", str(out)]) == 2
    assert capsys.readouterr() == ("", f"kkiai-runs: error: --out {out}: no such folder {out.parent}\n")


@pytest.mark.parametrize(
    ("which", "why"),
    [
        ("missing", "no such directory"),
        ("garbage", "run.json could not be read: Expecting property name"),
        (
            "sweep",
            "no run.json (the run did not start) ({sweep} is a sweep: compare two of its jobs, e.g. {sweep}/0 {sweep}/1)",
        ),
    ],
)
def test_compare_refuses_what_is_not_a_run(
    home: Home, tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str, why: str
) -> None:
    path = {"missing": home.root / "missing", "garbage": home.garbage, "sweep": home.sweep}[which]
    assert main(["--compare", str(home.a), str(path), "--out", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"kkiai-runs: error: {path} is not a run: {why.format(sweep=home.sweep)}")
    assert not (tmp_path / "compare.html").exists()


def test_a_page_that_cannot_be_written_is_said_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "index.html").mkdir()  # in the way of the page
    assert main([str(tmp_path), "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == "[]\n"
    assert err == f"kkiai-runs: could not write {tmp_path / 'index.html'}: Is a directory\n"

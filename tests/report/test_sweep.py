"""Reading a multirun as an X/Y/Z plot: which keys are axes, their labels, values and cells."""

from __future__ import annotations

from pathlib import Path

import yaml

from kkiai_pipeline.report.sweep import Job, layout, read_jobs, short_labels, swept_axes, task_order

from .factories import make_sweep

SUBJECT = "pipeline.params.subject"
SCALE = "pipeline.steps.generate.input.guidance_scale"
SURFACE = "pipeline.params.surface"


def jobs_of(*overrides: dict[str, str]) -> list[Job]:
    return [Job(str(i), Path(str(i)), {"pipeline": "demo", **o}) for i, o in enumerate(overrides)]


def test_one_swept_key_is_the_x_axis() -> None:
    plot = layout(jobs_of({SUBJECT: "a mug"}, {SUBJECT: "a vase"}, {SUBJECT: "a cup"}), [])
    assert plot.x is not None and plot.x.key == SUBJECT and plot.x.label == "subject"
    assert plot.x.values == ("a mug", "a vase", "a cup")
    assert plot.y is None and plot.z == ()
    assert plot.rows == ("",)
    [grid] = plot.grids
    assert {pos: job.name for pos, job in grid.cells.items()} == {(0, 0): "0", (0, 1): "1", (0, 2): "2"}


def test_two_swept_keys_are_x_and_y_in_the_order_written() -> None:
    # Hydra's basic sweeper: the first key outermost, the last one fastest
    jobs = jobs_of(
        {SUBJECT: "a mug", SCALE: "5"},
        {SUBJECT: "a mug", SCALE: "9"},
        {SUBJECT: "a vase", SCALE: "5"},
        {SUBJECT: "a vase", SCALE: "9"},
    )
    plot = layout(jobs, [SUBJECT, SCALE])
    assert plot.x is not None and plot.x.label == "subject"
    assert plot.y is not None and plot.y.label == "guidance_scale"
    [grid] = plot.grids
    assert {pos: job.name for pos, job in grid.cells.items()} == {
        (0, 0): "0",
        (1, 0): "1",
        (0, 1): "2",
        (1, 1): "3",
    }


def test_the_command_line_order_decides_which_key_is_x() -> None:
    jobs = jobs_of({SUBJECT: "a", SCALE: "5"}, {SUBJECT: "b", SCALE: "9"})
    plot = layout(jobs, [SCALE, SUBJECT])
    assert plot.x is not None and plot.x.key == SCALE


def test_a_third_key_makes_one_grid_per_value() -> None:
    jobs = jobs_of(
        *(
            {SUBJECT: s, SCALE: g, SURFACE: f}
            for s in ("a mug", "a vase")
            for g in ("5", "9")
            for f in ("marble", "slate")
        )
    )
    plot = layout(jobs, [SUBJECT, SCALE, SURFACE])
    assert [a.label for a in plot.z] == ["surface"]
    assert [[(a.label, v) for a, v in grid.fixed] for grid in plot.grids] == [
        [("surface", "marble")],
        [("surface", "slate")],
    ]
    marble = {pos: job.overrides for pos, job in plot.grids[0].cells.items()}
    assert len(marble) == 4
    assert marble[(1, 0)] == {"pipeline": "demo", SUBJECT: "a mug", SCALE: "9", SURFACE: "marble"}


def test_more_keys_give_one_grid_per_combination_of_the_others() -> None:
    jobs = jobs_of(
        *({"a": a, "b": b, "c": c, "d": d} for a in "12" for b in "34" for c in "56" for d in "78")
    )
    plot = layout(jobs, ["a", "b", "c", "d"])
    assert [a.key for a in plot.z] == ["c", "d"]
    assert len(plot.grids) == 4
    assert all(len(grid.cells) == 4 for grid in plot.grids)


def test_only_keys_that_vary_are_axes_and_the_rest_are_common() -> None:
    jobs = jobs_of({SUBJECT: "a", "cache": "False"}, {SUBJECT: "b", "cache": "False"})
    plot = layout(jobs, ["pipeline", SUBJECT, "cache"])
    assert plot.x is not None and plot.x.key == SUBJECT and plot.y is None
    assert plot.common == {"pipeline": "demo", "cache": "False"}


def test_no_varying_key_is_a_single_cell() -> None:
    plot = layout(jobs_of({SUBJECT: "a"}), [SUBJECT])
    assert plot.x is None and plot.y is None
    assert [dict(g.cells) for g in plot.grids] == [{(0, 0): plot.grids[0].cells[(0, 0)]}]


def test_a_key_missing_from_a_job_has_the_value_unset() -> None:
    axes = swept_axes(jobs_of({"seed": "1"}, {}), [])
    assert [(a.key, a.values) for a in axes] == [("seed", ("1", "(unset)"))]


def test_short_labels_are_the_shortest_unique_suffixes() -> None:
    assert short_labels([SUBJECT, SCALE, "a.seed", "b.seed", "seed", "pipeline"]) == {
        SUBJECT: "subject",
        SCALE: "guidance_scale",
        "a.seed": "a.seed",
        "b.seed": "b.seed",
        "seed": "seed",
        "pipeline": "pipeline",
    }


def test_job_overrides_are_read_and_unescaped(tmp_path: Path) -> None:
    make_sweep(
        tmp_path,
        ['pipeline.params.subject=a mug,"a vase [x]"', "+seed=1,2"],
        [{SUBJECT: "a\\ mug", "+seed": "1"}, {SUBJECT: '"a vase [x]"', "+seed": "2"}],
    )
    jobs = read_jobs(tmp_path)
    assert [j.name for j in jobs] == ["0", "1"]
    assert jobs[0].overrides == {"pipeline": "demo", SUBJECT: "a mug", "seed": "1", "cache": "False"}
    assert jobs[1].overrides[SUBJECT] == "a vase [x]"
    assert task_order(tmp_path) == [SUBJECT, "seed"]


def test_jobs_are_in_numeric_order_and_odd_folders_are_tolerated(tmp_path: Path) -> None:
    for name in ("10", "2", "notes", "0"):
        (tmp_path / name).mkdir()
    (tmp_path / "2" / ".hydra").mkdir()
    (tmp_path / "2" / ".hydra" / "overrides.yaml").write_text("{not: a list}")
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": "x"}}}))
    jobs = read_jobs(tmp_path)
    assert [j.name for j in jobs] == ["0", "2", "10"]
    assert all(j.overrides == {} for j in jobs)
    assert task_order(tmp_path) == []
    assert read_jobs(tmp_path / "missing") == []

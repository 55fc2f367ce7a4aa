"""The DAG's layout: levels by dependency, rows in run.json order, colours by status, escaped names."""

from __future__ import annotations

import re

from kkiai_pipeline.report.dag import Node, dag_svg, levels, positions
from kkiai_pipeline.report.html import STATUS_COLORS


def test_levels_of_a_chain_a_diamond_and_an_independent_step() -> None:
    deps = {
        "generate": [],
        "left": ["generate"],
        "right": ["generate"],
        "join": ["left", "right"],
        "late": ["generate", "join"],
        "alone": [],
    }
    assert levels(deps) == {"generate": 0, "left": 1, "right": 1, "join": 2, "late": 3, "alone": 0}


def test_a_level_is_one_past_the_deepest_dependency_whatever_the_order() -> None:
    assert levels({"c": ["b"], "b": ["a"], "a": []}) == {"c": 2, "b": 1, "a": 0}


def test_unknown_dependencies_and_self_loops_are_ignored() -> None:
    assert levels({"a": ["missing"], "b": ["a", "b"]}) == {"a": 0, "b": 1}


def test_a_cycle_does_not_loop_forever() -> None:
    found = levels({"a": ["b"], "b": ["a"], "c": []})
    assert set(found) == {"a", "b", "c"}
    assert found["c"] == 0


def test_positions_keep_run_json_order_within_a_level() -> None:
    assert positions({"g": [], "x": ["g"], "h": [], "y": ["g"]}) == {
        "g": (0, 0),
        "x": (1, 0),
        "h": (0, 1),
        "y": (1, 1),
    }


def test_the_svg_draws_nodes_by_status_and_one_edge_per_dependency() -> None:
    svg = dag_svg(
        [
            Node("generate", [], "succeeded", "stability-ai/sdxl", "step-0"),
            Node("cleanup", ["generate"], "failed", "o/object-removal", "step-1"),
            Node("cutout", ["cleanup"], "skipped", "cjwbw/rembg", "step-2"),
        ]
    )
    assert svg.startswith("<svg ") and svg.endswith("</svg>")
    assert svg.count('marker-end="url(#arrow)"') == 2
    for status in ("succeeded", "failed", "skipped"):
        fill, stroke = STATUS_COLORS[status]
        assert f'fill="{fill}" stroke="{stroke}"' in svg
    assert '<a href="#step-1">' in svg
    # columns follow the levels: x grows left to right
    xs = [int(x) for x in re.findall(r'<rect x="(\d+)"', svg)]
    assert xs == sorted(xs) and len(set(xs)) == 3


def test_node_text_is_escaped_and_clipped() -> None:
    svg = dag_svg([Node("<b>" + "x" * 40, [], "weird&status", "o/<m>", "step-0")])
    assert "<b>" not in svg and "<m>" not in svg
    assert "&lt;b&gt;" in svg
    assert "…" in svg
    assert 'fill="#f6f8fa" stroke="#57606a"' in svg  # an unknown status gets neutral colours


def test_no_steps_no_svg() -> None:
    assert dag_svg([]) == ""

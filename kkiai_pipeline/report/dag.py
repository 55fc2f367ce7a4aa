"""The pipeline's DAG as an inline SVG: layered left to right by dependency level, coloured by status.

A step without (known) dependencies is on level 0; any other step is one level right of its deepest
dependency. Within a level, steps keep their order in run.json. Dependencies on unknown steps are
ignored, and a cycle (which planning forbids) cannot make the layout loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .html import STATUS_COLORS, esc

NODE_W = 190
NODE_H = 48
GAP_X = 56
GAP_Y = 14
PAD = 10
_MAX_CHARS = 24


@dataclass(frozen=True)
class Node:
    """One step as the DAG draws it."""

    id: str
    depends_on: Sequence[str]
    status: str
    model: str
    anchor: str  # the fragment of the step's section in the report


def levels(deps: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each step's dependency level (longest path from a step without dependencies)."""
    level = dict.fromkeys(deps, 0)
    for _ in range(len(deps)):  # a longest path has fewer edges than there are steps
        changed = False
        for sid, parents in deps.items():
            new = max((level[p] + 1 for p in parents if p in level and p != sid), default=0)
            if new != level[sid]:
                level[sid], changed = new, True
        if not changed:
            break
    return level


def positions(deps: Mapping[str, Sequence[str]]) -> dict[str, tuple[int, int]]:
    """(column, row) of each step: the column is its level, rows keep run.json order."""
    rows: dict[int, int] = {}
    placed = {}
    for sid, lvl in levels(deps).items():
        placed[sid] = (lvl, rows.get(lvl, 0))
        rows[lvl] = rows.get(lvl, 0) + 1
    return placed


def dag_svg(nodes: Sequence[Node]) -> str:
    """An ``<svg>`` element drawing ``nodes`` and their dependency edges; empty text for no nodes."""
    if not nodes:
        return ""
    where = positions({n.id: tuple(n.depends_on) for n in nodes})
    cols = max(c for c, _ in where.values()) + 1
    rows = max(r for _, r in where.values()) + 1
    width = 2 * PAD + cols * NODE_W + (cols - 1) * GAP_X
    height = 2 * PAD + rows * NODE_H + (rows - 1) * GAP_Y
    edges = [_edge(where[p], where[n.id]) for n in nodes for p in n.depends_on if p in where and p != n.id]
    boxes = [_node(n, where[n.id]) for n in nodes]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="pipeline steps and their dependencies">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#6e7781"/></marker></defs>'
        + "".join(edges)
        + "".join(boxes)
        + "</svg>"
    )


def _corner(cell: tuple[int, int]) -> tuple[int, int]:
    col, row = cell
    return PAD + col * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y)


def _edge(src: tuple[int, int], dst: tuple[int, int]) -> str:
    (x1, y1), (x2, y2) = _corner(src), _corner(dst)
    x1, y1, y2 = x1 + NODE_W, y1 + NODE_H // 2, y2 + NODE_H // 2
    if x2 <= x1:  # only for a cycle: route the edge around the right side
        x2 += NODE_W
    mid = (x1 + x2) // 2
    return (
        f'<path d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2 - 2},{y2}" fill="none" stroke="#6e7781" '
        'stroke-width="1.5" marker-end="url(#arrow)"/>'
    )


def _node(node: Node, cell: tuple[int, int]) -> str:
    x, y = _corner(cell)
    fill, stroke = STATUS_COLORS.get(node.status, ("#f6f8fa", "#57606a"))
    model = node.model.rsplit("/", 1)[-1]
    return (
        f'<a href="#{esc(node.anchor)}"><g><title>{esc(node.id)}: {esc(node.status)} ({esc(node.model)})'
        f'</title><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="8" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="2"/>'
        f'<text x="{x + 10}" y="{y + 19}" font-size="13" font-weight="600" fill="#1f2328" '
        f'font-family="system-ui,sans-serif">{esc(_clip(node.id))}</text>'
        f'<text x="{x + 10}" y="{y + 37}" font-size="11" fill="{stroke}" '
        f'font-family="system-ui,sans-serif">{esc(_clip(f"{node.status} · {model}"))}</text></g></a>'
    )


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_CHARS else text[: _MAX_CHARS - 1] + "…"

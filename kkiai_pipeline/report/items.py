"""Parts of ``report.html`` about what each prediction cost and said: the run's totals, a step's
estimated cost, its logs (collapsed), and a ``foreach`` step's items one row each (label, input,
prediction, status, outputs)."""

from __future__ import annotations

from pathlib import Path

from ..api.prediction import MAX_LOG_CHARS
from ..pricing import format_cost
from ..rundir import PAID, RunRecord, StepRecord
from .html import badge, esc, kind_of, media, output_file, relative_url, short_value

MAX_ITEMS_SHOWN = 200  # rows of a foreach step's table; the rest are in run.json
_CELL_CHARS = 300


def totals_rows(run: RunRecord) -> list[tuple[str, str]]:
    """The summary's rows about money: predictions paid for and reused, predict time, estimated cost."""
    totals = run.totals()
    rows = [
        ("predictions", esc(f"{totals.created} paid for, {totals.reused} reused")),
        ("predict time", esc(f"{totals.predict_time:.2f} s paid for")),
    ]
    if totals.cost is not None:
        rows.append(("estimated cost", esc(f"{format_cost(totals.cost)} (from the prices in the config)")))
    elif run.prices:
        rows.append(("estimated cost", esc("unknown: a prediction paid for has no usable price")))
    return rows


def cost_row(run: RunRecord, step: StepRecord) -> tuple[str, str]:
    """A step's estimated cost (a foreach step: its items' sum), or an empty row when unpriced or not paid."""
    paid = [leaf for leaf in (step.items or [step]) if leaf.obtained in PAID]
    costs = [run.cost_of(leaf) for leaf in paid]
    if not paid or any(cost is None for cost in costs):
        return ("estimated cost", "")
    return ("estimated cost", esc(format_cost(sum(c for c in costs if c is not None))))


def logs_block(run_dir: Path, step: StepRecord) -> str:
    """The prediction's logs, collapsed (``<details>``: no script); empty when it kept none."""
    if not step.logs:
        return ""
    text = _read_logs(output_file(run_dir, step.logs))
    if text is None:
        return f'<p class="muted">logs: missing file {esc(step.logs)}</p>'
    lines = text.count("\n") + (not text.endswith("\n"))
    url = esc(relative_url(output_file(run_dir, step.logs), run_dir))
    return (
        f'<details class="logs"><summary>logs ({lines} line{"s" if lines != 1 else ""}, '
        f'<a href="{url}">{esc(step.logs)}</a>)</summary><pre class="log">{esc(text)}</pre></details>'
    )


def _read_logs(path: Path) -> str | None:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.read(MAX_LOG_CHARS)
    except OSError:
        return None


def items_table(run: RunRecord, sid: str, step: StepRecord) -> str:
    """A foreach step's items, one row each: label, input, prediction, status, outputs."""
    if not step.items:
        return ""
    shown = step.items[:MAX_ITEMS_SHOWN]
    head = "<tr><th>item</th><th>input</th><th>prediction</th><th>status</th><th>outputs</th></tr>"
    rows = [_item_row(run, sid, item) for item in shown]
    more = ""
    if len(step.items) > len(shown):
        more = f"showing the first {len(shown)} of {len(step.items)} items; run.json has all"
        more = f'<p class="muted">{more}</p>'
    return f'<table class="items">{head}{"".join(rows)}</table>{more}'


def _item_row(run: RunRecord, sid: str, item: StepRecord) -> str:
    label = f"{sid}[{item.index}]"
    value = f'<div class="mono">{esc(label)}</div><div>{esc(_clip(short_value(item.item)))}</div>'
    sent = (
        esc(_clip(short_value(item.input))) if item.input is not None else '<span class="muted">none</span>'
    )
    prediction = f'<span class="mono">{esc(item.prediction_id or "")}</span>'
    if item.obtained:
        prediction += f'<div class="muted">{esc(item.obtained)}</div>'
    prediction += logs_block(run.run_dir, item)
    status = badge(item.status)
    if item.error:
        status += f'<div class="error">{esc(_clip(item.error))}</div>'
    return (
        f'<tr class="item {esc(item.status)}"><td>{value}</td><td class="value">{sent}</td>'
        f"<td>{prediction}</td><td>{status}</td><td>{_thumbs(run.run_dir, item)}</td></tr>"
    )


def _thumbs(run_dir: Path, item: StepRecord) -> str:
    shown = []
    for out in item.outputs:
        file = output_file(run_dir, out.path)
        shown.append(media(relative_url(file, run_dir), kind_of(out), alt=out.path, exists=file.is_file()))
    return f'<div class="outputs">{"".join(shown)}</div>' if shown else ""


def _clip(text: str) -> str:
    return text if len(text) <= _CELL_CHARS else text[: _CELL_CHARS - 1] + "…"

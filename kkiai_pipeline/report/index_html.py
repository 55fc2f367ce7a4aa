"""``index.html``: every run and sweep ``kkiai-runs`` found, as cards, filterable by pipeline and status.

Each card shows the run's final outputs (a sweep: each job's first) as thumbnails that link to the
files where they are (relative URLs, nothing copied; lazy-loaded, so a page of a thousand runs opens
fast), and links to the run's ``report.html`` or the sweep's ``grid.html``. Like the other reports it
is one offline file; unlike them it carries a few lines of inline script, for the filters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..pricing import format_cost
from ..runs_index import UNREADABLE, Entry, short_time
from .html import BAD_STATUSES, badge, esc, media_kind, page, placeholder, relative_url, write_text_atomic

INDEX = "index.html"

_CSS = """
.filters{display:flex;gap:16px;align-items:center;flex-wrap:wrap;margin:12px 0;padding:8px 12px;
 background:#f6f8fa;border:1px solid #d0d7de;border-radius:8px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 12px;display:flex;flex-direction:column;gap:6px}
.card[hidden]{display:none}
.card.bad{border-left:6px solid #cf222e}
.card header{display:flex;gap:8px;align-items:baseline;flex-wrap:wrap}
.card .path{font-size:11px;overflow-wrap:anywhere}
.thumbs{display:flex;flex-wrap:wrap;gap:6px}
.thumbs img{width:96px;height:96px;object-fit:cover;border:1px solid #d0d7de;
 background:repeating-conic-gradient(#e6e6e6 0 25%,#fff 0 50%) 50%/16px 16px}
.thumbs .placeholder{width:96px;height:96px}
"""

# Shows the cards whose pipeline and status match the two menus, and counts them.
_SCRIPT = """
(function(){
  var pipeline=document.getElementById('f-pipeline'), status=document.getElementById('f-status');
  var cards=document.querySelectorAll('.card'), shown=document.getElementById('shown');
  function apply(){
    var n=0;
    cards.forEach(function(card){
      var ok=(!pipeline.value||card.dataset.pipeline===pipeline.value)&&
             (!status.value||card.dataset.status===status.value);
      card.hidden=!ok; if(ok){n++;}
    });
    shown.textContent=String(n);
  }
  pipeline.addEventListener('change',apply); status.addEventListener('change',apply); apply();
})();
"""


def write_index(target: Path, listed: Sequence[Entry], *, incomplete: bool = False) -> Path:
    """Write the index page of ``listed`` (newest first) to ``target``; returns ``target``."""
    write_text_atomic(target, render_index(target.parent, listed, incomplete=incomplete))
    return target


def render_index(base: Path, listed: Sequence[Entry], *, incomplete: bool = False) -> str:
    """The page, its links relative to the folder ``base``."""
    newest = sorted(listed, key=lambda e: (e.started_at or "", str(e.path)), reverse=True)
    runs = sum(1 for e in listed if e.kind == "run")
    facts = f"{_plural(runs, 'run')}, {_plural(len(listed) - runs, 'sweep')}"
    parts = [f'<h1>Runs</h1><p class="muted">{esc(facts)} under {esc(base)}</p>']
    if incomplete:
        parts.append('<p class="error">the search stopped early: not every folder was looked at</p>')
    parts.append(_filters(listed))
    cards = "".join(_card(base, entry) for entry in newest)
    parts.append(f'<div class="cards">{cards}</div>' if cards else placeholder("no runs", "nothing found"))
    parts.append(f"<style>{_CSS}</style><script>{_SCRIPT}</script>")
    return page("runs", "\n".join(parts))


def _filters(listed: Sequence[Entry]) -> str:
    pipelines = Counter(e.pipeline for e in listed)
    statuses = Counter(e.status for e in listed)
    return (
        '<div class="filters">'
        f'<label>pipeline <select id="f-pipeline">{_options(pipelines)}</select></label>'
        f'<label>status <select id="f-status">{_options(statuses)}</select></label>'
        f'<span><strong id="shown">{len(listed)}</strong> of {len(listed)} shown</span></div>'
    )


def _options(counts: Counter[str]) -> str:
    options = ['<option value="">all</option>']
    for value, n in sorted(counts.items()):
        options.append(f'<option value="{esc(value)}">{esc(value or "(unknown)")} ({n})</option>')
    return "".join(options)


def _card(base: Path, entry: Entry) -> str:
    css = "card bad" if entry.status in BAD_STATUSES or entry.status == UNREADABLE else "card"
    title = entry.pipeline or "(unknown pipeline)"
    kind = f"sweep of {_plural(entry.jobs or 0, 'job')}" if entry.kind == "sweep" else "run"
    link = ""
    if entry.page is not None:
        label = "grid.html" if entry.kind == "sweep" else "report.html"
        link = f' · <a href="{esc(relative_url(entry.page, base))}">{label}</a>'
    counts = ""
    if entry.created is not None:
        counts = f"{entry.created} created, {entry.reused} reused, {entry.predict_time:g} s predict time"
        if entry.cost is not None:
            counts += f", estimated cost {format_cost(entry.cost)}"
    problem = "".join(
        f'<div class="error">{esc(text)}</div>' for text in (entry.problem, entry.error) if text
    )
    return (
        f'<article class="{css}" data-pipeline="{esc(entry.pipeline)}" data-status="{esc(entry.status)}">'
        f"<header><h3>{esc(title)}</h3>{badge(entry.status)}</header>"
        f'<div class="muted">{esc(short_time(entry.started_at) or "not started")} · {esc(kind)}{link}</div>'
        f"<div>{esc(counts)}</div>{problem}{_thumbs(base, entry)}"
        f'<div class="path mono muted">{esc(entry.path)}</div></article>'
    )


def _thumbs(base: Path, entry: Entry) -> str:
    shown = []
    for file in entry.outputs:
        url = esc(relative_url(file, base))
        if media_kind("", file.name) == "image":
            img = f'<img src="{url}" loading="lazy" decoding="async" alt="{esc(file.name)}">'
            shown.append(f'<a href="{url}">{img}</a>')
        else:
            shown.append(placeholder("file", f'<a href="{url}">{esc(file.name)}</a>', raw=True))
    return f'<div class="thumbs">{"".join(shown)}</div>' if shown else ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"

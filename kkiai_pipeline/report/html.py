"""The HTML building blocks the reports share: escaping, relative links, media, the page and its style.

Every page is one self-contained file: an inline stylesheet, no script, no font, no remote resource,
files referenced by relative URLs so that the run or sweep directory can be moved as a whole. All text
that comes from a user or an API (prompts, errors, keys, file names) passes through :func:`esc`.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import quote

from ..artifacts import Artifact, describe_url
from ..secrets import redact

MediaKind = Literal["image", "video", "other"]

#: Status -> (fill, stroke) for badges, DAG nodes and grid cells.
STATUS_COLORS: Mapping[str, tuple[str, str]] = {
    "succeeded": ("#dafbe1", "#1a7f37"),
    "failed": ("#ffebe9", "#cf222e"),
    "aborted": ("#ffebe9", "#cf222e"),
    "unresolved": ("#ffebe9", "#cf222e"),
    "canceled": ("#fff1e5", "#bc4c00"),
    "skipped": ("#eaeef2", "#6e7781"),
    "running": ("#ddf4ff", "#0969da"),
    "pending": ("#f6f8fa", "#8c959f"),
}
_UNKNOWN_COLORS = ("#f6f8fa", "#57606a")
#: Statuses that make a step, a cell or a run stand out as not having worked.
BAD_STATUSES = frozenset({"failed", "aborted", "canceled", "unresolved"})

_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/avif", "image/bmp")
_VIDEO_TYPES = ("video/mp4", "video/webm", "video/ogg", "video/quicktime")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".avif", ".bmp")
_VIDEO_SUFFIXES = (".mp4", ".webm", ".ogv", ".mov", ".m4v")

_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f2328;
 background:#fff;margin:0 auto;max-width:1280px;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:24px 0 8px}h3{font-size:16px;margin:0}
a{color:#0969da}code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.muted{color:#57606a}
table{border-collapse:collapse}
table.kv th,table.kv td{border-top:1px solid #d8dee4;padding:3px 10px 3px 0;text-align:left;
 vertical-align:top}
table.kv th{font-weight:600;white-space:nowrap;color:#424a53}
.value{white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word;max-width:900px}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600;
 border:1px solid currentColor;vertical-align:middle}
.step{border:1px solid #d0d7de;border-radius:8px;padding:12px 16px;margin:16px 0}
.step header{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap;margin-bottom:8px}
.step.bad{border-left:6px solid #cf222e;background:#fffafa}
.step.skipped{border-left:6px solid #8c959f;background:#f6f8fa}
.error{background:#ffebe9;border:1px solid #ff8182;border-radius:6px;padding:6px 10px;margin:8px 0;
 white-space:pre-wrap;overflow-wrap:anywhere;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.skipnote{background:#eaeef2;border-color:#afb8c1}
.cols{display:flex;gap:24px;flex-wrap:wrap}.cols>div{min-width:280px;flex:1}
.outputs{display:flex;flex-wrap:wrap;gap:12px;margin-top:8px}
figure{margin:0}figcaption{font-size:11px;color:#57606a;max-width:256px;overflow-wrap:anywhere}
.thumb{display:block;max-width:256px;max-height:256px;border:1px solid #d0d7de;
 background:repeating-conic-gradient(#e6e6e6 0 25%,#fff 0 50%) 50%/16px 16px}
.placeholder{width:200px;height:140px;display:flex;flex-direction:column;align-items:center;
 justify-content:center;gap:4px;border:2px dashed #8c959f;border-radius:6px;color:#57606a;
 text-align:center;font-size:12px;padding:6px;overflow-wrap:anywhere}
.dag{overflow-x:auto;border:1px solid #d0d7de;border-radius:8px;padding:8px;background:#fcfcfd}
table.grid{margin:8px 0 24px}
table.grid th,table.grid td{border:1px solid #d0d7de;padding:6px;text-align:center;vertical-align:middle}
table.grid th{background:#f6f8fa;font-weight:600;overflow-wrap:anywhere;max-width:280px}
table.grid td.bad{background:#ffebe9;outline:3px solid #cf222e;outline-offset:-3px}
table.grid td .placeholder{margin:auto}
.cellnote{font-size:11px;color:#57606a;max-width:256px;margin:4px auto 0;overflow-wrap:anywhere}
td.bad .cellnote{color:#a40e26}
.cellrow{display:flex;gap:6px;justify-content:center}.cellrow figcaption{text-align:center}
.lightbox{display:none;position:fixed;inset:0;z-index:10;background:rgba(15,17,20,.88)}
.lightbox:target{display:block}.lightbox .shut{position:absolute;inset:16px 16px 44px;display:flex;
 align-items:center;justify-content:center}
.lightbox .full{max-width:100%;max-height:100%;background:#fff}
.lightnote{position:absolute;left:0;right:0;bottom:0;margin:0;padding:10px;text-align:center;color:#f6f8fa}
.lightnote a{color:#9ecbff}
details.logs{margin:8px 0}details.logs summary{cursor:pointer;color:#424a53}
pre.log{max-height:360px;overflow:auto;background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;
 padding:8px;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}
table.items{margin-top:8px;width:100%}
table.items th,table.items td{border-top:1px solid #d8dee4;padding:4px 8px 4px 0;text-align:left;
 vertical-align:top}
table.items .thumb{max-width:128px;max-height:128px}table.items .outputs{margin-top:0;gap:6px}
table.items tr.failed,table.items tr.aborted,table.items tr.unresolved,table.items tr.canceled{
 background:#fffafa}
"""


def esc(value: object) -> str:
    """``value`` as text that is safe in HTML element content and in quoted attributes."""
    return html.escape(str(value), quote=True)


def badge(status: str) -> str:
    """A small coloured label for a status."""
    fill, stroke = STATUS_COLORS.get(status, _UNKNOWN_COLORS)
    return f'<span class="badge" style="background:{fill};color:{stroke}">{esc(status)}</span>'


def media_kind(content_type: str, path: str) -> MediaKind:
    """Classify an output by its content type, falling back on the file name's suffix."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype in _IMAGE_TYPES:
        return "image"
    if ctype in _VIDEO_TYPES:
        return "video"
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in _IMAGE_SUFFIXES:
        return "image"
    if suffix in _VIDEO_SUFFIXES:
        return "video"
    return "other"


def kind_of(output: Artifact) -> MediaKind:
    """Whether a browser shows a stored output as an image, plays it as a video, or neither."""
    return media_kind(output.content_type, output.path)


def relative_url(target: Path, base: Path) -> str:
    """A URL for ``target`` relative to the folder ``base`` (not HTML-escaped yet)."""
    rel = os.path.relpath(target, base)
    return quote(rel.replace(os.sep, "/"), safe="/")


def output_file(run_dir: Path, recorded: str) -> Path:
    """Where an output path recorded in run.json is on disk (recorded paths are run-relative)."""
    path = Path(recorded)
    return path if path.is_absolute() else run_dir / path


def media(url: str, kind: MediaKind, *, alt: str, exists: bool) -> str:
    """An image, a playable video, a link, or a placeholder when the file is not on disk."""
    if not exists:
        return placeholder("missing file", alt)
    src = esc(url)
    if kind == "image":
        return f'<a href="{src}"><img class="thumb" src="{src}" alt="{esc(alt)}"></a>'
    if kind == "video":
        return (
            f'<video class="thumb" src="{src}" controls muted loop playsinline preload="metadata" '
            f'title="{esc(alt)}"></video>'
        )
    return placeholder("not an image", f'<a href="{src}">{esc(alt)}</a>', raw=True)


def placeholder(title: str, detail: str = "", *, raw: bool = False) -> str:
    """A dashed box saying why there is no picture; ``raw`` means ``detail`` is already HTML."""
    body = detail if raw else esc(detail)
    return f'<div class="placeholder"><strong>{esc(title)}</strong><span>{body}</span></div>'


def short_value(value: Any) -> str:
    """A value for display: strings as they are, anything else as JSON; data: URIs shortened."""
    value = _shorten(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=None, default=str)


def _shorten(value: Any) -> Any:
    if isinstance(value, str):
        return describe_url(value) if value.startswith("data:") else value
    if isinstance(value, list | tuple):
        return [_shorten(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _shorten(v) for k, v in value.items()}
    return value


def kv_table(rows: list[tuple[str, str]]) -> str:
    """A two-column table; the values are HTML already (escape before calling)."""
    body = "".join(f'<tr><th>{esc(k)}</th><td class="value">{v}</td></tr>' for k, v in rows)
    return f'<table class="kv">{body}</table>'


def page(title: str, body: str) -> str:
    """A whole HTML document around ``body``; the empty data: icon stops a favicon.ico request."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{esc(title)}</title><style>{_CSS}</style></head>'
        f"<body>\n{body}\n</body></html>\n"
    )


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that a reader sees the old file or the new one, never half of one.

    The API token's value is masked (:func:`kkiai_pipeline.secrets.redact`): a report is meant to be shared.
    """
    text = redact(text)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

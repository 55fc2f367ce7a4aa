"""``grid.png``: the sweep as one picture, in the manner of AUTOMATIC1111's X/Y/Z plot.

X values label the columns, Y values the rows, and each Z value gets a titled block of its own, stacked
top to bottom. A cell holds a thumbnail of the job's chosen output (an animation's first frame), or one
per chosen step side by side;
a failed cell is red with its status and error, and anything that cannot be drawn (a video, a missing
or unreadable file, a job without a run) is a labelled grey placeholder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .cells import Cell
from .html import STATUS_COLORS
from .sweep import Axis, Grid, Plot

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Box = tuple[int, int, int, int]
Rgb = tuple[int, int, int]
GAP = 4
MARGIN = 12
_MAX_SIDE = 12_000  # keeps a 1 x 400 sweep from becoming a 100,000 pixel strip
_BACKGROUND = (255, 255, 255)
_INK: Rgb = (31, 35, 40)
_MUTED: Rgb = (87, 96, 106)
_BAD_FILL, _BAD_INK = STATUS_COLORS["failed"]


class _Painter:
    """Sizes and fonts for one picture; a cell holds ``per_cell`` pictures of ``size`` pixels square,
    ``width`` pixels in all."""

    def __init__(self, plot: Plot, blocks: int, per_cell: int = 1) -> None:
        cols, rows = len(plot.columns) * per_cell, len(plot.rows) * blocks
        self.size = max(48, min(256, _MAX_SIDE // max(cols, 1), _MAX_SIDE // max(rows, 1)))
        self.per_cell = per_cell
        self.width = per_cell * self.size + (per_cell - 1) * GAP
        scale = max(self.size, 128) / 256
        self.font = _font(round(15 * scale))
        self.small = _font(round(12 * scale))
        self.title_font = _font(18)
        self.line = _line_height(self.font)
        self.small_line = _line_height(self.small)


def render_png(plot: Plot, cells: Mapping[str, Sequence[Cell]], *, title: str) -> Image.Image:
    """The whole picture for ``plot``; ``cells`` maps job names to what they show (a picture per step)."""
    per_cell = max((len(row) for row in cells.values()), default=1)
    paint = _Painter(plot, max(len(plot.grids), 1), max(per_cell, 1))
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = _row_label_width(scratch, plot, paint)
    head_h = _column_label_lines(scratch, plot, paint) * paint.line + 2 * GAP if plot.x else 0
    block_title_h = paint.line + 3 * GAP if plot.z else 0
    block_h = block_title_h + head_h + len(plot.rows) * (paint.size + GAP) + MARGIN
    title_h = _line_height(paint.title_font) + 2 * MARGIN
    width = 2 * MARGIN + label_w + len(plot.columns) * (paint.width + GAP)
    title = _drawable(title, paint.title_font)
    width = max(width, int(scratch.textlength(title, font=paint.title_font)) + 2 * MARGIN)
    height = title_h + max(len(plot.grids), 1) * block_h
    picture = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(picture)
    draw.text((MARGIN, MARGIN), title, font=paint.title_font, fill=_INK)
    top = title_h
    for grid in plot.grids:
        _block(picture, draw, plot, grid, cells, paint, top=top, label_w=label_w, head_h=head_h)
        top += block_h
    return picture


def save_png(picture: Image.Image, path: Path) -> None:
    """Save atomically: a reader sees the old picture or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        picture.save(tmp, format="PNG")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _block(
    picture: Image.Image,
    draw: ImageDraw.ImageDraw,
    plot: Plot,
    grid: Grid,
    cells: Mapping[str, Sequence[Cell]],
    paint: _Painter,
    *,
    top: int,
    label_w: int,
    head_h: int,
) -> None:
    if grid.fixed:
        caption = ", ".join(f"{axis.label} = {value}" for axis, value in grid.fixed)
        caption = _fit(draw, caption, paint.font, picture.width - 2 * MARGIN)
        draw.text((MARGIN, top + GAP), caption, font=paint.font, fill=_INK)
        top += paint.line + 3 * GAP
    left = MARGIN + label_w
    across, down = paint.width + GAP, paint.size + GAP
    for c, value in enumerate(plot.columns):
        lines = _wrap(draw, _label(plot.x, value), paint.font, paint.width, 3)
        _lines(draw, lines, (left + c * across, top + head_h - GAP - len(lines) * paint.line), paint)
    top += head_h
    for r, value in enumerate(plot.rows):
        y = top + r * down
        fits = max(paint.size // paint.line, 1)
        lines = _wrap(draw, _label(plot.y, value), paint.font, label_w - GAP, fits)
        _lines(draw, lines, (MARGIN, y + (paint.size - len(lines) * paint.line) // 2), paint)
        for c in range(len(plot.columns)):
            job = grid.cells.get((r, c))
            row = cells.get(job.name) if job else None
            for i in range(paint.per_cell):
                cell = row[i] if row and i < len(row) else None
                _cell(picture, draw, cell, (left + c * across + i * (paint.size + GAP), y), paint)


def _cell(
    picture: Image.Image, draw: ImageDraw.ImageDraw, cell: Cell | None, at: tuple[int, int], paint: _Painter
) -> None:
    x, y = at
    box: Box = (x, y, x + paint.size - 1, y + paint.size - 1)
    if cell is None:
        _placeholder(draw, box, "no job", "", paint)
        return
    if cell.bad:
        draw.rectangle(box, fill=_BAD_FILL, outline=_BAD_INK, width=4)
        lines = [cell.headline.upper(), *_wrap(draw, cell.note, paint.small, paint.size - 16, 6)]
        _centered(draw, box, lines, paint, ink=_hex(_BAD_INK))
        return
    thumb = _thumbnail(cell.file, paint.size) if cell.file and cell.kind == "image" else None
    if thumb is None:
        what = "no preview" if cell.file else "no picture"
        _placeholder(draw, box, what, cell.note or cell.content_type, paint)
        return
    tile = _checkerboard(paint.size)
    tile.alpha_composite(thumb, ((paint.size - thumb.width) // 2, (paint.size - thumb.height) // 2))
    picture.paste(tile.convert("RGB"), (x, y))


def _thumbnail(file: Path, size: int) -> Image.Image | None:
    """The file's first frame, scaled to fit ``size``; ``None`` if Pillow cannot read it."""
    try:
        with Image.open(file) as image:
            image.seek(0)
            image.draft("RGB", (size, size))
            frame = image.convert("RGBA")
    except Exception:  # a corrupt file raises OSError, ValueError, SyntaxError, EOFError...
        return None
    thumb: Image.Image = ImageOps.contain(frame, (size, size))
    return thumb


def _checkerboard(size: int, square: int = 12) -> Image.Image:
    tile = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    draw = ImageDraw.Draw(tile)
    for y in range(0, size, square):
        for x in range((y // square % 2) * square, size, 2 * square):
            draw.rectangle((x, y, x + square - 1, y + square - 1), fill=(230, 230, 230, 255))
    return tile


def _placeholder(draw: ImageDraw.ImageDraw, box: Box, title: str, detail: str, paint: _Painter) -> None:
    draw.rectangle(box, fill=(234, 238, 242), outline=(140, 149, 159), width=2)
    _centered(draw, box, [title, *_wrap(draw, detail, paint.small, paint.size - 16, 5)], paint, ink=_MUTED)


def _centered(draw: ImageDraw.ImageDraw, box: Box, lines: list[str], paint: _Painter, *, ink: Rgb) -> None:
    """The first line in the main font and ``ink``, the others small; all centred in ``box``."""
    x0, y0, x1, y1 = box
    total = paint.line + (len(lines) - 1) * paint.small_line
    y = y0 + (y1 - y0 - total) // 2
    for i, text in enumerate(lines):
        font = paint.font if i == 0 else paint.small
        w = draw.textlength(text, font=font)
        draw.text((x0 + (x1 - x0 - w) / 2, y), text, font=font, fill=ink if i == 0 else _INK)
        y += paint.line if i == 0 else paint.small_line


def _lines(draw: ImageDraw.ImageDraw, lines: list[str], at: tuple[int, int], paint: _Painter) -> None:
    x, y = at
    for text in lines:
        draw.text((x, y), text, font=paint.font, fill=_INK)
        y += paint.line


def _row_label_width(draw: ImageDraw.ImageDraw, plot: Plot, paint: _Painter) -> int:
    if plot.y is None:
        return 0
    widest = max(draw.textlength(_label(plot.y, v), font=paint.font) for v in plot.rows)
    return int(min(widest, 1.2 * paint.size, 260)) + 2 * GAP


def _column_label_lines(draw: ImageDraw.ImageDraw, plot: Plot, paint: _Painter) -> int:
    return max(len(_wrap(draw, _label(plot.x, v), paint.font, paint.width, 3)) for v in plot.columns)


def _label(axis: Axis | None, value: str) -> str:
    return f"{axis.label} = {value}" if axis else ""


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int, max_lines: int) -> list[str]:
    """``text`` in lines no wider than ``width``, breaking words only when one is too long alone."""
    text = _drawable(text, font)
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if draw.textlength(candidate, font=font) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while draw.textlength(word, font=font) > width and len(word) > 1:
            cut = max(1, _fitting_chars(draw, word, font, width))
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], _fit(draw, " ".join(lines[max_lines - 1 :]), font, width)]
    return lines


def _fitting_chars(draw: ImageDraw.ImageDraw, word: str, font: Font, width: int) -> int:
    n = len(word)
    while n > 1 and draw.textlength(word[:n], font=font) > width:
        n -= 1
    return n


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> str:
    text = _drawable(text, font)
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1, or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _drawable(text: str, font: Font) -> str:
    """The bitmap fallback font only encodes Latin-1; FreeType draws a box for a missing glyph."""
    if isinstance(font, ImageFont.FreeTypeFont):
        return text
    return text.encode("latin-1", "replace").decode("latin-1")


def _line_height(font: Font) -> int:
    _, top, _, bottom = font.getbbox("Ay|g")
    return int(bottom - top) + 4


def _hex(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)

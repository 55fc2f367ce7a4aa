"""A stand-in for cjwbw/rembg: every pixel close to the corners' mean colour becomes transparent."""

from __future__ import annotations

import tempfile

from cog import BaseRunner, Path
from PIL import Image
from runs import record

TOLERANCE = 40  # per channel


def _is_background(pixel: tuple[int, ...], background: list[int]) -> bool:
    return all(abs(pixel[i] - background[i]) <= TOLERANCE for i in range(3))


class Runner(BaseRunner):
    def run(self, image: Path) -> Path:
        record("start", "rembg")
        with Image.open(image) as source:
            rgba = source.convert("RGBA")
        w, h = rgba.size
        corners = [rgba.getpixel(xy) for xy in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))]
        background = [sum(c[i] for c in corners) // len(corners) for i in range(3)]
        rgba.putdata([(*p[:3], 0) if _is_background(p, background) else p for p in rgba.getdata()])
        out = Path(tempfile.mkdtemp()) / "output.png"
        rgba.save(out, format="PNG")
        record("end", "rembg")
        return out

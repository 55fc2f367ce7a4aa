"""A model outside the catalog: a PNG swatch of one colour, ``size`` pixels square.

Its schema (``swatch.schema.json``, what ``cog build`` would write for these inputs) gives ``size`` its
bounds (``ge``/``le``) and ``colour`` its choices, as an ``allOf`` of a ``$ref`` to an enum component.
"""

from __future__ import annotations

import tempfile

from cog import BaseRunner, Input, Path
from PIL import Image
from runs import record

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220)}


class Runner(BaseRunner):
    def run(
        self,
        label: str = Input(description="A note kept in runs.jsonl"),
        size: int = Input(default=32, ge=8, le=256, description="Width and height in pixels"),
        colour: str = Input(default="red", choices=["red", "green", "blue"], description="The colour"),
    ) -> Path:
        record("start", label)
        out = Path(tempfile.mkdtemp()) / "swatch.png"
        Image.new("RGB", (size, size), COLOURS[colour]).save(out, format="PNG")
        record("end", label)
        return out

"""Always fails, as a model does on an input it cannot handle."""

from __future__ import annotations

from cog import BaseRunner
from runs import record


class Runner(BaseRunner):
    def run(self, prompt: str = "") -> str:
        record("start", prompt)
        raise ValueError(f"cannot draw {prompt!r}: out of crayons")

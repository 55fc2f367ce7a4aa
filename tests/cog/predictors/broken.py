"""A model whose setup fails (missing weights): the server reports SETUP_FAILED."""

from __future__ import annotations

from cog import BaseRunner


class Runner(BaseRunner):
    def setup(self) -> None:
        raise RuntimeError("weights.bin is missing")

    def run(self) -> str:
        return "never"

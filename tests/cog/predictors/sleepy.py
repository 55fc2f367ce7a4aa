"""A model whose setup never ends (weights that take forever to load): the server stays STARTING."""

from __future__ import annotations

import time

from cog import BaseRunner


class Runner(BaseRunner):
    def setup(self) -> None:
        while True:
            time.sleep(0.1)

    def run(self) -> str:
        return "never"

"""Sleeps ``seconds`` in short steps (so a cancel lands at once), recording its start and end."""

from __future__ import annotations

import time

from cog import BaseRunner
from runs import record


class Runner(BaseRunner):
    def run(self, seconds: float = 0.0, tag: str = "") -> str:
        record("start", tag)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.01)
        record("end", tag)
        return f"slept {seconds:g} s ({tag})"

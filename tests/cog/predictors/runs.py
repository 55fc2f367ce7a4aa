"""Shared by the test predictors: one JSON line per event in ``runs.jsonl``, in the server's directory.

``t`` is ``time.monotonic()`` (CLOCK_MONOTONIC, the same in every process), for ordering only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def record(event: str, tag: str) -> None:
    with Path("runs.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"event": event, "tag": tag, "t": time.monotonic()}) + "\n")

"""Counters for tests: requests by kind, and creates that repeated an earlier (version, input).

Both let a test prove what a run did to the API: how many calls it made (or none), and that retrying
after faults never paid twice for the same prediction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

RequestKind = Literal["create", "get", "cancel", "list", "version", "file", "other"]
REQUEST_KINDS: tuple[RequestKind, ...] = ("create", "get", "cancel", "list", "version", "file", "other")


class RequestCounter:
    """How many requests of each kind the sandbox answered since it started or was last reset.

    Every request counts once, whatever it was answered with, an injected fault or a dropped connection
    included. ``other`` counts any request outside the known routes; ``/sandbox/*`` requests are not
    counted.
    """

    def __init__(self) -> None:
        self._counts: dict[RequestKind, int] = dict.fromkeys(REQUEST_KINDS, 0)

    def count(self, kind: RequestKind) -> None:
        """Counts one request of ``kind``."""
        self._counts[kind] += 1

    def reset(self) -> None:
        """Zeroes every counter."""
        self._counts = dict.fromkeys(REQUEST_KINDS, 0)

    def snapshot(self) -> dict[str, int]:
        """A copy of the counters."""
        return {kind: count for kind, count in self._counts.items()}


def input_key(version: str, input: Mapping[str, Any]) -> bytes:
    """A digest of ``version`` and the canonical JSON of ``input`` (sorted keys, no spaces)."""
    canonical = json.dumps([version, input], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).digest()


class DuplicateCounter:
    """Counts predictions created for a (version, input) that already had one since the last reset.

    Only digests are kept, so inputs carrying big ``data:`` URIs cost 32 bytes each.
    """

    def __init__(self) -> None:
        self._seen: set[bytes] = set()
        self.duplicates = 0

    def add(self, version: str, input: Mapping[str, Any]) -> bool:
        """Records one created prediction; True when its (version, input) was seen before."""
        key = input_key(version, input)
        if key in self._seen:
            self.duplicates += 1
            return True
        self._seen.add(key)
        return False

    def reset(self) -> None:
        """Forgets every (version, input) seen."""
        self._seen.clear()
        self.duplicates = 0

"""Request counters, by kind of request, so tests can prove how many calls a run made (or none)."""

from __future__ import annotations

from typing import Literal

RequestKind = Literal["create", "get", "cancel", "list", "version", "file", "other"]
REQUEST_KINDS: tuple[RequestKind, ...] = ("create", "get", "cancel", "list", "version", "file", "other")


class RequestCounter:
    """How many requests of each kind the sandbox answered since it started or was last reset.

    ``other`` counts any request outside the known routes; ``/sandbox/*`` requests are not counted.
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

"""The sandbox's settings: one frozen dataclass, passed by keyword to everything that needs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SyncFinalStatus = Literal["processing", "succeeded"]

DEFAULT_FAIL_MARKER = "[sandbox:fail]"


@dataclass(frozen=True)
class SandboxConfig:
    """How the emulated API behaves.

    Attributes:
        host: interface to bind; loopback by default.
        port: TCP port; 0 picks a free one.
        queue_seconds: how long a prediction stays ``starting``.
        predict_seconds: how long it then stays ``processing`` (at least until its files exist).
        token: when set, the only bearer token accepted; otherwise any non-empty token is.
        fail_marker: a prediction whose input contains this text in any string ends ``failed``.
        sync_final_status: the status a ``Prefer: wait`` response reports for a prediction that
            finished in time. The real API was recorded answering ``processing`` (with the full
            output and no ``completed_at``/``metrics``); ``succeeded`` is the tidier alternative.
        data_uri_outputs: when true, a ``Prefer: wait`` response that carries the output gives
            files as ``data:`` URIs, as the real API does in sync mode; later GETs give URLs.
        workers: threads that draw and encode output files, off the event loop.
    """

    host: str = "127.0.0.1"
    port: int = 0
    queue_seconds: float = 0.5
    predict_seconds: float = 2.0
    token: str | None = None
    fail_marker: str = DEFAULT_FAIL_MARKER
    sync_final_status: SyncFinalStatus = "processing"
    data_uri_outputs: bool = False
    workers: int = 4

    def __post_init__(self) -> None:
        if self.queue_seconds < 0 or self.predict_seconds < 0:
            raise ValueError("queue_seconds and predict_seconds must not be negative")
        if self.sync_final_status not in ("processing", "succeeded"):
            raise ValueError(
                f"sync_final_status must be 'processing' or 'succeeded', not {self.sync_final_status!r}"
            )
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")

"""The sandbox's settings: one frozen dataclass, passed by keyword to everything that needs it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

SyncFinalStatus = Literal["processing", "succeeded"]

DEFAULT_FAIL_MARKER = "[sandbox:fail]"

#: The fields that are shares of requests (or predictions), each between 0 and 1.
FAULT_RATES: tuple[str, ...] = (
    "poll_5xx_rate",
    "create_429_rate",
    "drop_before_create_rate",
    "drop_after_create_rate",
    "drop_poll_rate",
    "slow_rate",
    "fail_rate",
    "file_5xx_rate",
    "drop_file_rate",
)


@dataclass(frozen=True)
class SandboxConfig:
    """How the emulated API behaves.

    Attributes:
        host: interface to bind; loopback by default.
        port: TCP port; 0 picks a free one.
        queue_seconds: how long a prediction stays ``starting``.
        predict_seconds: how long it then stays ``processing`` (at least until its files exist).
        token: when set, the only bearer token accepted, on every route but ``/files`` (whose URLs,
            like the API's file host, take no token); otherwise any non-empty token is, and the
            ``/sandbox`` routes take none.
        max_body_bytes: a request body larger than this is answered 413 without being read (the API's
            own limit is far lower; 20 MB leaves room for data: URIs of large input images).
        fail_marker: a prediction whose input contains this text in any string ends ``failed``.
        sync_final_status: the status a ``Prefer: wait`` response reports for a prediction that
            finished in time. The real API was recorded answering ``processing`` (with the full
            output and no ``completed_at``/``metrics``); ``succeeded`` is the tidier alternative.
        data_uri_outputs: when true, a ``Prefer: wait`` response that carries the output gives
            files as ``data:`` URIs, as the real API does in sync mode; later GETs give URLs.
        workers: threads that draw and encode output files, off the event loop.

    Persistence and retention (see ``database`` and ``store``):

        store: the directory of the persistent store (``sandbox.sqlite3`` in it): predictions and their
            files outlive the process, and every sandbox pointed at the same directory, later or at the
            same time, serves them. None means the default, ``default_store``, resolved from the
            environment by the edges that start a sandbox (``serve_in_thread``, ``kkiai-sandbox``)
            through ``with_default_store``; ``create_app`` needs it set.
        file_ttl: seconds after a prediction completed for which its output files are kept; then it
            reports ``data_removed`` with no output and its files answer 404 (the API keeps them an
            hour).

    Fault injection (all off by default; see ``faults``). Every ``*_rate`` is a share between 0 and 1,
    drawn from one ``random.Random(fault_seed)``, so a run is reproducible for a given seed and request
    order:

        fault_seed: seeds the draws (re-seeded by ``POST /sandbox/reset``).
        poll_5xx_rate: ``GET /predictions/{id}`` and cancel answered 500/502/503/504 (in rotation; 502
            and 504 as an edge proxy's HTML page), without reading or changing the prediction.
        create_429_rate: creates answered 429 with the API's throttling body (``retry_after``), one in
            two also with a ``Retry-After`` header; no prediction is made.
        retry_after_seconds: the ``retry_after`` those injected 429s ask for.
        drop_before_create_rate: creates whose connection is closed before anything is done.
        drop_after_create_rate: creates that make the prediction and then close the connection
            without answering: the client cannot tell this from the one above.
        drop_poll_rate: ``GET /predictions/{id}`` whose connection is closed halfway through the body.
        slow_rate: API and file responses held back ``slow_seconds`` before they are sent (a create
            has already made its prediction by then).
        slow_seconds: the hold; the default outlasts the usual 30 s client read timeout.
        fail_rate: predictions that end ``failed`` with a realistic error (``E1001`` out of memory
            while processing, or ``E6716`` timeout while starting), decided at create.
        file_5xx_rate: ``GET /files/...`` answered with a 5xx (same rotation).
        drop_file_rate: ``GET /files/...`` whose connection is closed halfway through the body.

    Rate limits (see ``ratelimits``): every API response carries ``ratelimit-remaining`` and
    ``ratelimit-reset`` from a per-minute window per class of endpoint:

        create_rate_per_minute: creates allowed a minute (the API's 600).
        other_rate_per_minute: other API calls allowed a minute (the API's 3000).
        enforce_rate_limits: when true, calls over the limit are answered with the API's 429.

    Deadlines:

        min_cancel_after_seconds: the shortest ``Cancel-After`` honoured; shorter ones are raised to
            it. The API's minimum is 5 s; tests lower it so that deadlines pass quickly.
    """

    host: str = "127.0.0.1"
    port: int = 0
    queue_seconds: float = 0.5
    predict_seconds: float = 2.0
    token: str | None = None
    max_body_bytes: int = 20 * 1024 * 1024
    fail_marker: str = DEFAULT_FAIL_MARKER
    sync_final_status: SyncFinalStatus = "processing"
    data_uri_outputs: bool = False
    workers: int = 4
    store: str | None = None
    file_ttl: float = 3600.0
    fault_seed: int = 0
    poll_5xx_rate: float = 0.0
    create_429_rate: float = 0.0
    retry_after_seconds: int = 10
    drop_before_create_rate: float = 0.0
    drop_after_create_rate: float = 0.0
    drop_poll_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 35.0
    fail_rate: float = 0.0
    file_5xx_rate: float = 0.0
    drop_file_rate: float = 0.0
    create_rate_per_minute: int = 600
    other_rate_per_minute: int = 3000
    enforce_rate_limits: bool = False
    min_cancel_after_seconds: float = 5.0

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
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, not {self.max_body_bytes}")
        if self.file_ttl < 0:
            raise ValueError(f"file_ttl must not be negative, not {self.file_ttl}")
        self._check_faults()

    def _check_faults(self) -> None:
        for name in FAULT_RATES:
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {rate}")
        if self.slow_seconds < 0 or self.min_cancel_after_seconds < 0:
            raise ValueError("slow_seconds and min_cancel_after_seconds must not be negative")
        if self.retry_after_seconds < 1:
            raise ValueError(f"retry_after_seconds must be at least 1, not {self.retry_after_seconds}")
        if self.create_rate_per_minute < 1 or self.other_rate_per_minute < 1:
            raise ValueError("create_rate_per_minute and other_rate_per_minute must be at least 1")


def default_store(environ: Mapping[str, str]) -> str:
    """``$XDG_CACHE_HOME/kkiai-pipeline/sandbox``, or ``~/.cache/kkiai-pipeline/sandbox`` without it.

    A relative ``XDG_CACHE_HOME`` is ignored, as the XDG base directory specification asks.
    """
    cache = environ.get("XDG_CACHE_HOME", "")
    if cache and Path(cache).is_absolute():
        return str(Path(cache) / "kkiai-pipeline" / "sandbox")
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    return str(home / ".cache" / "kkiai-pipeline" / "sandbox")


def with_default_store(config: SandboxConfig, environ: Mapping[str, str]) -> SandboxConfig:
    """``config`` with ``store`` set: as given, or ``default_store(environ)`` when it is None."""
    return config if config.store is not None else replace(config, store=default_store(environ))

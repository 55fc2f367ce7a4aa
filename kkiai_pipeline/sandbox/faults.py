"""Fault injection: which requests misbehave, decided by seeded draws, and what they are answered.

Each kind of fault has a rate in ``SandboxConfig``. A request (or a new prediction) that could suffer
a fault draws once from the app's ``random.Random(fault_seed)``; a rate of 0 draws nothing, so the
faults that are switched on see the same sequence whatever the others do. Given the seed and the order
of requests, a run is reproducible. Every fault injected is counted under its kind::

    poll_5xx            GET /predictions/{id} or cancel answered 5xx; the prediction untouched
    create_429          a create throttled; nothing created
    drop_before_create  a create's connection closed before anything was done
    drop_after_create   a create's connection closed after its prediction was made
    drop_poll           a GET /predictions/{id} connection closed halfway through the body
    slow                a response held back slow_seconds
    fail                a prediction that will end failed (E1001 or E6716)
    file_5xx            a file download answered 5xx
    drop_file           a file download's connection closed halfway through the body
    rate_limited        a call over the per-minute limit answered 429 (enforce_rate_limits)

Server errors rotate through 500, 502, 503 and 504: 500 and 503 as the API's problem+json, 502 and
504 as the HTML page of the edge proxy in front of it (without rate-limit headers). Injected 429s carry
the API's body (``retry_after``) and, one in two, a ``Retry-After`` header, which the API was never
seen sending.
"""

from __future__ import annotations

import random
from typing import Literal, get_args

from starlette.responses import Response

from . import wire
from .config import SandboxConfig
from .ratelimits import rate_limit_headers

FaultKind = Literal[
    "poll_5xx",
    "create_429",
    "drop_before_create",
    "drop_after_create",
    "drop_poll",
    "slow",
    "fail",
    "file_5xx",
    "drop_file",
    "rate_limited",
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

#: The config field holding the rate of each kind drawn for (``rate_limited`` is not drawn).
RATE_FIELDS: dict[FaultKind, str] = {
    "poll_5xx": "poll_5xx_rate",
    "create_429": "create_429_rate",
    "drop_before_create": "drop_before_create_rate",
    "drop_after_create": "drop_after_create_rate",
    "drop_poll": "drop_poll_rate",
    "slow": "slow_rate",
    "fail": "fail_rate",
    "file_5xx": "file_5xx_rate",
    "drop_file": "drop_file_rate",
}

SERVER_ERRORS: tuple[int, ...] = (500, 502, 503, 504)
EDGE_ERRORS: frozenset[int] = frozenset({502, 504})

#: Injected prediction failures: the ``error`` text, and whether it strikes before processing starts.
FAILURES: tuple[tuple[str, bool], ...] = (
    ("E1001 Model Out of Memory (OOM Killed)", False),
    ("E6716 Timeout Starting Prediction", True),
)


class Faults:
    """The draws, the counters, and the answers of injected faults; one per app, used on its loop."""

    def __init__(self, config: SandboxConfig) -> None:
        self._seed = config.fault_seed
        self._rates: dict[FaultKind, float] = {kind: getattr(config, f) for kind, f in RATE_FIELDS.items()}
        self._retry_after = config.retry_after_seconds
        self._random = random.Random(self._seed)
        self._counts: dict[FaultKind, int] = dict.fromkeys(FAULT_KINDS, 0)
        self._errors = 0
        self._throttles = 0

    def reset(self) -> None:
        """Zeroes the counters and re-seeds the draws, so a reset sandbox repeats itself."""
        self._random = random.Random(self._seed)
        self._counts = dict.fromkeys(FAULT_KINDS, 0)
        self._errors = 0
        self._throttles = 0

    def roll(self, kind: FaultKind) -> bool:
        """Draws whether this request suffers ``kind``; counts it when it does."""
        rate = self._rates[kind]
        if rate <= 0.0 or self._random.random() >= rate:
            return False
        self._counts[kind] += 1
        return True

    def count(self, kind: FaultKind) -> None:
        """Counts one fault of ``kind`` decided elsewhere (``rate_limited``)."""
        self._counts[kind] += 1

    def snapshot(self) -> dict[str, int]:
        """A copy of the counters, one per kind."""
        return {kind: count for kind, count in self._counts.items()}

    def failure(self) -> tuple[str, bool]:
        """The error of an injected failure, and whether it strikes while the prediction is starting."""
        return self._random.choice(FAILURES)

    def server_error(self) -> Response:
        """The next 5xx of the rotation."""
        status = SERVER_ERRORS[self._errors % len(SERVER_ERRORS)]
        self._errors += 1
        if status in EDGE_ERRORS:
            return wire.edge_response(status)
        return wire.problem_response(wire.server_error(status))

    def throttled(self) -> Response:
        """An injected 429: the API's body, with a ``Retry-After`` header on every other one."""
        seconds = self._retry_after
        headers = rate_limit_headers(remaining=0, reset=seconds)
        if self._throttles % 2 == 0:
            headers["Retry-After"] = str(seconds)
        self._throttles += 1
        return wire.problem_response(wire.throttled(seconds), headers=headers)

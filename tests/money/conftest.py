"""Fixtures of the money suite: a fresh fake API per test, already misbehaving the usual way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..fakes.fake_api import FakeApi


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    """The fake API with fast predictions, its clock 120 s behind ours and a list that lags 2 s."""
    with FakeApi() as server:
        server.knobs.predict_seconds = 0.2
        server.knobs.clock_skew = -120
        server.knobs.list_lag = 2
        yield server

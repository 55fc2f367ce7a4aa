"""Every test starts with no process-wide rate-limit buckets, so none inherits another's reservations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kkiai_pipeline.api.ratelimit import forget_shared_limits


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> Iterator[None]:
    forget_shared_limits()
    yield
    forget_shared_limits()

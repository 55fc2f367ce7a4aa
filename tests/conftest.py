"""Shared fixtures: a clean environment for every test (no token or pipeline path leaks in)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

_OURS = ("KKIAI_", "REPLICATE_", "HYDRA_")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import os

    for name in list(os.environ):
        if name.startswith(_OURS) or name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name)
    yield

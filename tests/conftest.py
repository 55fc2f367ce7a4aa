"""Shared fixtures: a clean environment for every test (no token or pipeline path leaks in), a cache
directory of its own, so no test reads or writes the user's ledger or sandbox store, and a fast sandbox
per test module for tests that run kkiai-run against it as if it were the real API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kkiai_pipeline import secrets
from kkiai_pipeline.sandbox import SandboxConfig, serve_in_thread

_OURS = ("KKIAI_", "REPLICATE_", "HYDRA_")


@pytest.fixture(autouse=True, scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Session-wide: module-scoped sandboxes start before any function fixture.
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def clean_environ(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    import os

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    for name in list(os.environ):
        if name.startswith(_OURS) or name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name)
    yield
    secrets.forget()  # a token registered by one test's settings must not mask another test's text


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    """The emulator on loopback, fast (tests/sandbox/ has its own fixture of this name)."""
    with serve_in_thread(SandboxConfig(queue_seconds=0.02, predict_seconds=0.05)) as running:
        yield running


@pytest.fixture
def api(sandbox: Any) -> list[str]:
    """Overrides that point kkiai-run at the module's sandbox as if it were the real API."""
    return [f"api.base_url={sandbox.base_url}"]

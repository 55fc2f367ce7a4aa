"""Fixtures for the sandbox tests: a shared fast sandbox, an authenticated client, input images.

The environment is kept clean by the autouse ``clean_environ`` of ``tests/conftest.py``; here
``private_cache`` also points the default store (``XDG_CACHE_HOME``, ``HOME``) into the test's own
temporary directory, so that no test writes into the real cache.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from kkiai_pipeline.sandbox import Sandbox, SandboxConfig, serve_in_thread
from kkiai_pipeline.sandbox.imaging import draw_scene, encode

from .helpers import AUTH, FAST, TERMINAL


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default store's parents, in this test's temporary directory (subprocesses inherit them)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "cache" / "kkiai-pipeline" / "sandbox"


@pytest.fixture(scope="module")
def shared_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One fast sandbox per test module, with a store of its own (it starts before ``private_cache``)."""
    store = str(tmp_path_factory.mktemp("shared-store"))
    with serve_in_thread(dataclasses.replace(FAST, store=store)) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(shared_sandbox: Sandbox) -> Sandbox:
    """The module's sandbox with its counters zeroed."""
    shared_sandbox.reset()
    return shared_sandbox


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[httpx.Client]:
    """An authenticated client for the sandbox's API."""
    with httpx.Client(base_url=sandbox.base_url, headers=AUTH, trust_env=False, timeout=30) as client:
        yield client


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., Sandbox]]:
    """Starts a sandbox with a config of the test's own; stopped when the test ends."""
    with ExitStack() as stack:

        def start(**settings: Any) -> Sandbox:
            return stack.enter_context(serve_in_thread(SandboxConfig(**settings)))

        yield start


@pytest.fixture
def wait_done() -> Callable[[httpx.Client, str], dict[str, Any]]:
    """Polls GET until the prediction is terminal (the deadline only guards against hangs)."""

    def wait(client: httpx.Client, prediction_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body: dict[str, Any] = client.get(f"/predictions/{prediction_id}").json()
            if body["status"] in TERMINAL:
                return body
            time.sleep(0.01)
        raise AssertionError(f"prediction {prediction_id} never finished")

    return wait


@pytest.fixture(scope="session")
def scene_png() -> bytes:
    """A 256x256 'product shot' PNG: plain background, product in the middle, person at one side."""
    return encode(draw_scene((256, 256), prompt="a green bottle", seed=7), "png")

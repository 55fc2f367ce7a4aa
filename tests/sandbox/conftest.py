"""Fixtures for the sandbox tests: a shared fast sandbox, an authenticated client, input images.

The environment is kept clean by the autouse ``clean_environ`` of ``tests/conftest.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from kkiai_pipeline.sandbox import Sandbox, SandboxConfig, serve_in_thread
from kkiai_pipeline.sandbox.imaging import draw_scene, encode

from .helpers import AUTH, FAST, TERMINAL


@pytest.fixture(scope="module")
def shared_sandbox() -> Iterator[Sandbox]:
    """One fast sandbox per test module."""
    with serve_in_thread(FAST) as sandbox:
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

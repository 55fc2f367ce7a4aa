"""Constants and small helpers shared by the sandbox tests."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.sandbox import SandboxConfig
from kkiai_pipeline.sandbox.database import Database
from kkiai_pipeline.sandbox.store import Store

FAST = SandboxConfig(queue_seconds=0.02, predict_seconds=0.05)
AUTH = {"Authorization": "Bearer test-token"}
TERMINAL = {"succeeded", "failed", "canceled", "aborted"}


def version_of(ref: str) -> str:
    """The version hash of a catalog model."""
    model = default_catalog().find(ref)
    assert model is not None
    return model.version


def data_uri(content: bytes, mime: str = "image/png") -> str:
    """``content`` as a base64 data URI."""
    return f"data:{mime};base64,{base64.b64encode(content).decode()}"


class FakeClock:
    """A clock (Unix time) that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def open_store(directory: Path, clock: Callable[[], float], *, file_ttl: float = 3600.0) -> Iterator[Store]:
    """A store in ``directory`` on ``clock`` (1 s starting, 2 s processing), without a server."""
    catalog = default_catalog()
    database = Database(directory, models=catalog.find)
    executor = ThreadPoolExecutor(max_workers=1)
    store = Store(
        database, queue_seconds=1.0, predict_seconds=2.0, file_ttl=file_ttl, executor=executor, clock=clock
    )
    try:
        yield store
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        store.close()
        database.close()

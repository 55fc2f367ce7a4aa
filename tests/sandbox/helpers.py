"""Constants and small helpers shared by the sandbox tests."""

from __future__ import annotations

import base64

from kkiai_pipeline.catalog import default_catalog
from kkiai_pipeline.sandbox import SandboxConfig

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

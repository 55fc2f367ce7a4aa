"""The offline emulator of the kkiai API: server and stand-in models.

::

    from kkiai_pipeline.sandbox import SandboxConfig, serve_in_thread

    with serve_in_thread(SandboxConfig(queue_seconds=0.05, predict_seconds=0.2)) as sandbox:
        sandbox.base_url   # "http://127.0.0.1:<port>/replicate/v1"
        sandbox.stats()    # the counters of GET /sandbox/stats

Modules: ``config`` (SandboxConfig), ``app`` (routes), ``store`` (predictions and their lifecycle),
``wire`` (the JSON sent), ``openapi`` (version documents), ``inputs`` (input checks and files),
``models`` and ``imaging`` (the stand-in models), ``generic`` (the stand-in for models outside the
catalog), ``stats`` (request and duplicate counters),
``faults`` (injected faults), ``drops`` (dropping connections), ``ratelimits`` (per-minute windows and
their headers), ``deadlines`` (``Cancel-After``), ``server`` and ``cli``.

Faults are off by default; switch them on per kind with a rate, reproducibly for a seed::

    SandboxConfig(fault_seed=7, poll_5xx_rate=0.1, drop_after_create_rate=0.05, fail_rate=0.1)
"""

from __future__ import annotations

from .app import create_app
from .config import SandboxConfig
from .server import Sandbox, serve_in_thread

__all__ = ["Sandbox", "SandboxConfig", "create_app", "serve_in_thread"]

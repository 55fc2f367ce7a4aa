"""Real Cog servers for the tests: coglet (cog's Rust server, no Docker) on loopback ports.

One server per predictor in ``predictors/``, started once per session in its own directory (where the
predictors write ``runs.jsonl``, and where coglet looks for ``.cog/openapi_schema.json``), and
stopped at the end. coglet starts its worker as ``python`` from ``PATH``, so this interpreter's
directory goes first there.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

PREDICTORS = Path(__file__).parent / "predictors"
STARTUP_TIMEOUT = 60.0  # coglet is ready in well under a second; this only guards against hangs


@dataclass
class CogServer:
    """One coglet process serving one predictor."""

    name: str
    url: str
    workdir: Path
    process: subprocess.Popen[bytes]
    log: IO[bytes]

    def runs(self, tag: str | None = None) -> list[dict[str, Any]]:
        """The predictor's recorded events (``start`` / ``end``), oldest first, for ``tag`` if given."""
        path = self.workdir / "runs.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        events = [json.loads(line) for line in lines]
        return [e for e in events if tag is None or e["tag"] == tag]

    def health(self) -> str | None:
        """The health-check's status, or None while the server does not answer."""
        host, port = self.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            connection.request("GET", "/health-check")
            return str(json.loads(connection.getresponse().read())["status"])
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            return None
        finally:
            connection.close()

    def stop(self) -> None:
        """SIGTERM coglet (it stops its worker), then SIGKILL whatever is left of its process group.

        A worker still in ``setup()`` (the sleepy model) does not notice its parent going away, so the
        group, which holds only this coglet and its worker, is killed too.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


@dataclass(frozen=True)
class CogServers:
    rembg: CogServer
    slow: CogServer
    failing: CogServer
    sleepy: CogServer  # never leaves STARTING
    broken: CogServer  # SETUP_FAILED
    swatch: CogServer  # a model outside the catalog, with a schema (bounds and choices)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_coglet(name: str, workdir: Path) -> CogServer:
    """Start coglet for ``predictors/<name>.py`` (class ``Runner``) in ``workdir``; returns at once."""
    workdir.mkdir(parents=True)
    schema = PREDICTORS / f"{name}.schema.json"
    if schema.exists():
        (workdir / ".cog").mkdir()
        shutil.copy(schema, workdir / ".cog" / "openapi_schema.json")
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=str(PREDICTORS),
        COG_PREDICT_TYPE_STUB=f"{PREDICTORS / name}.py:Runner",
        PORT=str(port),
    )
    log = (workdir / "coglet.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so that stop() can end the worker too
    )
    return CogServer(name, f"http://127.0.0.1:{port}", workdir, process, log)


def wait_for(server: CogServer, statuses: set[str], deadline: float) -> None:
    while server.health() not in statuses:
        if server.process.poll() is not None:
            log = (server.workdir / "coglet.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"coglet for {server.name} exited ({server.process.returncode}):\n{log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"coglet for {server.name} did not reach {statuses} in {STARTUP_TIMEOUT} s")
        time.sleep(0.02)


_SETTLED = {"sleepy": {"STARTING"}, "broken": {"SETUP_FAILED"}}


@pytest.fixture(scope="session")
def cog_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CogServers]:
    """The test servers, started together (under a second in all) and stopped at the end."""
    pytest.importorskip("cog", reason="the Cog tests need the 'cog' package (pip install cog==0.23.1)")
    root = tmp_path_factory.mktemp("cog")
    with ExitStack() as stack:
        servers = {}
        for name in ("rembg", "slow", "failing", "sleepy", "broken", "swatch"):
            server = start_coglet(name, root / name)
            stack.callback(server.stop)
            servers[name] = server
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for name, server in servers.items():
            wait_for(server, _SETTLED.get(name, {"READY"}), deadline)
        yield CogServers(**servers)


@pytest.fixture
def cog(cog_servers: CogServers) -> Iterator[CogServers]:
    """The shared servers, checked idle before and after each test (a test must not leave one busy)."""
    for server in (cog_servers.rembg, cog_servers.slow, cog_servers.failing):
        assert server.health() == "READY", f"{server.name} is not idle at the start of the test"
    yield cog_servers
    deadline = time.monotonic() + 10
    for server in (cog_servers.rembg, cog_servers.slow, cog_servers.failing):
        while server.health() != "READY" and time.monotonic() < deadline:
            time.sleep(0.02)  # a canceled prediction may take a moment to wind down
        assert server.health() == "READY", f"{server.name} was left busy by the test"

"""Helpers for the integration tests: run the real ``kkiai-run`` in a subprocess against a sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKEN = "test-token-5f1e"  # what the tests export as KKIAI_API_TOKEN; it must never be written anywhere
SCRIPTS = Path(sys.executable).parent


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str
    run_dir: Path

    @property
    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run_dir / "run.json").read_text())
        return data


def kkiai_run(
    *args: str,
    cwd: Path,
    run_dir: Path | None = None,
    env: dict[str, str] | None = None,
    token: str | None = TOKEN,
    timeout: float = 120,
) -> Result:
    """Run ``kkiai-run ARGS`` in ``cwd`` with progress off; ``hydra.run.dir`` is ``run_dir``."""
    run_dir = run_dir or cwd / "run"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KKIAI_", "HYDRA_"))}
    if token is not None:
        environ["KKIAI_API_TOKEN"] = token
    environ.update(env or {})
    command = [str(SCRIPTS / "kkiai-run"), *args, f"hydra.run.dir={run_dir}"]
    if not any(a.startswith("progress=") for a in args):
        command.append("progress=false")
    if not any(a.startswith("cache_dir=") for a in args):
        command.append(f"cache_dir={cwd / '.kkiai-cache'}")  # each test starts with an empty cache
    done = subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout)
    return Result(done.returncode, done.stdout, done.stderr, run_dir)


def creates(sandbox: Any) -> int:
    """Creates the sandbox has answered (counted at the server)."""
    count: int = sandbox.stats()["requests"]["create"]
    return count

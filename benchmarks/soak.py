"""Soak benchmark: 500 predictions through the sandbox with about 10% of calls faulted.

Run it with ``python -m benchmarks.soak`` (``--pairs N`` for another size). It runs the same pipeline
twice in this process, first against a clean sandbox and then against one that injects faults, and
prints the faults injected, the retries made, duplicate creates (must be 0), the artifacts verified,
and the faulted run's wall time as a ratio of the clean one. The client-side rate limits are off in
both runs, so that the figures show fault handling rather than the 600 creates/min budget.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kkiai_pipeline.api.client import ClientOptions
from kkiai_pipeline.execution import ExecutionOptions
from kkiai_pipeline.orchestrator import run_pipeline
from kkiai_pipeline.pipeline import parse_pipeline, read_pipeline_file
from kkiai_pipeline.rundir import RunRecord
from kkiai_pipeline.sandbox import SandboxConfig, serve_in_thread
from kkiai_pipeline.settings import ApiSettings, Settings

FAULTS = {
    "poll_5xx_rate": 0.10,
    "create_429_rate": 0.10,
    "retry_after_seconds": 1,
    "drop_before_create_rate": 0.03,
    "drop_after_create_rate": 0.03,
    "drop_poll_rate": 0.03,
    "file_5xx_rate": 0.07,
    "drop_file_rate": 0.03,
    "fault_seed": 2026,
}
LATENCY = {"queue_seconds": 0.2, "predict_seconds": 0.8}


def write_pipeline(folder: Path, pairs: int) -> Path:
    """``pairs`` independent generate -> rembg chains: 2 x pairs predictions."""
    lines = ["name: soak", "steps:"]
    for i in range(pairs):
        lines += [
            f"  gen{i}:",
            "    model: stability-ai/stable-diffusion",
            f'    input: {{prompt: "soak subject {i}", width: 128, height: 128}}',
            f"  cut{i}:",
            "    model: cjwbw/rembg",
            f'    input: {{image: "{{{{ steps.gen{i}.output[0] }}}}"}}',
        ]
    path = folder / "soak.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Outcome:
    wall: float
    record: RunRecord
    sandbox: dict[str, Any]
    verified: int


def run_once(pipeline_file: Path, work: Path, name: str, faults: dict[str, Any]) -> Outcome:
    pipeline = parse_pipeline(read_pipeline_file(pipeline_file), source=pipeline_file)
    options = ClientOptions(
        wait_seconds=5,
        poll_interval=0.2,
        max_poll_interval=1.0,
        backoff_base=0.1,
        backoff_max=2.0,
        max_wait=2.0,
        max_attempts=12,
        create_rate_per_minute=0,
        other_rate_per_minute=0,
    )
    with serve_in_thread(SandboxConfig(**LATENCY, **faults)) as sandbox:
        settings = Settings(
            api=ApiSettings("kkiai", sandbox.base_url, "soak-token", options),
            execution=ExecutionOptions(max_concurrency=200),
            progress=False,
            run_dir=work / name,
            cache=False,
        )
        start = time.perf_counter()
        record = run_pipeline(pipeline, settings)
        wall = time.perf_counter() - start
        stats = sandbox.stats()
    assert isinstance(record, RunRecord)
    return Outcome(wall, record, stats, verify_all(record))


def verify_all(record: RunRecord) -> int:
    count = 0
    for step in record.steps.values():
        for artifact in step.outputs:
            data = (record.run_dir / artifact.path).read_bytes()
            if hashlib.sha256(data).hexdigest() == artifact.sha256:
                count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=250, help="generate->rembg chains (2 predictions each)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the run's warnings about each fault would drown the table
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pipeline_file = write_pipeline(work, args.pairs)
        clean = run_once(pipeline_file, work, "clean", {})
        faulted = run_once(pipeline_file, work, "faulted", FAULTS)
    report(args.pairs * 2, clean, faulted)


def report(predictions: int, clean: Outcome, faulted: Outcome) -> None:
    traffic = faulted.record.traffic
    faults = {k: v for k, v in faulted.sandbox["faults"].items() if v}
    injected = sum(faults.values())
    calls = sum(faulted.sandbox["requests"].values())
    statuses = [s.status for s in faulted.record.steps.values()]
    latency = LATENCY["queue_seconds"] + LATENCY["predict_seconds"]
    rows = [
        ("faults injected", f"{injected} of {calls} calls ({injected / calls:.1%}): {faults}"),
        (
            "retries made",
            f"{sum(traffic['api']['retries'].values())} API, "
            f"{sum(traffic['downloads']['retries'].values())} downloads",
        ),
        ("lost creates", f"{traffic['api']['ambiguous_creates']} ambiguous creates, resolved via the list"),
        ("duplicate creates", f"{faulted.sandbox['duplicates']} (clean run: {clean.sandbox['duplicates']})"),
        ("steps succeeded", f"{statuses.count('succeeded')} of {len(statuses)}"),
        ("artifacts verified", f"{faulted.verified} of {predictions} (sha256 on disk)"),
        (
            "wall time",
            f"clean {clean.wall:.1f} s, faulted {faulted.wall:.1f} s: {faulted.wall / clean.wall:.2f}x",
        ),
    ]
    print(f"soak: {predictions} predictions, sandbox latency {latency:.1f} s each")
    for name, value in rows:
        print(f"  {name:<20} {value}")


if __name__ == "__main__":
    main()

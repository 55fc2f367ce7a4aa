"""What one rate-limit reservation costs in each scope, as ratios to the in-memory bucket.

    python -m benchmarks.limiters            # process (memory) and machine (file) scopes
    python -m benchmarks.limiters --ray      # and the cluster scope: a local Ray cluster of 1 CPU

``before`` is the in-memory bucket as it was before the scopes existed (its GCRA step inlined), so the
first ratio shows that a process alone pays nothing for the new interface. Buckets are set to a rate
so high that no reservation waits: what is measured is the bookkeeping, not the sleeping.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kkiai_pipeline.api.filelimits import FileBucket
from kkiai_pipeline.api.ratelimit import TokenBucket

RATE, BURST = 1e12, 1_000_000


class Before:
    """TokenBucket.reserve as it was: the GCRA step written inline."""

    def __init__(self, per_minute: float, *, burst: int) -> None:
        self._interval = 60.0 / per_minute
        self._tolerance = (burst - 1) * self._interval
        self._lock = threading.Lock()
        self._tat = -math.inf

    def reserve(self) -> float:
        with self._lock:
            now = time.monotonic()
            tat = max(self._tat, now)
            wait = max(tat - self._tolerance - now, 0.0)
            self._tat = tat + self._interval
        return wait


def per_call(reserve: Callable[[], float], *, n: int) -> float:
    """Microseconds per call, the best of 5 rounds."""
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            reserve()
        best = min(best, (time.perf_counter() - started) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray", action="store_true", help="also the Ray actor (starts a local cluster)")
    args = parser.parse_args()
    rows = [("process, before", per_call(Before(RATE, burst=BURST).reserve, n=200_000))]
    rows.append(("process (TokenBucket)", per_call(TokenBucket(RATE, burst=BURST).reserve, n=200_000)))
    with tempfile.TemporaryDirectory() as folder:
        rows.append(
            (
                "machine (FileBucket)",
                per_call(FileBucket(Path(folder) / "b", RATE, burst=BURST).reserve, n=20_000),
            )
        )
    if args.ray:
        rows.append(("cluster (RayBucket)", _ray_per_call()))
    base = rows[0][1]
    print(f"{'scope':<24}{'us/reservation':>16}{'x before':>10}")
    for name, micros in rows:
        print(f"{name:<24}{micros:>16.2f}{micros / base:>10.1f}")


def _ray_per_call() -> float:
    import ray

    from kkiai_pipeline.api.raylimits import RayBucket

    ray.init(num_cpus=1, include_dashboard=False, namespace="kkiai-benchmark")
    try:
        bucket = RayBucket("benchmark|create", RATE, burst=BURST)
        bucket.reserve()  # starts the actor
        return per_call(bucket.reserve, n=500)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()

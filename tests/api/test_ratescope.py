"""Rate limits shared beyond one process: the file bucket, the fallback when a shared limiter fails, and
which scope each launcher gets."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path

import pytest

from kkiai_pipeline.api.filelimits import FileBucket
from kkiai_pipeline.api.ratelimit import TokenBucket
from kkiai_pipeline.api.ratescope import (
    BASIC_LAUNCHER,
    GuardedBucket,
    forget_scoped_limits,
    resolve_scope,
    scoped_limits,
)
from kkiai_pipeline.api.raylimits import AccountActor

BASE = "http://127.0.0.1:9/v1"
RAY = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


@pytest.fixture(autouse=True)
def _fresh_registry() -> None:
    forget_scoped_limits()


def test_two_file_buckets_on_one_file_book_the_same_slots(tmp_path: Path) -> None:
    # two processes' views of one file (two descriptors): together they keep one rate of 60/min, burst 3
    now = [100.0]
    a = FileBucket(tmp_path / "b", 60, burst=3, clock=lambda: now[0])
    b = FileBucket(tmp_path / "b", 60, burst=3, clock=lambda: now[0])
    assert [bucket.reserve() for bucket in (a, b, a, b, a, b)] == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0]
    now[0] += 10  # the queue has drained and the burst refilled
    assert [a.reserve(), b.reserve(), a.reserve(), b.reserve()] == [0.0, 0.0, 0.0, 1.0]


def test_a_pause_in_one_file_bucket_holds_the_other(tmp_path: Path) -> None:
    now = [0.0]
    a = FileBucket(tmp_path / "b", 60, burst=2, clock=lambda: now[0])
    b = FileBucket(tmp_path / "b", 60, burst=2, clock=lambda: now[0])
    a.pause(10)
    assert b.reserve() == 10.0


def _book(path: Path, count: int, queue: multiprocessing.Queue[float]) -> None:
    bucket = FileBucket(path, 60, burst=1, clock=lambda: 0.0)
    for _ in range(count):
        queue.put(bucket.reserve())


def test_processes_sharing_a_file_never_get_the_same_slot(tmp_path: Path) -> None:
    queue: multiprocessing.Queue[float] = multiprocessing.get_context("fork").Queue()
    workers = [
        multiprocessing.get_context("fork").Process(target=_book, args=(tmp_path / "b", 50, queue))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    waits = sorted(queue.get(timeout=20) for _ in range(150))
    for worker in workers:
        worker.join(20)
    # one clock instant, burst 1, 1 s apart: 150 distinct slots 0, 1, ..., 149 whoever booked them
    assert waits == [float(n) for n in range(150)]


def test_an_unusable_file_falls_back_to_a_local_share_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "cache").write_text("a file where the cache directory should be")
    limits = scoped_limits(
        BASE,
        scope="machine",
        create_per_minute=600,
        other_per_minute=3000,
        burst=4,
        state_dir=tmp_path / "cache",
    )
    bucket = limits.bucket(create=True)
    assert isinstance(bucket, GuardedBucket)
    with caplog.at_level(logging.WARNING):
        waits = [bucket.reserve() for _ in range(5)]
    assert bucket.failures == 1  # tried once, then left alone until the retry time
    assert isinstance(bucket.fallback, TokenBucket)
    assert bucket.fallback.per_minute < 600  # a share, not the whole rate
    assert waits[-1] > 0  # limited all the same: never unlimited sending
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "the shared rate limit (create calls, file" in message
    assert "keeps to its local share instead" in message


class _Flaky:
    def __init__(self) -> None:
        self.broken = True
        self.calls = 0

    def reserve(self) -> float:
        self.calls += 1
        if self.broken:
            raise ConnectionError("actor unreachable")
        return 7.0

    def pause(self, seconds: float) -> None:
        self.reserve()


def test_the_shared_limiter_is_tried_again_after_the_retry_time() -> None:
    now = [0.0]
    shared = _Flaky()
    fallback = TokenBucket(60, burst=1, clock=lambda: now[0])
    guarded = GuardedBucket(shared, fallback, what="test", retry_seconds=30, clock=lambda: now[0])
    assert [guarded.reserve() for _ in range(3)] == [0.0, 1.0, 2.0]  # the fallback's slots
    assert shared.calls == 1
    shared.broken = False
    now[0] = 29.0
    assert guarded.reserve() == 0.0  # still on the fallback: its queue has drained by now
    now[0] = 30.0
    assert guarded.reserve() == 7.0  # the shared limiter again
    assert shared.calls == 2


def test_the_actor_keeps_one_gcra_state_per_key() -> None:
    actor = AccountActor()
    interval, tolerance = 1.0, 1.0  # 60/min, burst 2
    waits = [actor.reserve("api|create", interval, tolerance) for _ in range(4)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] == pytest.approx(1.0, abs=0.05) and waits[3] == pytest.approx(2.0, abs=0.05)
    assert actor.reserve("api|other", interval, tolerance) == 0.0
    actor.pause("api|other", 5.0, tolerance)
    assert actor.reserve("api|other", interval, tolerance) == pytest.approx(5.0, abs=0.05)


def test_process_scope_is_todays_in_memory_pair() -> None:
    limits = scoped_limits(BASE, scope="process", create_per_minute=600, other_per_minute=3000, burst=10)
    assert isinstance(limits.create, TokenBucket) and isinstance(limits.other, TokenBucket)


@pytest.mark.parametrize(
    ("configured", "launcher", "scope"),
    [
        ("auto", None, "process"),  # a single run
        ("auto", BASIC_LAUNCHER, "process"),  # a sweep whose jobs run in kkiai-run itself
        ("auto", JOBLIB, "machine"),
        ("auto", RAY, "cluster"),
        ("auto", "my_plugins.ArrayLauncher", "machine"),
        ("process", RAY, "process"),  # as set
        ("cluster", None, "cluster"),
    ],
)
def test_auto_follows_the_launcher(configured: str, launcher: str | None, scope: str) -> None:
    assert resolve_scope(configured, launcher=launcher) == scope


def test_the_file_holds_one_number_whatever_the_traffic(tmp_path: Path) -> None:
    bucket = FileBucket(tmp_path / "b", 1e9, burst=10**6)
    for _ in range(200):
        bucket.reserve()
    assert (tmp_path / "b").stat().st_size == 8


def test_the_cluster_scope_without_ray_falls_back_to_a_share_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("ray")
    limits = scoped_limits(BASE, scope="cluster", create_per_minute=600, other_per_minute=3000, burst=10)
    bucket = limits.bucket(create=True)
    assert isinstance(bucket, GuardedBucket)
    with caplog.at_level(logging.WARNING):
        waits = [bucket.reserve() for _ in range(3)]
    assert waits[0] == 0.0 and waits[-1] > 0  # burst 10 / 8 = 1: limited from the second request on
    assert isinstance(bucket.fallback, TokenBucket) and bucket.fallback.per_minute == 600 / 8
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "Ray actor kkiai-pipeline-account-v1, 1/8 if it fails" in message
    assert "Ray is not initialized in this process" in message


def test_a_time_far_ahead_in_the_file_is_forgotten_not_waited_for(tmp_path: Path) -> None:
    now = [10_000.0]
    bucket = FileBucket(tmp_path / "b", 60, burst=1, clock=lambda: now[0])
    bucket.pause(30)
    assert bucket.reserve() == 30.0  # a real pause is obeyed
    now[0] -= 2 * 3600  # the wall clock was set back two hours
    assert bucket.reserve() == 0.0

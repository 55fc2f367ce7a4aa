"""A token bucket kept in a file, shared by every process of this machine that opens the same file.

The file holds one number, the GCRA's theoretical arrival time (8 bytes, wall-clock seconds: the one
clock every process here reads alike, and one that survives a reboot, unlike ``time.monotonic``; a
time more than an hour ahead, left by a clock set back, is forgotten).
A reservation takes an exclusive ``fcntl.flock`` on it, reads, computes with the same arithmetic as the
in-memory :class:`~.ratelimit.TokenBucket` and writes back: four syscalls, a few microseconds. Each
process books with its own rate and burst against the shared time, so processes configured alike
together keep to that rate.

``flock`` is only reliable between processes of one machine (not on every network filesystem): this
is the ``machine`` scope. The file descriptor stays open for the life of the bucket; a thread lock
orders the threads of one process, which ``flock`` (held per open file) does not.
"""

from __future__ import annotations

import fcntl
import math
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .ratelimit import Clock, gcra_params, gcra_pause, gcra_reserve

_FORMAT = "<d"
_SIZE = struct.calcsize(_FORMAT)
_Change = Callable[[float, float], float]  # (tat, now) -> the new tat
# A time this far ahead is no queue of reservations but a wall clock set back (or a file from elsewhere):
# it is forgotten rather than obeyed, or every process would wait for it.
STALE_AHEAD_SECONDS = 3600.0


class FileBucket:
    """A GCRA bucket of ``per_minute`` tokens (at most ``burst`` at once) whose state is ``path``.

    Raises OSError when the file cannot be opened, locked, read or written (the caller falls back).
    """

    def __init__(self, path: Path, per_minute: float, *, burst: int, clock: Clock = time.time) -> None:
        self.path = path
        self._interval, self._tolerance = gcra_params(per_minute, burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = None

    def reserve(self) -> float:
        """Book the next slot of every process sharing ``path``; the seconds to wait before using it."""
        if not self._interval:
            return 0.0
        wait = 0.0

        def book(tat: float, now: float) -> float:
            nonlocal wait
            tat, wait = gcra_reserve(tat, now, interval=self._interval, tolerance=self._tolerance)
            return tat

        self._update(book)
        return wait

    def pause(self, seconds: float) -> None:
        """Let no process sharing ``path`` send before ``seconds`` from now."""
        if not self._interval or seconds <= 0:
            return
        self._update(lambda tat, now: gcra_pause(tat, now, seconds=seconds, tolerance=self._tolerance))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _update(self, change: _Change) -> None:
        with self._lock:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                data = os.pread(fd, _SIZE, 0)
                now = self._clock()
                tat = struct.unpack(_FORMAT, data)[0] if len(data) == _SIZE else -math.inf
                if tat > now + STALE_AHEAD_SECONDS:
                    tat = -math.inf
                os.pwrite(fd, struct.pack(_FORMAT, change(tat, now)), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

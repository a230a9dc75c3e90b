"""What every source shares: the items it yields, its counters, its protocol."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One encoded image (JPEG, PNG, ...) as read from a camera; decoded later."""

    data: bytes
    origin: str  # where it came from, for log lines: a path, a URL, a command
    captured: float  # time.time() when it was read


@dataclass(frozen=True)
class Window:
    """N consecutive sensor samples, normalised, shape [N, channels], float32."""

    values: np.ndarray
    origin: str
    captured: float


@dataclass(frozen=True)
class Audio:
    """A chunk of mono 16-bit PCM, shape [N], int16. A new `stream` (another file,
    a restarted command) starts a new recording: streaming models reset their state."""

    values: np.ndarray
    rate: int  # samples per second
    stream: int  # changes when a new recording starts
    offset: int  # index of the first sample within its stream
    origin: str
    captured: float


Item = Frame | Window | Audio


class SourceExhausted(Exception):  # noqa: N818 - a signal like StopIteration, not an error
    """A finite source (a glob of files, a file read to its end) has nothing more."""


@dataclass
class SourceStats:
    """Counters a source keeps; read by telemetry and the demo summary."""

    read: int = 0  # items delivered to the pipeline
    dropped: int = 0  # items discarded unconsumed (stale frames, full queues)
    errors: int = 0  # bad inputs skipped, failed reads, restarts
    bytes_in: int = 0  # bytes read from the device, file, network or command
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, read: int = 0, dropped: int = 0, errors: int = 0, bytes_in: int = 0) -> None:
        with self._lock:
            self.read += read
            self.dropped += dropped
            self.errors += errors
            self.bytes_in += bytes_in


class Source(Protocol):
    """A camera or a sensor. `read` is the verb; `close` stops its threads."""

    name: str
    stats: SourceStats

    def read(self, timeout: float) -> Item | None:
        """The next item, or None if none arrived within `timeout` seconds.

        Raises SourceExhausted when a finite source is done. Never raises for a
        bad input or a failing device: those are logged (rate-limited), counted
        in `stats.errors`, and skipped or retried with backoff.
        """
        ...

    def close(self) -> None:
        """Stop background threads and child processes; idempotent."""
        ...


class LatestSlot:
    """Latest-wins hand-over from a reader thread to the pipeline: a new item
    replaces one not yet taken, and the replaced one is counted as dropped."""

    def __init__(self, stats: SourceStats) -> None:
        self._stats = stats
        self._item: Item | None = None
        self._done = False
        self._ready = threading.Condition()

    def put(self, item: Item) -> None:
        with self._ready:
            if self._item is not None:
                self._stats.add(dropped=1)
            self._item = item
            self._ready.notify()

    def finish(self) -> None:
        """No more items will come; `take` raises SourceExhausted once drained."""
        with self._ready:
            self._done = True
            self._ready.notify_all()

    def take(self, timeout: float) -> Item | None:
        with self._ready:
            if self._item is None and not self._done:
                self._ready.wait(timeout)
            item, self._item = self._item, None
            if item is None and self._done:
                raise SourceExhausted
            if item is not None:
                self._stats.add(read=1)
            return item

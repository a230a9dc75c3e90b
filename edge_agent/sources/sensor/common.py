"""What every sensor source shares: the window, the drop-oldest queue, error
counting and the reader thread's life cycle.

Samples arrive on a background thread (ours, or paho's network thread) and windows
reach the pipeline through a bounded queue. Unlike camera frames, windows are not
latest-wins: each one is a distinct stretch of signal. But a stalled pipeline
must not grow memory, so a full queue drops its oldest window (counted in
`stats.dropped`). The exception is replaying a regular file without `follow`:
the data waits on disk, so the reader waits for the pipeline instead of dropping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from edge_agent.sources.base import SourceExhausted, SourceStats, Window
from edge_agent.sources.sensor.window import SlidingWindow, Vector
from edge_agent.util.logs import RateLimitedLog

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 64
_JOIN_TIMEOUT = 2.0


class SensorSource:
    """What every sensor source shares: the window, the drop-oldest queue, error
    counting and the reader thread's life cycle. Subclasses produce samples by
    overriding `_run` (a thread is started for them) or by calling `_sample`
    from a thread of their own (paho's)."""

    def __init__(self, name: str, *, window: SlidingWindow, origin: str, queue_size: int) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size: must be >= 1, got {queue_size}")
        self.name = name
        self.stats = SourceStats()
        self._window = window
        self._origin = origin
        self._queue_size = queue_size
        self._queue: deque[Window] = deque()
        self._changed = threading.Condition()
        self._wake_at = -1  # wake a replay's reader thread, waiting for room, at this length
        self._done = False
        self._stop = threading.Event()
        self._errors = RateLimitedLog(logger)
        self._thread: threading.Thread | None = None

    def read(self, timeout: float) -> Window | None:
        """The oldest undelivered window, None on timeout, SourceExhausted once done."""
        with self._changed:
            if not self._queue and not self._done:
                self._changed.wait_for(lambda: self._queue or self._done, timeout)
            if self._queue:
                window = self._queue.popleft()
                if len(self._queue) <= self._wake_at:  # notifying nobody costs too
                    self._changed.notify_all()
                self.stats.add(read=1)
                return window
            if self._done:
                raise SourceExhausted
            return None

    def close(self) -> None:
        """Stop producing promptly; windows already queued can still be read."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        self._halt()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT)
            if self._thread.is_alive():
                logger.warning(
                    "%s: reader thread did not stop within %.0fs", self.name, _JOIN_TIMEOUT
                )
        self._finish()

    def _halt(self) -> None:
        """Hook: stop a producer that is not our thread (paho's loop)."""

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._guarded_run, name=self.name, daemon=True)
        self._thread.start()

    def _guarded_run(self) -> None:
        """An unexpected exception is a bug: say so loudly, then end the source."""
        try:
            self._run()
        except Exception:
            logger.exception("%s: reader failed", self.name)
            self.stats.add(errors=1)
        finally:
            self._finish()

    def _run(self) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        with self._changed:
            self._done = True
            self._changed.notify_all()

    def _sample(self, sample: np.ndarray, *, wait: bool = False) -> None:
        """Push one sample; queue the window it completes, if any."""
        values = self._window.push(sample)
        if values is not None:
            self._put([values], wait)

    def _samples(self, samples: np.ndarray, *, wait: bool) -> None:
        """Push samples [n, channels]; queue the windows they complete, all at once."""
        windows = self._window.push_many(samples)
        if windows:
            self._put(windows, wait)

    def _put(self, values: list[Vector], wait: bool) -> None:
        """Queue windows just made, under one lock acquisition however many there are.

        With `wait`, a full queue waits for the reader (or close()); otherwise it
        drops its oldest windows, counted.
        """
        captured = time.time()
        windows = [Window(values=array, origin=self._origin, captured=captured) for array in values]
        with self._changed:
            if wait:
                self._put_waiting(windows)
            else:
                self._queue.extend(windows)
            dropped = len(self._queue) - self._queue_size
            for _ in range(dropped):
                self._queue.popleft()
            self._changed.notify_all()
        if dropped > 0:
            self.stats.add(dropped=dropped)

    def _put_waiting(self, windows: list[Window]) -> None:
        """Queue the windows as room frees up; the lock is held. Stops at close().

        A full queue is refilled once the pipeline has taken half of it, not as
        each window goes: waking this thread for every window would cost more
        than the window itself.
        """
        done = 0
        while done < len(windows):
            room = self._queue_size - len(self._queue)
            if room > 0:
                self._queue.extend(windows[done : done + room])
                done += room
                continue
            self._changed.notify_all()  # the pipeline may be asleep: show it what is queued
            self._wake_at = self._queue_size // 2
            self._changed.wait_for(lambda: len(self._queue) <= self._wake_at or self._stop.is_set())
            self._wake_at = -1
            if self._stop.is_set():
                return  # closing: the rest would never be read

    def _reject(self, kind: str, reason: str) -> None:
        """Count one bad input or failed read; log it, rate-limited per kind."""
        self.stats.add(errors=1)
        self._errors.warning(f"{self.name}:{kind}", "%s: %s: %s", self.name, kind, reason)


def check_channels(channels: int, window: SlidingWindow) -> None:
    if channels != window.channels:
        raise ValueError(f"channels: {channels}, but the window has {window.channels}")

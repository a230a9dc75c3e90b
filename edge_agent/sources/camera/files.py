"""Images from the files a glob matches: demos, tests, replaying a capture."""

from __future__ import annotations

import glob
import logging
import threading
import time
from collections import deque

from edge_agent.errors import InputError
from edge_agent.sources.base import Frame, SourceExhausted, SourceStats
from edge_agent.sources.camera.common import load, log_skip
from edge_agent.sources.pacing import Pacer
from edge_agent.util.logs import RateLimitedLog

logger = logging.getLogger(__name__)


class FilesSource:
    """Images from the files a glob matches, in name order. Pull-based, so a slow
    pipeline still sees every file."""

    def __init__(self, name: str, *, pattern: str, loop: bool = False, fps: float = 0) -> None:
        self.name = name
        self.stats = SourceStats()
        self._pattern = pattern
        self._loop = loop
        self._pacer = Pacer(fps, what="fps")
        self._queue: deque[str] = deque()
        self._bad: set[str] = set()  # skipped for good, so a loop does not spin on them
        self._passes = 0
        self._closed = threading.Event()
        self._log = RateLimitedLog(logger)

    def read(self, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            if not self._queue and not self._refill():
                if not self._loop:
                    raise SourceExhausted
                self._closed.wait(deadline - time.monotonic())
                return None
            delay = self._pacer.delay()
            if delay > max(0.0, deadline - time.monotonic()):
                self._closed.wait(deadline - time.monotonic())
                return None
            self._closed.wait(delay)
            if frame := self._read_next():
                return frame
        raise SourceExhausted

    def close(self) -> None:
        self._closed.set()

    def _refill(self) -> bool:
        """Start the next pass over the glob, which a loop re-evaluates each time."""
        if self._passes and not self._loop:
            return False
        self._passes += 1
        paths = sorted(glob.glob(self._pattern, recursive=True))
        self._queue.extend(path for path in paths if path not in self._bad)
        if not self._queue:
            self._log.warning("empty", "%s: no readable files match %r", self.name, self._pattern)
        return bool(self._queue)

    def _read_next(self) -> Frame | None:
        path = self._queue.popleft()
        try:
            data = load(path, self.stats)
        except InputError as exc:
            self._bad.add(path)
            log_skip(self._log, self.name, path, str(exc))
            self.stats.add(errors=1)
            return None
        self._pacer.mark()
        self.stats.add(read=1)
        return Frame(data=data, origin=path, captured=time.time())

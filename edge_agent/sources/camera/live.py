"""The reader thread the live cameras share (directory, HTTP snapshot, MJPEG,
command): start and stop, retry with backoff, the fps cap, and the latest-wins
hand-over. A live camera that falls behind should show the pipeline the newest
image, not a growing backlog of stale ones."""

from __future__ import annotations

import logging
import threading
import time

from edge_agent.errors import SourceError
from edge_agent.sources.base import Frame, LatestSlot, SourceStats
from edge_agent.sources.camera.common import describe, log_skip
from edge_agent.sources.pacing import Pacer
from edge_agent.util.backoff import Backoff, BackoffOptions
from edge_agent.util.logs import RateLimitedLog

logger = logging.getLogger(__name__)

JOIN_TIMEOUT = 1.0
# A failed camera or command is retried from 0.5 s, doubling to 30 s, never at once
# (a command that exits immediately is not restarted in a tight loop).
RESTART_BACKOFF = BackoffOptions(0.5, 30.0, jitter="equal")


class LiveSource:
    """A subclass writes `_session`: one connection, one run of the command, one
    directory poll; it raises SourceError when that fails or ends."""

    def __init__(self, name: str, *, origin: str, fps: float) -> None:
        self.name = name
        self.stats = SourceStats()
        self._origin = origin
        self._gate = Pacer(fps, what="fps")
        self._slot = LatestSlot(self.stats)
        self._stop = threading.Event()
        self._progress = False  # a frame arrived during the current session
        self._log = RateLimitedLog(logger)
        self._thread = threading.Thread(target=self._run, name=f"source-{name}", daemon=True)

    def read(self, timeout: float) -> Frame | None:
        item = self._slot.take(timeout)
        if item is not None and not isinstance(item, Frame):
            raise TypeError(f"{self.name}: not a Frame: {item!r}")
        return item

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._interrupt()
        self._slot.finish()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT)
            if self._thread.is_alive():
                logger.warning("%s: reader thread still busy after close", self.name)

    def _session(self) -> None:
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Wake the reader thread from a blocking call; close() calls it."""

    def _run(self) -> None:
        backoff = Backoff(RESTART_BACKOFF)
        while not self._stop.is_set():
            self._progress = False
            try:
                self._session()
                backoff.reset()
                continue
            except SourceError as exc:
                reason = str(exc)
            except Exception as exc:  # a bug must not silently kill the camera
                logger.debug("%s: session failed", self.name, exc_info=exc)
                reason = f"unexpected {describe(exc)}"
            if self._stop.is_set():  # close() interrupted it: not a failure
                break
            if self._progress:
                backoff.reset()
            delay = backoff.next_delay()
            key = f"failed:{reason.partition(':')[0]}"
            self._log.warning(key, "%s: %s; retrying in %.1f s", self.name, reason, delay)
            self.stats.add(errors=1)  # after the log line, so who sees the count finds it
            self._stop.wait(delay)

    def _offer(self, data: bytes, origin: str | None = None) -> None:
        """Hand a frame over, unless the fps cap says it is too soon after the last."""
        self._progress = True
        if self._stop.is_set():
            return
        if self._gate.delay() > 0:
            self.stats.add(dropped=1)
            return
        self._gate.mark()
        self._slot.put(Frame(data=data, origin=origin or self._origin, captured=time.time()))

    def _reject(self, what: str, reason: str) -> None:
        log_skip(self._log, self.name, what, reason)
        self.stats.add(errors=1)

"""Logging helpers: rate-limited repeats, so a dead camera writes one line, not one per frame."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    """Log the first occurrence of each key, then at most once per `interval`
    seconds, saying how many repeats were suppressed in between."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log `msg % args` unless `key` was logged within the interval; True if logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            repeats = self._suppressed.pop(key, 0)
        if repeats:
            msg += " (%d similar messages suppressed)"
            args = (*args, repeats)
        self._logger.log(level, msg, *args)
        return True

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, key, msg, *args)


# syslog priorities by logging level; journald reads a "<N>" prefix on each line.
SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """Lines for journald: a syslog priority prefix, no timestamp (journald adds
    its own), so `journalctl -p warning` and the colours in `journalctl` work."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def configure(verbose: bool, journald: bool) -> None:
    """Root logging for the command line: journald's format under systemd
    (JOURNAL_STREAM set), a timestamped one on a terminal."""
    handler = logging.StreamHandler()
    if journald:
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)

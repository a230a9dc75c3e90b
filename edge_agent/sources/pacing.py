"""The one pacer and the one backoff every source uses: pure timing, no I/O."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class Pacer:
    """Ticks `per_second` apart on a fixed grid, so the steps at which inputs happen
    to arrive do not lower the rate; after a stall the grid restarts rather than
    bursting to catch up. 0 means no limit.

    Two ways to use it: a live camera asks `delay()` and calls `mark()` when it
    hands a frame over (dropping frames that come too soon); a paced reader calls
    `wait(stop)`, which sleeps until the next tick and marks it.
    """

    def __init__(
        self,
        per_second: float,
        *,
        what: str = "rate",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if math.isnan(per_second) or per_second < 0:
            raise ValueError(f"{what}: must be >= 0, got {per_second}")
        self._period = 1.0 / per_second if per_second > 0 else 0.0
        self._clock = clock
        self._due = 0.0

    def delay(self) -> float:
        """Seconds until the next tick is due; 0 if it is due now."""
        return max(0.0, self._due - self._clock())

    def mark(self) -> None:
        """A tick happened now: the next is due one period after this one's slot."""
        now = self._clock()
        self._due = (self._due if now - self._due < self._period else now) + self._period

    def wait(self, stop: threading.Event) -> bool:
        """Sleep until the next tick and take it; False if `stop` was set."""
        if not self._period:
            return not stop.is_set()
        if stop.wait(self.delay()):
            return False
        self.mark()
        return True

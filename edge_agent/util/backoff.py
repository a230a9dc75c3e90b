"""The project's one retry delay: full-jitter exponential backoff.

"Exponential Backoff And Jitter" (AWS Architecture Blog, 2015): the n-th retry
waits `uniform(0, min(cap, base * 2**n))`. Without the jitter a fleet that lost
its broker at the same instant retries at the same instants, and every retry
is a connect storm (mosquitto issues #2095, #2830). The full range, down to 0,
is what spreads them; the expected delay is half the exponential one.

Where a retry must not come at once (a camera command that exits immediately
would otherwise be restarted in a tight loop), `jitter = "equal"` draws from the
upper half of each step instead; `"none"` gives the plain doubling (a local
device that failed: nobody else is retrying with it).

`first_window` spreads the first retry after a disconnect on its own:
`uniform(0, first_window)`. A broker restart disconnects every device in the
same second; with N devices and a window of W seconds the broker sees about
N / W connects per second instead of N in one. Later retries follow the full
jitter rule from `base` again (the broker may be back by then).

Pure: the random generator is a parameter, and the only sleep is `wait`, on an
event that ends it.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Literal

MAX_EXPONENT = 62  # 2**62 * base overflows nothing and is far beyond any cap


@dataclass(frozen=True)
class BackoffOptions:
    base: float = 1.0  # seconds: the ceiling of the first full-jitter delay
    cap: float = 60.0  # no delay is longer
    first_window: float = 0.0  # 0: the first retry follows the jitter rule
    jitter: Literal["full", "equal", "none"] = "full"

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(f"backoff: need 0 < base ({self.base}) <= cap ({self.cap})")
        if not 0 <= self.first_window <= self.cap:
            raise ValueError(f"backoff: first_window {self.first_window} is not in 0..cap")


class Backoff:
    """`next_delay()` after each failure (or disconnect), `reset()` after a success."""

    def __init__(self, options: BackoffOptions, rng: random.Random | None = None) -> None:
        self.options = options
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - not crypto
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Delays handed out since the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt."""
        opts = self.options
        attempt = self._attempt
        self._attempt += 1
        if attempt == 0 and opts.first_window > 0:
            return self._rng.uniform(0.0, opts.first_window)
        ceiling = self.ceiling(attempt)
        if opts.jitter == "none":
            return ceiling
        low = ceiling / 2 if opts.jitter == "equal" else 0.0
        return self._rng.uniform(low, ceiling)

    def ceiling(self, attempt: int) -> float:
        """The longest delay the `attempt`-th retry (0-based) may draw."""
        opts = self.options
        return min(opts.cap, opts.base * 2.0 ** min(attempt, MAX_EXPONENT))

    def reset(self) -> None:
        self._attempt = 0

    def wait(self, stop: threading.Event) -> bool:
        """Sleep the next delay; False if `stop` was set (meanwhile or before)."""
        return not stop.wait(self.next_delay())

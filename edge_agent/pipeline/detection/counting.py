"""Count hysteresis: the number of objects in a (zone, label) that is worth reporting.

A detector's count flickers: a person is missed in one frame, a shadow is a
"person" in another. A higher count is accepted only after it has held for
``debounce`` frames in a row (at the lowest level seen over them); a lower
count only after it has held for ``absent_frames`` frames *and*
``absent_seconds`` seconds (at the highest level seen over them). So 1, 0, 1, 0
stays 1 and 0, 1, 0, 1 stays 0, and presence clears only after a real absence.
"""

from __future__ import annotations

import math


def check_count(name: str, value: int) -> int:
    """An integer >= 1 (a number of frames)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_seconds(name: str, value: float) -> float:
    """A finite duration >= 0 (0 disables the feature)."""
    if isinstance(value, bool) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


class CountLevel:
    """The settled count of one (zone, label), fed the raw count of every frame."""

    def __init__(self, *, debounce: int, absent_frames: int, absent_seconds: float) -> None:
        self._debounce = debounce
        self._absent_frames = absent_frames
        self._absent_seconds = absent_seconds
        self.settled = 0
        self._rising = 0  # frames in a row above `settled`
        self._floor = 0  # the lowest raw count over them
        self._falling = 0  # frames in a row below `settled`
        self._peak = 0  # the highest raw count over them
        self._since = 0.0  # when the fall began

    def update(self, raw: int, now: float) -> int:
        """Count one frame's ``raw`` count at monotonic ``now``; return the settled count."""
        if raw > self.settled:
            self._falling = 0
            self._floor = raw if self._rising == 0 else min(self._floor, raw)
            self._rising += 1
            if self._rising >= self._debounce:
                self._settle(self._floor)
        elif raw < self.settled:
            self._rising = 0
            if self._falling == 0:
                self._since, self._peak = now, raw
            self._peak = max(self._peak, raw)
            self._falling += 1
            held = now - self._since >= self._absent_seconds
            if self._falling >= self._absent_frames and held:
                self._settle(self._peak)
        else:
            self._rising = self._falling = 0
        return self.settled

    def _settle(self, value: int) -> None:
        self.settled = value
        self._rising = self._falling = 0

"""Which inputs to keep: pure rules over one inference's evidence, plus an hourly cap.

No I/O, no clock reads: the caller passes the time, and the random draw comes
from an injected generator so tests can seed it.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

HOUR = 3600.0

LOW_CONFIDENCE = "low_confidence"
DRIFT = "drift"
CHANGE = "change"
DISAGREEMENT = "disagreement"
RANDOM = "random"
WRONG = "wrong"  # feedback said the decision was wrong


@dataclass(frozen=True)
class RuleOptions:
    below: float | None = None  # top-1 confidence under this keeps the input
    drift: bool = False  # keep inputs seen during a drift episode
    change: bool = False  # keep the input behind a decision change
    disagreement: bool = False  # keep inputs the shadow model disagrees on
    every: int = 0  # 1 in N at random; 0: never
    per_hour: int = 60

    def __post_init__(self) -> None:
        if self.below is not None and not 0.0 <= self.below <= 1.0:
            raise ValueError(f"below must be in [0, 1], got {self.below}")
        if self.every < 0:
            raise ValueError(f"every must be >= 0, got {self.every}")
        if self.per_hour < 1:
            raise ValueError(f"per_hour must be >= 1, got {self.per_hour}")


@dataclass(frozen=True)
class Observation:
    """One inference's evidence: top-1 confidence (None if the output has no class
    scores), whether a drift episode is on, whether the decision just changed, and
    whether the shadow disagreed (known only later, on the shadow's thread)."""

    confidence: float | None = None
    drifting: bool = False
    changed: bool = False
    disagreed: bool = False


class CaptureRules:
    """`check` is the verb: the reasons to keep an input, or () when none fires or
    the hourly cap is reached (counted in `limited`)."""

    def __init__(self, options: RuleOptions, *, rng: random.Random | None = None) -> None:
        self.options = options
        self._rng = rng or random.Random()  # noqa: S311 - sampling, not secrecy
        self._kept: deque[float] = deque()
        self.limited = 0

    def reasons(self, obs: Observation) -> list[str]:
        """Every rule that fires for `obs`, ignoring the cap."""
        o = self.options
        why = []
        if o.below is not None and obs.confidence is not None and obs.confidence < o.below:
            why.append(LOW_CONFIDENCE)
        if o.drift and obs.drifting:
            why.append(DRIFT)
        if o.change and obs.changed:
            why.append(CHANGE)
        if o.disagreement and obs.disagreed:
            why.append(DISAGREEMENT)
        if o.every and self._rng.random() * o.every < 1.0:
            why.append(RANDOM)
        return why

    def admit(self, now: float) -> bool:
        """Take one of this hour's slots; False when `per_hour` were taken in the last hour."""
        while self._kept and now - self._kept[0] >= HOUR:
            self._kept.popleft()
        if len(self._kept) >= self.options.per_hour:
            self.limited += 1
            return False
        self._kept.append(now)
        return True

    def check(self, obs: Observation, now: float) -> list[str]:
        why = self.reasons(obs)
        return why if why and self.admit(now) else []

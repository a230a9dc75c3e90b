"""The wake-word policy: microWakeWord's detection rule plus a refractory period.

A wake word is detected when the mean of the last `sliding_window_size`
probabilities reaches `probability_cutoff` (the rule ESPHome and pymicro-wakeword
apply). The mean stays above the cutoff for several calls while the word ends,
so after an event the policy stays quiet for `refractory` seconds of audio: one
event per utterance. Pure: time is the offset in the stream, passed in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class WakeWordOptions:
    word: str
    probability_cutoff: float = 0.97
    sliding_window_size: int = 5
    refractory: float = 2.0  # seconds of audio after an event in which no other is sent

    def __post_init__(self) -> None:
        if not self.word:
            raise ValueError("word must not be empty")
        if not 0.0 < self.probability_cutoff <= 1.0:
            raise ValueError(f"probability_cutoff must be in (0, 1], got {self.probability_cutoff}")
        if self.sliding_window_size < 1:
            raise ValueError(f"sliding_window_size must be >= 1, got {self.sliding_window_size}")
        if not (math.isfinite(self.refractory) and self.refractory >= 0):
            raise ValueError(
                f"refractory must be a finite number of seconds >= 0, got {self.refractory}"
            )


@dataclass(frozen=True)
class WakeEvent:
    """One detection: the word, the smoothed score, when in the stream it ended."""

    word: str
    score: float
    offset_s: float

    def as_dict(self) -> dict[str, object]:
        return {
            "word": self.word,
            "score": round(self.score, 4),
            "offset_s": round(self.offset_s, 3),
        }


class WakeWordPolicy:
    """`update` is the verb: one probability in, an event or None out."""

    def __init__(self, options: WakeWordOptions) -> None:
        self.options = options
        self._recent: deque[float] = deque(maxlen=options.sliding_window_size)
        self._quiet_until = -math.inf
        self.peak = 0.0  # the highest smoothed score since the last reset

    def update(self, probability: float, offset_s: float) -> WakeEvent | None:
        if not (math.isfinite(probability) and math.isfinite(offset_s)):
            raise ValueError(f"probability {probability} at {offset_s} s is not finite")
        self._recent.append(probability)
        if len(self._recent) < self._recent.maxlen:  # type: ignore[operator]
            return None  # microWakeWord waits for a full window too
        score = sum(self._recent) / len(self._recent)
        self.peak = max(self.peak, score)
        if score < self.options.probability_cutoff or offset_s < self._quiet_until:
            return None
        self._quiet_until = offset_s + self.options.refractory
        return WakeEvent(self.options.word, score, offset_s)

    def reset(self) -> None:
        """A new stream: forget the probabilities, the refractory period and the peak."""
        self._recent.clear()
        self._quiet_until = -math.inf
        self.peak = 0.0

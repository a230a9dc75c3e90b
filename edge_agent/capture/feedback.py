"""Accuracy from the field: a consumer that learns the truth publishes
`{"id": <event id>, "truth": <label or state>}`; the events still remembered are
matched, a rolling accuracy is kept per model version, and an `accuracy` episode
starts (once) when it falls under a threshold over enough labelled events, and
ends (once) when it is back. Pure: no I/O, no threads, no clock.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Literal

from edge_agent.errors import InputError


@dataclass(frozen=True)
class FeedbackOptions:
    remember: int = 1000
    window: int = 200
    min_labelled: int = 20
    threshold: float = 0.8
    clear_threshold: float | None = None  # default: threshold

    def __post_init__(self) -> None:
        if min(self.remember, self.window, self.min_labelled) < 1:
            raise ValueError("remember, window and min_labelled must be >= 1")
        if self.min_labelled > self.window:
            raise ValueError("min_labelled must not exceed window")


@dataclass(frozen=True)
class Remembered:
    state: str
    label: str | None
    version: str


@dataclass(frozen=True)
class Outcome:
    event_id: str
    correct: bool
    truth: str
    remembered: Remembered
    accuracy: float
    labelled: int
    alert: Literal["accuracy", "clear"] | None  # an episode started or ended


def parse_feedback(payload: bytes) -> tuple[str, str]:
    """(id, truth) from a feedback message; InputError saying what is wrong."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"feedback is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError("feedback must be a JSON object with id and truth")
    event_id, truth = value.get("id"), value.get("truth")
    if not isinstance(event_id, str) or not event_id:
        raise InputError("feedback: id must be a non-empty string (the event's id)")
    if not isinstance(truth, str) or not truth:
        raise InputError("feedback: truth must be a non-empty string (a label or state)")
    return event_id, truth


class AccuracyTracker:
    def __init__(self, options: FeedbackOptions) -> None:
        self.options = options
        self._events: OrderedDict[str, Remembered] = OrderedDict()
        self._results: dict[str, deque[bool]] = {}
        self._alerting = False
        self.unknown = 0  # feedback for an event no longer (or never) remembered, or repeated

    def remember(self, event_id: str, state: str, label: str | None, version: str) -> None:
        self._events[event_id] = Remembered(state, label, version)
        while len(self._events) > self.options.remember:
            self._events.popitem(last=False)

    def label(self, event_id: str, truth: str) -> Outcome | None:
        """Count the truth for a remembered event (once); None if unknown."""
        event = self._events.pop(event_id, None)
        if event is None:
            self.unknown += 1
            return None
        correct = truth in (event.state, event.label)
        results = self._results.setdefault(event.version, deque(maxlen=self.options.window))
        results.append(correct)
        accuracy = sum(results) / len(results)
        alert = self._episode(accuracy, len(results))
        return Outcome(event_id, correct, truth, event, accuracy, len(results), alert)

    def _episode(self, accuracy: float, labelled: int) -> Literal["accuracy", "clear"] | None:
        o = self.options
        clear = o.threshold if o.clear_threshold is None else o.clear_threshold
        if not self._alerting and labelled >= o.min_labelled and accuracy < o.threshold:
            self._alerting = True
            return "accuracy"
        if self._alerting and accuracy >= clear:
            self._alerting = False
            return "clear"
        return None

    @property
    def status(self) -> dict[str, Any]:
        return {
            "state": "low" if self._alerting else "ok",
            "versions": {
                version: {
                    "labelled": len(r),
                    "correct": sum(r),
                    "accuracy": round(sum(r) / len(r), 4) if r else None,
                }
                for version, r in self._results.items()
            },
            "unknown": self.unknown,
        }

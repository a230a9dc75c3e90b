"""What an audio pipeline publishes: one event per wake word, or a window model's state.

``Listener.hear`` gives one ``Heard`` per inference. For a streaming wake-word
model the listener's ``WakeWordPolicy`` has already decided (``Heard.event``);
``WakeWordDecisions`` turns each event into a decision. A window model's
outputs go through the classification policy (``ClassifiedAudio``). Both add
where in the stream the decision fell. The wake-word event::

    {"v": 1, "device": "hall", "pipeline": "voice", "seq": 7, "id": "...",
     "ts": "2026-05-02T08:50:38.123Z",
     "decision": "okay nabu",      # the word
     "score": 0.981,               # the mean probability that crossed the cutoff
     "previous": "okay nabu",      # the word of the event before (null for the first)
     "reason": "detected",
     "label": "okay nabu",
     "model": {...},
     "word": "okay nabu",
     "offset_s": 1.23}             # seconds into the stream (file, or run of the command)

A window model's events are classification events (``reason`` ``change`` or
``heartbeat``) with ``offset_s`` added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_agent.mqtt.payloads import Decision
from edge_agent.pipeline.audio.listener import Heard
from edge_agent.pipeline.audio.policy import WakeWordPolicy
from edge_agent.pipeline.policy import ClassificationPolicy

DETECTED = "detected"
"""``reason`` of a wake-word event."""
DIGITS = 3


@dataclass(frozen=True)
class WakeWordDecision(Decision):
    word: str
    offset_s: float

    def extra(self) -> dict[str, Any]:
        return {"word": self.word, "offset_s": round(self.offset_s, DIGITS)}


@dataclass(frozen=True)
class AudioDecision(Decision):
    """A window model's decision, with the time in the stream it was made."""

    offset_s: float

    def extra(self) -> dict[str, Any]:
        return {"offset_s": round(self.offset_s, DIGITS)}


def _require_heard(heard: object) -> Heard:
    if not isinstance(heard, Heard):
        raise ValueError(f"expected what a Listener heard, got {type(heard).__name__}")
    return heard


class WakeWordDecisions:
    """The policy of a wake-word pipeline: every event the listener's ``wake`` policy
    detected becomes a decision. ``state`` is the last word heard."""

    def __init__(self, wake: WakeWordPolicy) -> None:
        self.wake = wake
        self._state: str | None = None

    @property
    def state(self) -> str | None:
        return self._state

    def decide(self, heard: Any, now: float) -> WakeWordDecision | None:
        event = _require_heard(heard).event
        if event is None:
            return None
        previous, self._state = self._state, event.word
        return WakeWordDecision(
            event.word, event.score, previous, DETECTED, event.word, event.word, event.offset_s
        )


class ClassifiedAudio:
    """A window model's outputs through the classification policy."""

    def __init__(self, policy: ClassificationPolicy) -> None:
        self.policy = policy

    @property
    def state(self) -> str | None:
        return self.policy.state

    def decide(self, heard: Any, now: float) -> AudioDecision | None:
        found = _require_heard(heard)
        decision = self.policy.decide(found.output.reshape(-1), now)
        if decision is None:
            return None
        return AudioDecision(
            decision.state,
            decision.score,
            decision.previous,
            decision.reason,
            decision.label,
            found.offset_s,
        )

"""A pipeline's tap into the loop: after every inference it applies the capture
rules, hands 1 input in N to the shadow, and remembers emitted events (and, for a
few, their inputs) so feedback can be matched and wrong inputs captured. Runs on
the pipeline's thread: only counters, comparisons and non-blocking hand-overs."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.capture.feedback import AccuracyTracker, Outcome, parse_feedback
from edge_agent.capture.rules import WRONG, CaptureRules, Observation
from edge_agent.capture.shadow import ShadowJob, ShadowRunner, Top1, top1
from edge_agent.capture.writer import CaptureWriter, Pending
from edge_agent.errors import InputError
from edge_agent.mqtt.payloads import Decision, ModelInfo, alert_payload, sample_sidecar
from edge_agent.sources.base import Item
from edge_agent.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
limited = RateLimitedLog(log)

TOP_K = 5
MAX_VALUES = 16


@dataclass(frozen=True)
class Seen:
    """An emitted event's input and evidence, kept briefly for feedback."""

    item: Item
    scores: np.ndarray
    decision: Decision | None
    model: ModelInfo


@dataclass
class TapCounts:
    offered: int = 0  # samples handed to the writer
    limited: int = 0  # rules fired but the hourly cap was reached


def outputs_summary(scores: np.ndarray, labels: list[str] | None) -> dict[str, Any]:
    """Top-k classes for class scores; the first values otherwise."""
    flat = np.asarray(scores, dtype=np.float32).reshape(-1)
    if flat.size <= 1:
        return {"values": [round(float(v), 5) for v in flat[:MAX_VALUES]]}
    order = np.argsort(-flat, kind="stable")[:TOP_K]
    return {
        "top": [
            {
                "index": int(i),
                "label": labels[i] if labels and i < len(labels) else str(int(i)),
                "score": round(float(flat[i]), 5),
            }
            for i in order
        ]
    }


class Tap:
    def __init__(
        self,
        pipeline: str,
        device: str,
        *,
        labels: list[str] | None,
        rules: CaptureRules | None = None,
        writer: CaptureWriter | None = None,
        shadow: ShadowRunner | None = None,
        tracker: AccuracyTracker | None = None,
        ring: int = 16,
        drifting: Callable[[], bool] = lambda: False,
        latency: Callable[[], float] = lambda: 0.0,
        state: Callable[[], str | None] = lambda: None,
        alert: Callable[[dict[str, Any]], None] = lambda _a: None,
        clock: Callable[[], float] = time.time,
        verdict: Callable[[np.ndarray], Top1] | None = None,
    ) -> None:
        """`verdict` is the serving model's side of the shadow comparison, from its
        first output (default: its top-1 class, named by `labels`)."""
        self.pipeline, self.device = pipeline, device
        self.verdict = verdict
        self.labels = labels
        self.rules = rules if writer is not None else None
        self.writer = writer
        self.shadow = shadow
        self.shadow_failure: str | None = None  # why a configured shadow never ran
        self.tracker = tracker
        self.counts = TapCounts()
        self._ring: OrderedDict[str, Seen] = OrderedDict()
        self._ring_size = ring if tracker is not None and self.rules is not None else 0
        self._drifting, self._latency, self._state = drifting, latency, state
        self._alert, self._clock = alert, clock
        self._pending_event: str | None = None
        self._last_model: ModelInfo | None = None
        self._lock = threading.Lock()  # rules and tracker: pipeline, shadow and paho threads

    # --- the pipeline's thread -------------------------------------------------

    def on_event(self, event_id: str, _decision: Decision) -> None:
        """The emitter's hook: the id of the event about to be sent."""
        self._pending_event = event_id

    def observed(
        self, item: Item, scores: np.ndarray, decision: Decision | None, model: ModelInfo
    ) -> None:
        try:
            self._observe(item, scores, decision, model)
        except Exception as exc:  # the loop is an observer: never the pipeline's death
            limited.error(
                f"{self.pipeline}-tap",
                "%s: sample capture: %s: %s",
                self.pipeline,
                type(exc).__name__,
                exc,
            )

    def _observe(
        self, item: Item, scores: np.ndarray, decision: Decision | None, model: ModelInfo
    ) -> None:
        event_id, self._pending_event = self._pending_event, None
        self._last_model = model
        if event_id is not None and decision is not None:
            self._remember(event_id, Seen(item, scores, decision, model))
        if self.rules is not None:
            o = self.rules.options
            obs = Observation(
                confidence=float(np.max(scores)) if o.below is not None else None,
                drifting=o.drift and self._drifting(),
                changed=decision is not None and decision.reason == "change",
            )
            with self._lock:
                why = self.rules.check(obs, item.captured)
            if why:
                self._capture(Seen(item, scores, decision, model), why)
        shadow = self.shadow
        if shadow is not None and shadow.due():
            serving = self.verdict(scores) if self.verdict else top1(scores, self.labels)
            shadow.offer(ShadowJob(item, serving, self._latency()))

    def _remember(self, event_id: str, seen: Seen) -> None:
        assert seen.decision is not None
        with self._lock:
            if self.tracker is not None:
                self.tracker.remember(
                    event_id, seen.decision.state, seen.decision.label, seen.model.version
                )
            if self._ring_size:
                self._ring[event_id] = seen
                while len(self._ring) > self._ring_size:
                    self._ring.popitem(last=False)

    def _capture(
        self,
        seen: Seen,
        why: list[str],
        extra: dict[str, Any] | None = None,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        assert self.writer is not None
        sidecar = sample_sidecar(
            device=self.device,
            pipeline=self.pipeline,
            epoch=seen.item.captured,
            model=seen.model,
            outputs=outputs or outputs_summary(seen.scores, self.labels),
            decision=seen.decision,
            state=self._state(),
            why=why,
            input_name="",
            extra=extra,
        )
        self.counts.offered += 1
        self.writer.offer(Pending(self.pipeline, seen.item, sidecar))

    # --- the shadow's thread ---------------------------------------------------

    def on_disagree(self, job: ShadowJob, theirs: Top1) -> None:
        """The shadow's top-1 differs from the serving model's: maybe keep the input."""
        if self.rules is None or not self.rules.options.disagreement:
            return
        with self._lock:
            why = self.rules.check(Observation(disagreed=True), job.item.captured)
        if not why:
            return
        info = self.shadow.info if self.shadow is not None else None
        outputs = {"top": [{"label": job.serving.label, "score": round(job.serving.score, 5)}]}
        shadow = {
            "label": theirs.label,
            "score": round(theirs.score, 5),
            "model": info.as_dict() if info else None,
        }
        seen = Seen(job.item, np.zeros(0, np.float32), None, self._last_model or _UNKNOWN)
        self._capture(seen, why, {"shadow": shadow}, outputs=outputs)

    # --- paho's thread -----------------------------------------------------------

    def on_feedback(self, payload: bytes) -> None:
        """`{"id", "truth"}` from the feedback topic: count it, alert, capture a miss."""
        if self.tracker is None:
            return
        try:
            event_id, truth = parse_feedback(payload)
        except InputError as exc:
            limited.warning(
                f"{self.pipeline}-feedback", "%s: feedback ignored: %s", self.pipeline, exc
            )
            return
        with self._lock:
            outcome = self.tracker.label(event_id, truth)
            seen = self._ring.pop(event_id, None)
        if outcome is None:
            log.info("%s: feedback for unknown event %s ignored", self.pipeline, event_id)
            return
        if outcome.alert is not None:
            self._send_alert(outcome, seen)
        if not outcome.correct and seen is not None and self.rules is not None:
            with self._lock:
                admitted = self.rules.admit(self._clock())
            if admitted:
                self._capture(seen, [WRONG], {"truth": truth, "event_id": event_id})
            else:
                self.counts.limited += 1

    def _send_alert(self, outcome: Outcome, seen: Seen | None) -> None:
        o = self.tracker.options if self.tracker else None
        log.warning(
            "%s: %s (accuracy %.3f over %d labelled, model %s)",
            self.pipeline,
            "accuracy alert" if outcome.alert == "accuracy" else "accuracy back",
            outcome.accuracy,
            outcome.labelled,
            outcome.remembered.version,
        )
        model = seen.model if seen is not None else self._last_model or _UNKNOWN
        self._alert(
            alert_payload(
                device=self.device,
                pipeline=self.pipeline,
                epoch=self._clock(),
                state="accuracy" if outcome.alert == "accuracy" else "clear",
                measure="accuracy",
                score=outcome.accuracy,
                worst=outcome.remembered.version,
                details={
                    "labelled": float(outcome.labelled),
                    "threshold": o.threshold if o else 0.0,
                },
                model=model,
            )
        )

    # --- telemetry -----------------------------------------------------------------

    @property
    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.writer is not None and self.rules is not None:
            c = self.writer.counts.get(self.pipeline)
            out["capture"] = {
                "offered": self.counts.offered,
                "kept": c.kept if c else 0,
                "dropped": c.dropped if c else 0,
                "failed": c.failed if c else 0,
                "limited": self.rules.limited + self.counts.limited,
                "stopped": self.writer.stopped,
            }
        if self.shadow is not None:
            out["shadow"] = self.shadow.report()
        elif self.shadow_failure is not None:
            out["shadow"] = {"state": "dropped", "reason": self.shadow_failure}
        if self.tracker is not None:
            with self._lock:
                out["accuracy"] = self.tracker.status
        return out


_UNKNOWN = ModelInfo("unknown", "unknown", "")

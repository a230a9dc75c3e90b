"""One pipeline: source -> preprocess -> model -> policy -> MQTT, on its own thread."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from edge_agent.errors import InputError, ModelError
from edge_agent.model.runtime import Model
from edge_agent.mqtt.emitter import Emitter
from edge_agent.mqtt.payloads import Decision, ModelInfo, alert_payload, state_payload
from edge_agent.pipeline.decode_ahead import END, DecodeAhead
from edge_agent.pipeline.drift import DriftMonitor, input_features
from edge_agent.pipeline.policy import Policy
from edge_agent.sources.base import Frame, Item, Source, SourceExhausted
from edge_agent.util.logs import RateLimitedLog

if TYPE_CHECKING:  # Pillow (2+ MB resident) is imported only by camera pipelines
    from edge_agent.model.preprocess import ResizeMode

log = logging.getLogger(__name__)
limited = RateLimitedLog(log)

LATENCY_SAMPLES = 1000


@dataclass(frozen=True)
class ImageOptions:
    resize: ResizeMode = "stretch"
    draft: bool = True
    max_pixels: int = 40_000_000
    decoders: int = 2  # threads decoding ahead of the model


@dataclass
class DriftWatch:
    """A pipeline's drift monitor, fed one input in `every`."""

    monitor: DriftMonitor
    every: int = 10
    classes: int = 0  # the model's class count; 0: its output is not class scores
    seen: int = 0


class Tap(Protocol):
    """Sees every inference after its decision (sample capture, shadow, feedback);
    must be quick and must not raise."""

    def observed(
        self, item: Item, scores: np.ndarray, decision: Decision | None, model: ModelInfo
    ) -> None: ...


class PipelineStats:
    """Counters for the state payload, telemetry and the demo summary."""

    def __init__(self) -> None:
        self.inferences = 0
        self.input_errors = 0
        self.model_errors = 0
        self.events = 0
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)


class Pipeline:
    """`run` is the thread body; it returns when `stop` is set or the source ends."""

    def __init__(
        self,
        name: str,
        *,
        source: Source,
        model: Model,
        model_info: ModelInfo,
        policy: Policy,
        emitter: Emitter,
        image: ImageOptions | None = None,
        on_progress: Callable[[], None] | None = None,
        drift: DriftWatch | None = None,
    ) -> None:
        """`image` options make this a camera pipeline (frames are decoded for the model)."""
        self.name = name
        self.source = source
        self.policy = policy
        self.stats = PipelineStats()
        self.emitter = emitter
        self._image_options = image  # None for sensor pipelines
        self._on_progress = on_progress
        self._drift = drift
        self._since: float | None = None
        self.tap: Tap | None = None  # set by the composition root when the loop is on
        self._swap_lock = threading.Lock()
        self._install(model, model_info)

    def _install(self, model: Model, info: ModelInfo) -> None:
        image = None
        opts = self._image_options
        if opts is not None:
            from edge_agent.model.preprocess import ImagePreprocessor  # noqa: PLC0415

            image = ImagePreprocessor(
                model.inputs[0], resize=opts.resize, draft=opts.draft, max_pixels=opts.max_pixels
            )
        self.model, self.model_info, self._image = model, info, image

    def swap_model(self, model: Model, info: ModelInfo, policy: Policy | None = None) -> None:
        """Replace the model (and the policy, when new labels came with it) between
        two inferences; no input is dropped."""
        with self._swap_lock:
            self._install(model, info)
            if policy is not None:
                self.policy = policy
            if self._drift is not None:
                self._drift.monitor.reset()  # a new model: learn its reference again

    def run(self, stop: threading.Event) -> None:
        log.info(
            "pipeline %s: started (model %s %s)",
            self.name,
            self.model_info.name,
            self.model_info.version,
        )
        try:
            if self._image is None:
                self._run_in_turn(stop)
            else:
                self._run_decode_ahead(stop)
        finally:
            # The retained state should end with the final counters, not those
            # of the last event.
            self.publish_state()

    def _next_item(self) -> Item | None:
        """The next input; raises SourceExhausted at the end of a finite source."""
        item = self.source.read(timeout=0.5)
        if self._on_progress is not None:
            self._on_progress()  # the loop is alive, input or not (watchdog)
        return item

    def _run_in_turn(self, stop: threading.Event) -> None:
        """Sensors: windows are small, so read, infer, read... on this thread."""
        while not stop.is_set():
            try:
                item = self._next_item()
            except SourceExhausted:
                self._exhausted()
                return
            if item is not None:
                self.process(item)

    def _run_decode_ahead(self, stop: threading.Event) -> None:
        """Cameras: decoder threads read and decode the next frames while this one
        runs the current frame through the model (see decoding.py)."""
        assert self._image_options is not None
        ahead = DecodeAhead(
            self._next_item,
            self._prepared,
            workers=self._image_options.decoders,
            name=f"decode-{self.name}",
        )
        ahead.start(stop)
        try:
            while not stop.is_set():
                try:
                    ready = ahead.take(timeout=0.5)
                except queue.Empty:
                    continue
                if ready is END:
                    self._exhausted()
                    return
                self._infer(*ready)
        finally:
            ahead.join(timeout=5)

    def _exhausted(self) -> None:
        log.info("pipeline %s: source %s has no more input", self.name, self.source.name)

    def publish_state(self) -> None:
        self.emitter.state(self.state_payload())

    def process(self, item: Item) -> Decision | None:
        """One input through the model and the policy; bad inputs are counted and skipped."""
        tensor = self._prepared(item)
        return None if tensor is None else self._infer(item, tensor)

    def _prepared(self, item: Item) -> np.ndarray | None:
        try:
            return self._prepare(item)
        except InputError as exc:
            self.stats.input_errors += 1
            limited.warning(
                f"{self.name}-input", "%s: skipped input from %s: %s", self.name, item.origin, exc
            )
            return None

    def _infer(self, item: Item, tensor: np.ndarray) -> Decision | None:
        with self._swap_lock:
            try:
                start = time.perf_counter()
                outputs = self.model.infer(tensor)
                self.stats.latencies_ms.append((time.perf_counter() - start) * 1000.0)
                self.stats.inferences += 1
            except InputError as exc:
                self.stats.input_errors += 1
                limited.warning(
                    f"{self.name}-input",
                    "%s: input from %s does not fit: %s",
                    self.name,
                    item.origin,
                    exc,
                )
                return None
            except ModelError as exc:
                self.stats.model_errors += 1
                limited.error(f"{self.name}-model", "%s: %s", self.name, exc)
                return None
        watch = self._drift
        if watch is not None:
            watch.seen += 1
            if not watch.seen % watch.every:
                self._watch(watch, tensor, outputs[0], item.captured)
        try:
            decision = self.policy.decide(outputs[0], time.monotonic())
        except ValueError as exc:
            self.stats.model_errors += 1
            limited.error(f"{self.name}-policy", "%s: unusable model output: %s", self.name, exc)
            return None
        if decision is not None:
            self._publish(decision, item.captured)
        if self.tap is not None:
            self.tap.observed(item, outputs[0], decision, self.model_info)
        return decision

    @property
    def drift_status(self) -> dict[str, Any] | None:
        return None if self._drift is None else dict(self._drift.monitor.status)

    def _watch(
        self, watch: DriftWatch, tensor: np.ndarray, scores: np.ndarray, captured: float
    ) -> None:
        """Feed this input (one in `watch.every`) to the drift monitor; publish alerts."""
        kind: Literal["image", "sensor"] = "sensor" if self._image is None else "image"
        try:
            alert = watch.monitor.observe(
                input_features(tensor, kind), scores if watch.classes else None
            )
        except ValueError as exc:  # a shape the monitor was not built for
            limited.error(f"{self.name}-drift", "%s: drift monitor: %s", self.name, exc)
            return
        if alert is not None:
            log.warning(
                "%s: %s alert (%s %.3f, worst %s)",
                self.name,
                alert.state,
                alert.measure,
                alert.score,
                alert.worst,
            )
            self.emitter.alert(
                alert_payload(
                    device=self.emitter.device,
                    pipeline=self.name,
                    epoch=captured,
                    state=alert.state,
                    measure=alert.measure,
                    score=alert.score,
                    worst=alert.worst,
                    details=alert.details,
                    model=self.model_info,
                )
            )

    def _prepare(self, item: Item) -> np.ndarray:
        if isinstance(item, Frame):
            if self._image is None:
                raise InputError("this pipeline's model does not take images")
            return self._image.prepare(item.data)
        return item.values

    def _publish(self, decision: Decision, captured: float) -> None:
        if decision.reason == "change" or self._since is None:
            self._since = captured
        self.emitter.emit(decision, captured=captured, model=self.model_info)
        self.stats.events += 1
        log.info(
            "%s: %s -> %s (%.2f, %s)",
            self.name,
            decision.previous,
            decision.state,
            decision.score,
            decision.reason,
        )
        self.publish_state()

    def state_payload(self) -> dict[str, Any]:
        """The retained state: the current decision plus counters and bandwidth."""
        src = self.source.stats
        out = self.emitter.bytes_out
        return state_payload(
            device=self.emitter.device,
            pipeline=self.name,
            state=self.policy.state,
            since=self._since,
            model=self.model_info,
            counters={
                "inputs": src.read,
                "dropped": src.dropped,
                "errors": src.errors + self.stats.input_errors + self.stats.model_errors,
                "inferences": self.stats.inferences,
                "events": self.stats.events,
                "bytes_in": src.bytes_in,
                "bytes_out": out,
                "bandwidth_ratio": round(src.bytes_in / out, 1) if out else None,
            },
        )

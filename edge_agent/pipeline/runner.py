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
from edge_agent.pipeline.autosize import Sizing, Staffing, WorkerOptions
from edge_agent.pipeline.decode_ahead import END, DecodeAhead
from edge_agent.pipeline.drift import DriftMonitor, input_features
from edge_agent.pipeline.policy import Policy
from edge_agent.pipeline.workers import Crew
from edge_agent.sources.base import Frame, Item, Source, SourceExhausted
from edge_agent.util.logs import RateLimitedLog

if TYPE_CHECKING:  # Pillow (2+ MB resident) is imported only by camera pipelines
    from edge_agent.model.preprocess import ResizeMode

log = logging.getLogger(__name__)
limited = RateLimitedLog(log)

LATENCY_SAMPLES = 1000


@dataclass(frozen=True)
class ImageOptions:
    resize: ResizeMode | None = None  # None: the model family's (stretch for classifiers)
    draft: bool = True
    max_pixels: int = 40_000_000
    decoders: int = 2  # threads decoding ahead of the model
    # Interpreter workers (workers.py), sized at start when on auto (autosize.py);
    # None: one interpreter, on the pipeline's own thread.
    crew: WorkerOptions | None = None


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
        self._lock = threading.Lock()  # interpreter workers count from several threads

    def add(self, *, inferences: int = 0, input_errors: int = 0, model_errors: int = 0) -> None:
        with self._lock:
            self.inferences += inferences
            self.input_errors += input_errors
            self.model_errors += model_errors


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
        self._staffing: Staffing | None = None
        self._model: Model | None = None
        self._install(model, model_info)
        self._staffing = self._staff(model, image.crew if image is not None else None)
        if self._staffing is not None:
            self._model = None  # the workers hold the models: `model` is the first one's

    def _install(self, model: Model, info: ModelInfo) -> None:
        """Make `model` the one serving (subclasses build what reads its outputs here)."""
        image = None
        opts = self._image_options
        if opts is not None:
            from edge_agent.model.preprocess import ImagePreprocessor  # noqa: PLC0415

            image = ImagePreprocessor(
                model.inputs[0],
                resize=opts.resize or "stretch",
                draft=opts.draft,
                max_pixels=opts.max_pixels,
            )
        self._serve(model, info)
        self._image = image

    def _serve(self, model: Model, info: ModelInfo) -> None:
        """Record the model serving; with interpreter workers they hold it."""
        self._model = model if self._staffing is None else None
        self.model_info = info

    @property
    def model(self) -> Model:
        """The model serving (with interpreter workers, the first worker's)."""
        if self._staffing is not None:
            return self._staffing.crew.models[0]
        assert self._model is not None
        return self._model

    def _staff(self, model: Model, options: WorkerOptions | None) -> Staffing | None:
        if options is None:
            return None
        threads = options.threads or model.num_threads
        first = model if threads == model.num_threads else model.copy(threads)
        crew = Crew(
            self.name,
            [first, *(first.copy() for _ in range((options.workers or 1) - 1))],
            invoke=self._invoke,
            decide=self._conclude,
            failed=lambda: self.stats.add(model_errors=1),
        )
        return Staffing(crew, options, read=self._next_item, prepare=self._prepared)

    @property
    def crew(self) -> Crew | None:
        """The interpreter workers; None when the pipeline's own thread runs the model."""
        return None if self._staffing is None else self._staffing.crew

    @property
    def sizing(self) -> Sizing | None:
        """The interpreter workers' plan and the measurements behind it, once made."""
        return None if self._staffing is None else self._staffing.sizing

    def swap_model(self, model: Model, info: ModelInfo, policy: Policy | None = None) -> None:
        """Replace the model (and the policy, when new labels came with it) between
        two inferences; no input is dropped. With interpreter workers, every worker
        gets a copy of the new model."""

        def apply() -> None:
            with self._swap_lock:
                self._install(model, info)
                if policy is not None:
                    self.policy = policy
                if self._drift is not None:
                    self._drift.monitor.reset()  # a new model: learn its reference again

        if self._staffing is None:
            apply()
        else:
            self._staffing.crew.swap(model, apply)

    def run(self, stop: threading.Event) -> None:
        log.info(
            "pipeline %s: started (model %s %s)",
            self.name,
            self.model_info.name,
            self.model_info.version,
        )
        try:
            if self._image_options is None:
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
        if self._staffing is not None:
            if self._staffing.run(stop):
                self._exhausted()
            return
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

    def _prepared(self, item: Item) -> Any:
        try:
            return self._prepare(item)
        except InputError as exc:
            self.stats.add(input_errors=1)
            limited.warning(
                f"{self.name}-input", "%s: skipped input from %s: %s", self.name, item.origin, exc
            )
            return None

    def _infer(self, item: Item, prepared: Any) -> Decision | None:
        with self._swap_lock:
            outputs = self._invoke(self.model, item, prepared)
        return None if outputs is None else self._conclude(item, prepared, outputs)

    def _invoke(self, model: Model, item: Item, prepared: Any) -> list[np.ndarray] | None:
        return self._run_model(model, item, self._tensor(prepared))

    def _run_model(self, model: Model, item: Item, tensor: np.ndarray) -> list[np.ndarray] | None:
        """The model's outputs; None (counted, logged) when the input does not fit or
        the interpreter fails."""
        try:
            start = time.perf_counter()
            outputs = model.infer(tensor)
            self.stats.latencies_ms.append((time.perf_counter() - start) * 1000.0)
            self.stats.add(inferences=1)
            return outputs
        except InputError as exc:
            self.stats.add(input_errors=1)
            limited.warning(
                f"{self.name}-input",
                "%s: input from %s does not fit: %s",
                self.name,
                item.origin,
                exc,
            )
        except ModelError as exc:
            self.stats.add(model_errors=1)
            limited.error(f"{self.name}-model", "%s: %s", self.name, exc)
        return None

    def _conclude(self, item: Item, prepared: Any, outputs: list[np.ndarray]) -> Decision | None:
        """Drift watch, policy and publishing for one input, in input order."""
        watch = self._drift
        if watch is not None:
            watch.seen += 1
            if not watch.seen % watch.every:
                self._watch(watch, self._tensor(prepared), outputs[0], item.captured)
        try:
            decision = self._decide(outputs, prepared, time.monotonic())
        except (ValueError, ModelError) as exc:
            self.stats.add(model_errors=1)
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
        kind: Literal["image", "sensor"] = "sensor" if self._image_options is None else "image"
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

    # --- what subclasses for other model kinds (detection, audio) replace ----------

    def _prepare(self, item: Item) -> Any:
        """The model's input for `item` (decoder threads call it): a tensor here; a
        subclass may return what it needs to read the outputs too."""
        if isinstance(item, Frame):
            if self._image is None:
                raise InputError("this pipeline's model does not take images")
            return self._image.prepare(item.data)
        return item.values

    def _tensor(self, prepared: Any) -> np.ndarray:
        """The tensor inside what `_prepare` returned."""
        return np.asarray(prepared)

    def _decide(self, outputs: list[np.ndarray], prepared: Any, now: float) -> Decision | None:
        """The policy's verdict on one inference; ValueError or ModelError: unusable."""
        return self.policy.decide(outputs[0], now)

    def _state_extra(self) -> dict[str, Any] | None:
        """Kind-specific members of the retained state."""
        return None

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
            extra=self._state_extra(),
        )

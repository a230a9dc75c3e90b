"""Settings -> the feedback loop: sample capture (one writer thread, one store, an
optional uploader), shadow models and feedback accuracy, hooked into pipelines
through `Pipeline.tap` and `Emitter.on_event`. Nothing is built when all is off."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge_agent.app.supervision import Supervisor
from edge_agent.capture.feedback import AccuracyTracker, FeedbackOptions
from edge_agent.capture.rules import CaptureRules, RuleOptions
from edge_agent.capture.shadow import (
    ClassifierReader,
    ShadowOptions,
    ShadowReader,
    ShadowRunner,
    Top1,
)
from edge_agent.capture.store import SampleStore, StoreOptions
from edge_agent.capture.tap import Tap
from edge_agent.capture.upload import Uploader, UploadOptions
from edge_agent.capture.writer import CaptureWriter
from edge_agent.config import settings as cfg
from edge_agent.config.kinds import CAMERA_KINDS
from edge_agent.errors import ConfigError, ModelError
from edge_agent.model.labels import align_labels, read_labels
from edge_agent.model.runtime import Model
from edge_agent.mqtt.payloads import ModelInfo, encode, shadow_payload
from edge_agent.pipeline.runner import Pipeline
from edge_agent.sources.base import Frame, Item

if TYPE_CHECKING:
    from edge_agent.capture.shadow_detect import Counting, DetectionReader

log = logging.getLogger(__name__)

WRITER, UPLOADER, SHADOW = "samples-writer", "samples-upload", "shadow-"


class CommandSink(Protocol):
    """What the loop needs of the MQTT publisher: subscribe to a topic."""

    def on_command(self, topic: str, handler: Callable[[bytes], None]) -> None: ...


@dataclass
class Loop:
    writer: CaptureWriter | None = None
    uploader: Uploader | None = None
    taps: dict[str, Tap] = field(default_factory=dict)
    shadows: dict[str, ShadowRunner] = field(default_factory=dict)
    shadow_failures: dict[str, str] = field(default_factory=dict)

    def start(self, threads: Supervisor, stop: threading.Event) -> None:
        """The writer is watched (a dead writer is a bug worth a restart); the shadow
        threads and the uploader hold nothing to save, so they are daemons."""
        if self.writer is not None:
            threads.start(WRITER, self.writer.run, stop, stop=stop)
        if self.uploader is not None:
            threads.start(UPLOADER, self.uploader.run, stop, daemon=True)
        for name, shadow in self.shadows.items():
            threads.start(SHADOW + name, shadow.run, stop, daemon=True)

    def snapshot(self) -> dict[str, Any] | None:
        """Telemetry's `samples` entry: the store as a whole."""
        w = self.writer
        if w is None:
            return None
        counts = list(w.counts.values())
        return {
            "kept": len(w.store),
            "bytes": w.store.bytes,
            "queued": w.queued,
            "written": sum(c.kept for c in counts),
            "dropped": sum(c.dropped for c in counts),
            "failed": sum(c.failed for c in counts),
            "evicted": w.store.evicted,
            "uploaded": self.uploader.stats.uploaded if self.uploader else None,
            "upload_failures": self.uploader.stats.failures if self.uploader else None,
            "stopped": w.stopped,
        }


def is_detection(p: cfg.PipelineSettings) -> bool:
    return isinstance(p.policy, cfg.DetectionPolicySettings)


def build_loop(settings: cfg.Settings, pipelines: list[Pipeline], sink: CommandSink) -> Loop:
    loop = Loop()
    by_name = {p.name: p for p in settings.pipelines}
    if any(by_name[p.name].capture.enabled for p in pipelines):
        loop.writer = build_writer(settings)
        if settings.samples.upload is not None:
            loop.uploader = build_uploader(settings, loop.writer.store)
    for pipeline in pipelines:
        p = by_name[pipeline.name]
        if not (p.capture.enabled or p.shadow or p.feedback.enabled):
            continue
        tap = build_tap(settings, p, pipeline, loop)
        loop.taps[p.name] = tap
        pipeline.tap = tap
        pipeline.emitter.on_event = tap.on_event
        if tap.tracker is not None:
            sink.on_command(pipeline.emitter.topics.feedback(p.name), tap.on_feedback)
    return loop


def build_writer(settings: cfg.Settings) -> CaptureWriter:
    s = settings.samples
    directory = s.dir or settings.state_dir / "samples"
    options = StoreOptions(directory, int(s.quota_mb * (1 << 20)), s.max_age_days * 86_400.0)
    try:
        store = SampleStore(options)
    except OSError as exc:
        raise ConfigError(f"samples.dir: cannot use {directory}: {exc}") from exc
    return CaptureWriter(store, capacity=s.queue)


def build_uploader(settings: cfg.Settings, store: SampleStore) -> Uploader:
    u = settings.samples.upload
    assert u is not None
    options = UploadOptions(u.url, dict(u.headers), u.timeout, u.retry_min, u.retry_max, u.interval)
    return Uploader(store, options, device=settings.device_id)


def serving_labels(p: cfg.PipelineSettings, pipeline: Pipeline) -> list[str] | None:
    if not isinstance(p.policy, cfg.ClassificationPolicySettings):
        return None
    shape = pipeline.model.outputs[0].shape
    classes = int(shape[-1]) if shape else 1
    try:
        return align_labels(read_labels(p.labels) if p.labels else None, classes, str(p.labels))
    except ModelError as exc:
        log.error("%s: labels for sample capture: %s", p.name, exc)
        return None


def build_tap(
    settings: cfg.Settings, p: cfg.PipelineSettings, pipeline: Pipeline, loop: Loop
) -> Tap:
    c, f = p.capture, p.feedback
    rules = None
    if c.enabled:
        rules = CaptureRules(
            RuleOptions(c.below, c.on_drift, c.on_change, c.on_disagreement, c.every, c.per_hour)
        )
    tracker = None
    if f.enabled:
        window = max(f.window, f.min_labelled)
        tracker = AccuracyTracker(
            FeedbackOptions(f.remember, window, f.min_labelled, f.threshold, f.clear_threshold)
        )
    stats = pipeline.stats
    tap = Tap(
        p.name,
        settings.device_id,
        labels=serving_labels(p, pipeline),
        rules=rules,
        writer=loop.writer if c.enabled else None,
        tracker=tracker,
        ring=c.ring,
        drifting=lambda: (pipeline.drift_status or {}).get("state") == "drift",
        latency=lambda: stats.latencies_ms[-1] if stats.latencies_ms else 0.0,
        state=lambda: pipeline.policy.state,
        alert=pipeline.emitter.alert,
    )
    if p.shadow is not None:
        try:
            if is_detection(p):
                tap.verdict = serving_counts(p, pipeline)
            tap.shadow = build_shadow(settings, p, pipeline, tap)
            loop.shadows[p.name] = tap.shadow
        except (ModelError, ConfigError) as exc:
            loop.shadow_failures[p.name] = str(exc)
            tap.shadow_failure = str(exc)
            log.error("%s: shadow model dropped, the serving model carries on: %s", p.name, exc)
    return tap


def build_shadow(
    settings: cfg.Settings, p: cfg.PipelineSettings, pipeline: Pipeline, tap: Tap
) -> ShadowRunner:
    s = p.shadow
    assert s is not None
    # One interpreter thread: the shadow must leave the cores to the serving model.
    model = Model.load(s.model, runtime=settings.runtime.runtime, num_threads=1)
    reader: ShadowReader
    if is_detection(p):
        reader = detection_reader(model, p, pipeline)
    else:
        shape = model.outputs[0].shape
        labels = (
            align_labels(read_labels(s.labels), int(shape[-1]), str(s.labels)) if s.labels else None
        )
        reader = ClassifierReader(shadow_input(model, p), labels)
    info = ModelInfo(s.model.stem, s.version, model.sha256)
    emitter = pipeline.emitter

    def publish(report: dict[str, Any]) -> None:
        payload = shadow_payload(
            device=settings.device_id,
            pipeline=p.name,
            epoch=time.time(),
            serving=pipeline.model_info,
            shadow=info,
            report=report,
        )
        emitter.send(emitter.topics.shadow(p.name), encode(payload), qos=0)

    return ShadowRunner(
        model,
        reader=reader,
        options=ShadowOptions(s.every, s.queue, s.report_interval),
        publish=publish,
        on_disagree=tap.on_disagree,
        name=f"{p.name} shadow",
        info=info,
    )


def counting(p: cfg.PipelineSettings) -> Counting:
    from edge_agent.capture.shadow_detect import Counting  # noqa: PLC0415 - Pillow

    policy = p.policy
    assert isinstance(policy, cfg.DetectionPolicySettings)
    return Counting(policy.min_score, dict(policy.min_score_by_label))


def serving_counts(p: cfg.PipelineSettings, pipeline: Pipeline) -> Callable[[np.ndarray], Top1]:
    """The serving side of a detection shadow: the counts of the detections the
    pipeline just decoded (the tap runs right after the decision, on its thread)."""
    from edge_agent.capture.shadow_detect import count_verdict  # noqa: PLC0415 - Pillow
    from edge_agent.pipeline.detecting import DetectionPipeline  # noqa: PLC0415

    assert isinstance(pipeline, DetectionPipeline)
    rule = counting(p)
    return lambda _scores: count_verdict(pipeline.last_detections, rule)


def detection_reader(model: Model, p: cfg.PipelineSettings, pipeline: Pipeline) -> DetectionReader:
    """The shadow decodes with its own Detector (its layout, input size; its labels
    file, else the serving one's names) and the policy's decoding options; a model
    that is no detector is refused here (ModelError: the shadow is dropped)."""
    from edge_agent.capture.shadow_detect import DetectionReader  # noqa: PLC0415 - Pillow
    from edge_agent.model.detection.detector import Detector  # noqa: PLC0415
    from edge_agent.model.detection.labels import DetectionLabels  # noqa: PLC0415
    from edge_agent.pipeline.detecting import DetectionPipeline  # noqa: PLC0415

    assert isinstance(pipeline, DetectionPipeline)
    s = p.shadow
    assert s is not None
    detector = Detector(
        model,
        options=pipeline.detector.options,
        resize=p.image.resize,
        labels=DetectionLabels.read(s.labels) if s.labels else pipeline.detector.labels,
        draft=p.image.draft,
        max_pixels=p.image.max_pixels,
    )
    return DetectionReader(detector, counting(p))


def _values(item: Item) -> np.ndarray:
    if isinstance(item, Frame):
        raise ValueError("the shadow of a sensor pipeline takes windows")
    return np.asarray(item.values)


def shadow_input(model: Model, p: cfg.PipelineSettings) -> Callable[[Item], np.ndarray]:
    """The shadow's own preprocessing, from its own input tensor: it may take another
    size than the serving model, so frames are decoded again from the original bytes."""
    spec = model.inputs[0]
    if p.source.kind not in CAMERA_KINDS:
        return _values
    from edge_agent.model.preprocess import ImagePreprocessor  # noqa: PLC0415 - cameras only

    try:
        image = ImagePreprocessor(spec, resize=p.image.resize or "stretch", draft=p.image.draft)
    except ModelError as exc:
        raise ConfigError(f"pipelines.{p.name}.shadow: {exc}") from exc

    def prepare(item: Item) -> np.ndarray:
        if not isinstance(item, Frame):
            raise ValueError("the shadow of a camera pipeline takes frames")
        return image.prepare(item.data)

    return prepare

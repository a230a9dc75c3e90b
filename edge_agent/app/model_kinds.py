"""Settings -> the parts of detection and audio pipelines (wiring.py dispatches here).

Everything a pipeline's model kind needs beyond a classifier: the Detector that
wraps each detection model and the DetectionPolicy; the Listener (frontend,
model runner, wake-word rule) and the policies of audio pipelines. Problems are
ConfigErrors naming the key: `pipelines.NAME.model` for a model that is not what
the pipeline needs (an unrecognised detector layout names the model's outputs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.config import settings as cfg
from edge_agent.errors import ConfigError, ModelError
from edge_agent.model.runtime import Model
from edge_agent.pipeline.policy import ClassificationPolicy

if TYPE_CHECKING:
    from edge_agent.model.detection.decode import DecodeOptions
    from edge_agent.model.detection.detector import Detector
    from edge_agent.pipeline.audio.decisions import ClassifiedAudio, WakeWordDecisions
    from edge_agent.pipeline.audio.listener import Listener, ListenerOptions
    from edge_agent.pipeline.audio.policy import WakeWordOptions
    from edge_agent.pipeline.detection.policy import DetectionPolicy


def is_detection(p: cfg.PipelineSettings) -> bool:
    return p.policy.kind == "detection"


def is_audio(p: cfg.PipelineSettings) -> bool:
    return p.source.kind == "audio"


# --- detection ------------------------------------------------------------------------


def detector_maker(
    p: cfg.PipelineSettings, label_names: Sequence[str] | None = None
) -> Callable[[Model, DecodeOptions], Detector]:
    """Wraps each model the pipeline serves in a Detector that decodes as its policy
    says (`DetectionPolicy.decode`); `label_names` are the lines of the labels file
    in use (read, and decrypted if need be, by the caller)."""
    from edge_agent.model.detection.detector import Detector  # noqa: PLC0415 - Pillow
    from edge_agent.model.detection.labels import DetectionLabels  # noqa: PLC0415

    names = DetectionLabels(label_names)
    kind = None if p.model_kind == "auto" else p.model_kind

    def make(model: Model, options: DecodeOptions) -> Detector:
        return Detector(
            model,
            kind=kind,
            options=options,
            resize=p.image.resize,
            labels=names,
            draft=p.image.draft,
            max_pixels=p.image.max_pixels,
        )

    return make


def check_detector(
    p: cfg.PipelineSettings, model: Model, label_names: Sequence[str] | None = None
) -> None:
    """ConfigError unless the detection pipeline's model is a detector it can read."""
    try:
        detector_maker(p, label_names)(model, detection_policy(p).decode)
    except ModelError as exc:
        raise ConfigError(
            f"pipelines.{p.name}.model: policy.kind = 'detection' needs a detector: {exc}"
        ) from exc


def check_classifier(p: cfg.PipelineSettings, model: Model) -> None:
    """A detector under a classification or threshold policy would publish noise."""
    from edge_agent.model.detection.layouts import FAMILIES, model_kind  # noqa: PLC0415

    if p.model_kind != "auto" or is_audio(p):
        return
    kind = model_kind(model.inputs, model.outputs)
    if kind in FAMILIES:
        raise ConfigError(
            f"pipelines.{p.name}.policy: the model is a {kind} detector; use "
            "policy.kind = 'detection' (or set model_kind = 'classifier')"
        )


def detection_policy(p: cfg.PipelineSettings) -> DetectionPolicy:
    from edge_agent.config.zones import parse_lines, parse_zones  # noqa: PLC0415
    from edge_agent.pipeline.detection.policy import DetectionPolicy  # noqa: PLC0415

    pol = p.policy
    assert isinstance(pol, cfg.DetectionPolicySettings)
    try:
        return DetectionPolicy(
            labels=pol.labels,
            min_score=pol.min_score,
            min_score_by_label=pol.min_score_by_label,
            score_hysteresis=pol.score_hysteresis,
            min_area=pol.min_area,
            max_area=pol.max_area,
            zones=parse_zones(pol.zones),
            lines=parse_lines({name: line.model_dump() for name, line in pol.lines.items()}),
            debounce=pol.debounce,
            absent_frames=pol.absent_frames,
            absent_seconds=pol.absent_seconds,
            max_missed=pol.max_missed,
            min_iou=pol.min_iou,
            max_distance=pol.max_distance,
            count_events=pol.count_events,
            zone_events=pol.zone_events,
            heartbeat=pol.heartbeat,
            min_interval=pol.min_interval,
            max_objects=pol.max_objects,
            iou=pol.iou,
            max_detections=pol.max_detections,
        )
    except ValueError as exc:
        raise ConfigError(f"pipelines.{p.name}.policy: {exc}") from exc


# --- audio ----------------------------------------------------------------------------


def listener_options(settings: cfg.Settings, p: cfg.PipelineSettings) -> ListenerOptions:
    """The listener's options; a wake word's unset values come from its manifest, so
    a listener rebuilt around an update's bare .tflite keeps them."""
    from edge_agent.model.audio.frontend import FrontendOptions  # noqa: PLC0415
    from edge_agent.pipeline.audio.listener import ListenerOptions  # noqa: PLC0415

    a = p.audio or cfg.AudioSettings()
    pol = p.policy
    options = ListenerOptions(
        frontend=FrontendOptions(a.frontend, a.channels, a.lower_hz, a.upper_hz),
        hop=a.hop,
        runtime=settings.runtime.runtime,
        num_threads=settings.runtime.num_threads or 1,  # a tiny model: 1 thread is fastest
    )
    if isinstance(pol, cfg.WakeWordPolicySettings):
        wake = _wake_options(p, options)
        options = replace(
            options,
            word=wake.word,
            probability_cutoff=wake.probability_cutoff,
            sliding_window_size=wake.sliding_window_size,
            refractory=wake.refractory,
        )
    return options


def _wake_options(p: cfg.PipelineSettings, base: ListenerOptions) -> WakeWordOptions:
    from edge_agent.model.audio.streaming import WakeWordManifest  # noqa: PLC0415
    from edge_agent.pipeline.audio.listener import wake_options  # noqa: PLC0415

    pol = p.policy
    assert isinstance(pol, cfg.WakeWordPolicySettings)
    try:
        manifest = WakeWordManifest.read(p.model) if p.model.suffix.lower() == ".json" else None
    except ModelError as exc:  # like a model file that does not load: this pipeline only
        raise ModelError(f"pipelines.{p.name}.model: {exc}") from exc
    asked = replace(
        base,
        word=pol.word,
        probability_cutoff=pol.probability_cutoff,
        sliding_window_size=pol.sliding_window_size,
        refractory=pol.refractory,
    )
    try:
        return wake_options(manifest, manifest.model if manifest else p.model, asked)
    except ConfigError as exc:
        raise ConfigError(f"pipelines.{p.name}.policy: {exc}") from exc


def listener_for(settings: cfg.Settings, p: cfg.PipelineSettings, model: Path) -> Listener:
    """A listener for `model` (a microWakeWord .json manifest or a .tflite) that fits
    the pipeline's policy and source."""
    from edge_agent.pipeline.audio.listener import build_listener  # noqa: PLC0415

    options = listener_options(settings, p)
    try:
        listener = build_listener(model, options)
    except ModelError as exc:  # like a classifier that does not load: this pipeline only
        raise ModelError(f"pipelines.{p.name}.model: {exc}") from exc
    except ConfigError as exc:  # the frontend: its options, or pymicro-features missing
        raise ConfigError(f"pipelines.{p.name}.audio: {exc}") from exc
    wake = isinstance(p.policy, cfg.WakeWordPolicySettings)
    if wake != (listener.kind == "streaming"):
        want = "'wakeword'" if listener.kind == "streaming" else "'classification'"
        raise ConfigError(
            f"pipelines.{p.name}.policy: {model} is a {listener.kind} audio model; "
            f"it takes policy.kind = {want}"
        )
    source = p.source
    assert isinstance(source, cfg.AudioSourceSettings)
    if source.rate != listener.frontend.rate:
        raise ConfigError(
            f"pipelines.{p.name}.source.rate: the audio frontend takes "
            f"{listener.frontend.rate} Hz, not {source.rate}"
        )
    return listener


def wake_policy(p: cfg.PipelineSettings) -> WakeWordDecisions:
    """The wake-word rule (installed into the pipeline's listener) and its decisions."""
    from edge_agent.pipeline.audio.decisions import WakeWordDecisions  # noqa: PLC0415
    from edge_agent.pipeline.audio.listener import ListenerOptions  # noqa: PLC0415
    from edge_agent.pipeline.audio.policy import WakeWordPolicy  # noqa: PLC0415

    return WakeWordDecisions(WakeWordPolicy(_wake_options(p, ListenerOptions())))


def classified_audio(policy: ClassificationPolicy) -> ClassifiedAudio:
    from edge_agent.pipeline.audio.decisions import ClassifiedAudio  # noqa: PLC0415

    return ClassifiedAudio(policy)


def manifest_model(path: Path) -> Path:
    """The .tflite a microWakeWord manifest names; any other path as it is."""
    if path.suffix.lower() != ".json":
        return path
    from edge_agent.model.audio.streaming import WakeWordManifest  # noqa: PLC0415

    return WakeWordManifest.read(path).model


# --- Home Assistant -------------------------------------------------------------------


def discovery_configs(settings: cfg.Settings, sw_version: str) -> dict[str, bytes]:
    """The entities of detection pipelines (occupancy, counts, line counters) and of
    wake-word pipelines (an event entity), beside every pipeline's state entity."""
    common = {
        "device_id": settings.device_id,
        "prefix": settings.mqtt.prefix,
        "discovery_prefix": settings.homeassistant.discovery_prefix,
        "sw_version": sw_version,
    }
    configs: dict[str, bytes] = {}
    detecting = [p for p in settings.pipelines if is_detection(p)]
    if detecting:  # (imports Pillow: only where a detection pipeline needs it anyway)
        from edge_agent.pipeline.detection.ha import detection_discovery_configs, detection_spec  # noqa: PLC0415

        specs = [detection_spec(p.name, detection_policy(p)) for p in detecting]
        try:
            configs |= detection_discovery_configs(specs=specs, **common)
        except ValueError as exc:  # zone, label or line names that clash once sanitised
            raise ConfigError(f"homeassistant: {exc}") from exc
    words = [(p.name, _word(p)) for p in settings.pipelines if p.policy.kind == "wakeword"]
    if words:
        from edge_agent.pipeline.audio.ha import wakeword_discovery_configs  # noqa: PLC0415

        configs |= wakeword_discovery_configs(words=words, **common)
    return configs


def _word(p: cfg.PipelineSettings) -> str:
    """The wake word a pipeline listens for (a manifest that cannot be read: its stem;
    the pipeline itself reports why)."""
    from edge_agent.pipeline.audio.listener import ListenerOptions  # noqa: PLC0415

    try:
        return _wake_options(p, ListenerOptions()).word
    except (ConfigError, ModelError):
        return p.model.stem.replace("_", " ")

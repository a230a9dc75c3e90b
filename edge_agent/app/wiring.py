"""Settings -> components. The only place that knows both the settings models and
the constructors; components never see a settings object."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.app import model_kinds as kinds
from edge_agent.app.mqtt_wiring import topics_for
from edge_agent.app.source_wiring import build_source
from edge_agent.config import settings as cfg
from edge_agent.config.kinds import CAMERA_KINDS
from edge_agent.errors import ConfigError, EdgeAgentError, ModelError
from edge_agent.model.labels import align_labels, read_labels
from edge_agent.model.runtime import Model, default_threads
from edge_agent.model.sizing import SMALL_MODEL_BYTES, ThreadPlan, core_budget, plan_threads
from edge_agent.mqtt.emitter import Delivery, Emitter
from edge_agent.mqtt.outbox import NewEvent, Outbox
from edge_agent.mqtt.payloads import ModelInfo
from edge_agent.mqtt.sink import MessageSink
from edge_agent.pipeline.autosize import WorkerOptions
from edge_agent.pipeline.drift import DriftMonitor
from edge_agent.pipeline.policy import ClassificationPolicy, Policy, ThresholdPolicy
from edge_agent.pipeline.runner import DriftWatch, ImageOptions, Pipeline
from edge_agent.sources.base import Source
from edge_agent.update.protocols import Opener
from edge_agent.update.store import ModelStore

if TYPE_CHECKING:
    from edge_agent.pipeline.audio.listener import Listener
    from edge_agent.pipeline.listening import ListeningPipeline

log = logging.getLogger(__name__)

ENCRYPTED_SUFFIX = ".enc"  # `edge-agent model encrypt` writes MODEL.enc
MODEL_KEY = "pipelines.{}.model"


def thread_plan(settings: cfg.Settings, p: cfg.PipelineSettings, model: Path | bytes) -> ThreadPlan:
    """The threads a pipeline's model is loaded with, and its decoders. A camera
    pipeline on auto starts on one thread and one decoder and sizes itself from
    measurements (edge_agent/pipeline/autosize.py); a sensor pipeline's model is
    sized by its file size (sizing.py says why)."""
    if is_camera(p):
        return ThreadPlan(settings.runtime.num_threads or 1, p.image.decoders or 1)
    try:
        size = len(model) if isinstance(model, bytes) else model.stat().st_size
    except OSError:
        size = SMALL_MODEL_BYTES  # Model.load will say what is wrong with the file
    return plan_threads(
        default_threads(),
        camera=False,
        model_bytes=size,
        interpreter=settings.runtime.num_threads,
        decoders=p.image.decoders,
    )


def worker_options(settings: cfg.Settings, p: cfg.PipelineSettings) -> WorkerOptions | None:
    """A camera pipeline's interpreter workers; None when everything is configured
    and there is one worker (the pipeline's own thread runs the model). Camera
    pipelines split the board's cores between them."""
    rt, image = settings.runtime, p.image
    workers = image.workers or (1 if rt.delegate else 0)  # one accelerator, one interpreter
    if not is_camera(p) or (workers == 1 and rt.num_threads and image.decoders):
        return None
    cameras = sum(is_camera(q) for q in settings.pipelines)
    return WorkerOptions(
        workers=workers,
        threads=rt.num_threads,
        decoders=image.decoders,
        budget=core_budget(default_threads(), cameras),
    )


def is_camera(p: cfg.PipelineSettings) -> bool:
    return p.source.kind in CAMERA_KINDS


def needs_device_key(settings: cfg.Settings) -> bool:
    """Whether this agent may meet encrypted models: updates (a manifest may carry
    them), or a configured model or labels file named *.enc."""
    named = [f for p in settings.pipelines for f in (p.model, p.labels) if f is not None]
    return settings.update.enabled or any(f.name.endswith(ENCRYPTED_SUFFIX) for f in named)


def model_loader(
    settings: cfg.Settings, p: cfg.PipelineSettings, keys: Opener | None = None
) -> Callable[[Path | bytes], Model]:
    """Loads models for pipeline `p` (its configured one, then updates): a file,
    decrypted in memory by `keys` when it is encrypted, or a model's bytes."""
    rt = settings.runtime

    def load(source: Path | bytes) -> Model:
        label = f"{model_name(p)} (decrypted in memory)"
        if isinstance(source, Path):
            source = kinds.manifest_model(source)  # an audio pipeline's model may be a manifest
            label = str(source)
            if keys is not None:
                source = keys.model_bytes(source)
            elif source.name.endswith(ENCRYPTED_SUFFIX):
                raise ModelError(
                    f"{source}: an encrypted model, and no device key is configured "
                    "(`edge-agent keys init`, update.device_key)"
                )
        threads = thread_plan(settings, p, source).interpreter
        return Model.load(
            source, runtime=rt.runtime, num_threads=threads, delegate=rt.delegate, label=label
        )

    return load


def model_name(p: cfg.PipelineSettings) -> str:
    """The name that ties a pipeline to a model in the update manifest
    (`shapes` for shapes.tflite and for shapes.tflite.enc)."""
    return p.model_name or Path(p.model.name.removesuffix(ENCRYPTED_SUFFIX)).stem


def load_model(
    settings: cfg.Settings,
    p: cfg.PipelineSettings,
    store: ModelStore | None,
    keys: Opener | None = None,
) -> tuple[Model, ModelInfo, Path | None]:
    """The installed update if there is one (with its labels, if it brought any),
    else the configured model file; encrypted ones decrypted in memory by `keys`."""
    load = model_loader(settings, p, keys)
    installed = store.current(model_name(p)) if store else None
    if installed is not None:
        try:
            model = load(installed.path)
            info = ModelInfo(installed.name, installed.version, installed.sha256)
            return model, info, installed.labels
        except ModelError as exc:  # a store file damaged on disk: the configured model serves
            log.error("installed model %s unusable (%s); using %s", installed.path, exc, p.model)
    model = load(p.model)
    return model, ModelInfo(model_name(p), p.model_version, model.sha256), None


def build_outbox(settings: cfg.Settings) -> Outbox:
    o = settings.outbox
    try:
        return Outbox(
            settings.state_dir / "outbox.db",
            max_events=o.max_events,
            max_bytes=o.max_bytes,
            durability=o.durability,
        )
    except OSError as exc:
        raise ConfigError(f"state_dir: cannot use {settings.state_dir}: {exc}") from exc


def build_pipeline(
    settings: cfg.Settings,
    p: cfg.PipelineSettings,
    *,
    sink: MessageSink,
    outbox: Outbox,
    submit: Callable[[NewEvent], None],
    store: ModelStore | None = None,
    on_progress: Callable[[], None] | None = None,
    keys: Opener | None = None,
) -> Pipeline:
    """A ready pipeline; ModelError or ConfigError if its parts cannot be made.
    `on_progress` is called on every turn of its loop (the watchdog's heartbeat);
    `keys` open encrypted models and labels (in memory)."""
    emitter = build_emitter(settings, p, sink=sink, outbox=outbox, submit=submit)
    if kinds.is_audio(p):
        return build_listening(settings, p, emitter, store, on_progress)
    model, info, labels = load_model(settings, p, store, keys)
    decoders = thread_plan(settings, p, p.model).decoders
    image = (
        ImageOptions(
            p.image.resize,
            p.image.draft,
            p.image.max_pixels,
            decoders,
            crew=worker_options(settings, p),
        )
        if is_camera(p)
        else None
    )
    check_model(p, model, labels, keys)
    policy = build_policy(p, output_classes(model), labels, keys)
    source = _source(settings, p)
    parts: dict[str, Any] = {
        "source": source,
        "model": model,
        "model_info": info,
        "policy": policy,
        "emitter": emitter,
        "image": image,
        "on_progress": on_progress,
        "drift": build_drift(p.drift, model),
    }
    try:
        if kinds.is_detection(p):
            from edge_agent.pipeline.detecting import DetectionPipeline  # noqa: PLC0415 - Pillow

            names = detection_labels(p, labels, keys)
            return DetectionPipeline(p.name, make_detector=kinds.detector_maker(p, names), **parts)
        return Pipeline(p.name, **parts)
    except ModelError as exc:
        source.close()
        raise ConfigError(f"pipelines.{p.name}.source: {exc}") from exc


def build_emitter(
    settings: cfg.Settings,
    p: cfg.PipelineSettings,
    *,
    sink: MessageSink,
    outbox: Outbox,
    submit: Callable[[NewEvent], None],
) -> Emitter:
    return Emitter(
        p.name,
        topics=topics_for(settings),
        sink=sink,
        store=submit,
        reserve_seqs=outbox.reserve_seqs,
        delivery=Delivery(
            qos=settings.mqtt.qos if p.qos is None else p.qos,
            ttl=settings.outbox.ttl or None,
        ),
    )


def _source(settings: cfg.Settings, p: cfg.PipelineSettings) -> Source:
    try:
        return build_source(settings, p)
    except ValueError as exc:
        raise ConfigError(f"pipelines.{p.name}.source: {exc}") from exc


def check_model(
    p: cfg.PipelineSettings,
    model: Model,
    labels: Path | Sequence[str] | None = None,
    keys: Opener | None = None,
) -> None:
    """ConfigError unless the model takes what the source gives and gives what the
    pipeline's policy reads."""
    check_model_fits(p, model)
    if kinds.is_detection(p):
        kinds.check_detector(p, model, detection_labels(p, labels, keys))
    elif is_camera(p):  # only an image model can be a detector
        kinds.check_classifier(p, model)


def detection_labels(
    p: cfg.PipelineSettings, labels: Path | Sequence[str] | None, keys: Opener | None
) -> list[str] | None:
    try:
        return _label_names(p, labels, keys)[0]
    except ModelError as exc:
        raise ConfigError(f"pipelines.{p.name}.labels: {exc}") from exc


def check_pipeline(
    settings: cfg.Settings, p: cfg.PipelineSettings, keys: Opener | None = None
) -> None:
    """What `build_pipeline` checks of the model, its labels and the policy, without
    a source or a broker (`config check`); EdgeAgentError led by the key."""
    if kinds.is_audio(p):
        kinds.listener_for(settings, p, p.model)
        build_policy(p, 0)
        return
    try:
        model, _info, labels = load_model(settings, p, None, keys)
    except EdgeAgentError as exc:
        raise ConfigError(f"{MODEL_KEY.format(p.name)}: {exc}") from exc
    check_model(p, model, labels, keys)
    build_policy(p, output_classes(model), labels, keys)


def build_listening(
    settings: cfg.Settings,
    p: cfg.PipelineSettings,
    emitter: Emitter,
    store: ModelStore | None,
    on_progress: Callable[[], None] | None,
) -> ListeningPipeline:
    """An audio pipeline: its listener around the installed update, else the
    configured model (a .tflite or a microWakeWord .json manifest)."""
    from edge_agent.pipeline.listening import ListeningPipeline  # noqa: PLC0415

    installed = store.current(model_name(p)) if store else None
    listener = None
    if installed is not None:
        try:
            listener = kinds.listener_for(settings, p, installed.path)
            info = ModelInfo(installed.name, installed.version, installed.sha256)
        except ConfigError as exc:
            log.error("installed model %s unusable (%s); using %s", installed.path, exc, p.model)
    if listener is None:
        listener = kinds.listener_for(settings, p, p.model)
        info = ModelInfo(model_name(p), p.model_version, listener.model.sha256)
    policy = build_policy(p, output_classes(listener.model))

    def rebuild(model: Model) -> Listener:
        """A listener for a model swapped in: an update is read from where the store
        installed it (the model was loaded from its download, gone by now)."""
        current = store.current(model_name(p)) if store else None
        if current is not None and current.sha256 == model.sha256:
            return kinds.listener_for(settings, p, current.path)
        return kinds.listener_for(settings, p, Path(model.label))

    return ListeningPipeline(
        p.name,
        listener=listener,
        rebuild=rebuild,
        source=_source(settings, p),
        model_info=info,
        policy=policy,
        emitter=emitter,
        on_progress=on_progress,
    )


def check_model_fits(p: cfg.PipelineSettings, model: Model) -> None:
    """ConfigError unless the model takes what the pipeline's source gives: an image
    for a camera, a window of size x channels for a sensor. Otherwise the pipeline
    would start, then fail (or worse, decide) on every input."""
    spec = model.inputs[0]
    where = f"pipelines.{p.name}: model {model.label} takes {spec.name!r} of shape"
    if is_camera(p):
        from edge_agent.model.preprocess import ImageLayout  # noqa: PLC0415 - cameras only

        try:
            ImageLayout.of(spec)
        except ModelError:
            raise ConfigError(
                f"{where} {list(spec.shape)}, not an image ([1, height, width, 1 or 3]),"
                f" but its source ({p.source.kind}) gives images"
            ) from None
        return
    window = getattr(p.source, "window", None)  # every sensor source has one
    if not isinstance(window, cfg.WindowSettings):
        return
    if math.prod(spec.shape) != window.size * window.channels:
        raise ConfigError(
            f"{where} {list(spec.shape)}, which a window of {window.size}x{window.channels}"
            " (size x channels) does not fill; set source.window to the model's input"
        )


def output_classes(model: Model) -> int:
    return int(model.outputs[0].shape[-1]) if model.outputs[0].shape else 1


def build_policy(
    p: cfg.PipelineSettings,
    classes: int,
    labels: Path | Sequence[str] | None = None,
    keys: Opener | None = None,
) -> Policy:
    """The pipeline's policy; `labels` (a file, or the names themselves: an update's
    decrypted labels) replaces the configured labels file. `keys` read label files,
    decrypting encrypted ones in memory: no plaintext copy is written."""
    pol = p.policy
    if isinstance(pol, cfg.DetectionPolicySettings):
        return kinds.detection_policy(p)
    if isinstance(pol, cfg.WakeWordPolicySettings):
        return kinds.wake_policy(p)
    timing: dict[str, Any] = {
        "smoothing": pol.smoothing,
        "debounce": pol.debounce,
        "heartbeat": pol.heartbeat,
        "min_interval": pol.min_interval,
    }
    try:
        if isinstance(pol, cfg.ThresholdPolicySettings):
            return ThresholdPolicy(
                index=pol.index,
                on_threshold=pol.on_threshold,
                off_threshold=pol.off_threshold,
                on_state=pol.on_state,
                off_state=pol.off_state,
                **timing,
            )
        given, source = _label_names(p, labels, keys)
        names = align_labels(given, classes, source)
        policy = ClassificationPolicy(
            names,
            threshold=pol.threshold,
            off_threshold=pol.off_threshold,
            states=pol.states,
            default_state=pol.default_state,
            **timing,
        )
    except (ValueError, ModelError) as exc:
        raise ConfigError(f"pipelines.{p.name}.policy: {exc}") from exc
    return kinds.classified_audio(policy) if kinds.is_audio(p) else policy


def _label_names(
    p: cfg.PipelineSettings, labels: Path | Sequence[str] | None, keys: Opener | None
) -> tuple[list[str] | None, str]:
    """The label names and where they come from, for `align_labels`' messages."""
    if labels is not None and not isinstance(labels, Path):
        return list(labels), "the update's labels"
    path = labels or p.labels
    if path is None:
        return None, "None"
    return (keys.label_names(path) if keys is not None else read_labels(path)), str(path)


def rebuild_policy(
    p: cfg.PipelineSettings,
    pipeline: Pipeline,
    store: ModelStore | None,
    keys: Opener | None = None,
) -> Policy:
    """A running pipeline's policy from new settings, with the labels in use (an
    update's labels if one brought them)."""
    installed = store.current(model_name(p)) if store else None
    labels = installed.labels if installed is not None else None
    return build_policy(p, output_classes(pipeline.model), labels, keys)


def build_drift(d: cfg.DriftSettings, model: Model) -> DriftWatch | None:
    if not d.enabled:
        return None
    shape = model.outputs[0].shape
    classes = int(shape[-1]) if len(shape) == 2 and shape[0] == 1 and shape[-1] > 1 else 0
    monitor = DriftMonitor(
        reference_size=d.reference_size,
        window=d.window,
        check_every=d.check_every,
        threshold=d.threshold,
        clear_threshold=d.clear_threshold,
        confidence_drop=d.confidence_drop,
        classes=classes or None,
    )
    return DriftWatch(monitor, every=d.sample_every, classes=classes)

"""A `[[pipelines]]` entry: model, source, image, policy, drift, capture."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge_agent.config.base import Qos, Strict
from edge_agent.config.inputs import SourceSettings
from edge_agent.config.loop import CaptureSettings, FeedbackSettings, ShadowSettings
from edge_agent.config.policies import PolicySettings


class ImageSettings(Strict):
    resize: Literal["stretch", "crop", "letterbox"] | None = Field(
        None, description="default: letterbox for YOLO detectors, else stretch"
    )
    draft: bool = Field(True, description="JPEG reduced-scale decoding for large frames")
    max_pixels: int = Field(40_000_000, ge=1, le=1_000_000_000)
    decoders: int = Field(
        0,
        ge=0,
        le=8,
        description="threads decoding frames ahead of the model; 0 = auto: the cores the "
        "measured decode cost needs, at least 1",
    )
    workers: int = Field(
        0,
        ge=0,
        le=8,
        description="interpreter instances running consecutive frames (one model copy each); "
        "0 = auto: measured at start, more than 1 when the model does not speed up with "
        "threads and has more than a core's worth of work",
    )


class AudioSettings(Strict):
    """The `[pipelines.audio]` table: the frontend that turns samples into features."""

    frontend: Literal["micro", "logmel"] = Field(
        "micro", description="micro: TFLite Micro frontend (microWakeWord); logmel: plain numpy"
    )
    channels: int = Field(40, ge=1, le=256, description="logmel only: mel channels")
    lower_hz: float = Field(125.0, ge=0, le=96_000, description="lowest mel band edge")
    upper_hz: float = Field(7500.0, gt=0, le=96_000, description="highest mel band edge")
    hop: int = Field(
        1, ge=1, le=10_000, description="window models: 10 ms feature rows between two runs"
    )

    @model_validator(mode="after")
    def _band(self) -> AudioSettings:
        if self.lower_hz >= self.upper_hz:
            raise ValueError("lower_hz must be below upper_hz")
        return self


ModelKind = Literal["auto", "classifier", "ssd", "yolov8", "yolov5", "yolo-e2e"]
DETECTOR_KINDS = ("ssd", "yolov8", "yolov5", "yolo-e2e")


class DriftSettings(Strict):
    enabled: bool = True
    sample_every: int = Field(
        10, ge=1, le=1_000_000, description="feed one input in N to the monitor"
    )
    reference_size: int = Field(
        500, ge=10, le=1_000_000, description="inputs that form the reference"
    )
    window: int = Field(500, ge=10, le=1_000_000, description="recent inputs compared with it")
    check_every: int = Field(50, ge=1, le=1_000_000, description="inputs between two comparisons")
    threshold: float = Field(0.25, gt=0, le=100, description="PSI that raises an alert")
    clear_threshold: float = Field(0.1, gt=0, le=100, description="PSI under which it clears")
    confidence_drop: float = Field(0.2, gt=0, le=1, description="mean top-1 drop that alerts")

    @model_validator(mode="after")
    def _order(self) -> DriftSettings:
        if self.clear_threshold > self.threshold:
            raise ValueError("clear_threshold must not exceed threshold")
        return self


class PipelineSettings(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="used in MQTT topics")
    model: Path
    labels: Path | None = None
    model_name: str | None = Field(None, description="default: the model file's stem")
    model_version: str = "local"
    model_kind: ModelKind = Field(
        "auto", description="auto: recognised from the model's tensors; or name the family"
    )
    source: SourceSettings
    image: ImageSettings = ImageSettings()
    audio: AudioSettings | None = Field(None, description="audio sources: the frontend")
    policy: PolicySettings
    drift: DriftSettings = DriftSettings()
    qos: Qos | None = Field(None, description="default: mqtt.qos")
    capture: CaptureSettings = CaptureSettings()
    shadow: ShadowSettings | None = None
    feedback: FeedbackSettings = FeedbackSettings()

    @model_validator(mode="after")
    def _parts_fit(self) -> PipelineSettings:
        audio, kind = self.source.kind == "audio", self.policy.kind
        if kind == "wakeword" and not audio:
            raise ValueError("policy.kind = 'wakeword' needs an audio source")
        if audio and kind not in ("wakeword", "classification"):
            raise ValueError(
                f"an audio source takes policy.kind 'wakeword' or 'classification', not {kind!r}"
            )
        if self.audio is not None and not audio:
            raise ValueError("the [audio] table applies to audio sources only")
        if kind == "detection" and self.model_kind not in ("auto", *DETECTOR_KINDS):
            raise ValueError(f"policy.kind = 'detection' needs a detector, not {self.model_kind!r}")
        if self.model_kind in DETECTOR_KINDS and kind != "detection":
            raise ValueError(f"a {self.model_kind} detector needs policy.kind = 'detection'")
        return self

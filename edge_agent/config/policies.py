"""The `[pipelines.policy]` tables: one model per policy kind."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from edge_agent.config.base import DAY, Fraction, Strict
from edge_agent.config.zones import parse_lines, parse_zones


class DecisionTiming(Strict):
    smoothing: int = Field(1, ge=1, le=10_000, description="average over the last K results")
    debounce: int = Field(1, ge=1, le=10_000, description="results a new state must persist for")
    heartbeat: float = Field(
        0.0, ge=0, le=30 * DAY, description="re-publish the state every N s; 0 = off"
    )
    min_interval: float = Field(
        0.0, ge=0, le=DAY, description="seconds between two events at least"
    )


class ClassificationPolicySettings(DecisionTiming):
    kind: Literal["classification"]
    threshold: float = Field(0.5, ge=0, le=1)
    off_threshold: float | None = Field(None, ge=0, le=1)
    states: dict[str, str] | None = Field(None, description="label -> state; default: label")
    default_state: str = "none"


class ThresholdPolicySettings(DecisionTiming):
    kind: Literal["threshold"]
    index: int = Field(0, ge=0, le=1_000_000, description="which output value (or class score)")
    on_threshold: float = 0.5
    off_threshold: float | None = None
    on_state: str = "on"
    off_state: str = "off"


Point = tuple[Fraction, Fraction]


class LineSettings(Strict):
    """A counting line: two points; `in` is a crossing from left to right of A->B."""

    points: list[Point] = Field(min_length=2, max_length=2, description="[[x1, y1], [x2, y2]]")
    directions: tuple[str, str] = Field(("in", "out"), description="left->right, right->left")
    margin: float = Field(0.02, ge=0, lt=0.5, description="dead band around the line")


class DetectionPolicySettings(Strict):
    """Counts per (zone, label), zone entries/exits and line crossings
    (edge_agent/pipeline/detection/policy.py)."""

    kind: Literal["detection"]
    labels: list[str] | None = Field(None, min_length=1, description="default: every label")
    min_score: Fraction = 0.5
    min_score_by_label: dict[str, Fraction] = Field(default_factory=dict)
    score_hysteresis: Fraction = Field(0.0, description="a tracked object is kept this far below")
    min_area: Fraction = Field(0.0, description="fraction of the frame")
    max_area: Fraction = 1.0
    debounce: int = Field(2, ge=1, le=10_000, description="frames a higher count must hold")
    absent_frames: int = Field(5, ge=1, le=10_000, description="frames a lower count must hold")
    absent_seconds: float = Field(0.0, ge=0, le=DAY, description="and seconds")
    max_missed: int | None = Field(
        None, ge=0, le=10_000, description="frames a track coasts; default absent_frames - 1"
    )
    min_iou: float = Field(0.3, gt=0, le=1, description="tracker: overlap that continues a track")
    max_distance: float = Field(0.1, ge=0, le=1.5, description="tracker: else centre distance")
    count_events: bool = Field(True, description="false: only presence changes, not counts")
    zone_events: bool = True
    heartbeat: float = Field(0.0, ge=0, le=30 * DAY, description="seconds; 0 = off")
    min_interval: float = Field(0.0, ge=0, le=DAY, description="seconds between two events")
    max_objects: int = Field(10, ge=1, le=1000, description="objects listed in one event")
    zones: dict[str, list[Point]] = Field(
        default_factory=dict, description="name -> polygon [[x, y], ...], normalized"
    )
    lines: dict[str, LineSettings] = Field(default_factory=dict)
    iou: Fraction = Field(0.45, description="decoding: NMS overlap threshold (raw YOLO heads)")
    max_detections: int = Field(100, ge=1, le=10_000, description="decoding: per frame")

    @field_validator("zones")
    @classmethod
    def _zones(cls, zones: dict[str, list[Point]]) -> dict[str, list[Point]]:
        parse_zones(zones)  # ValueError naming the zone: a bow tie, no area, a bad name
        return zones

    @field_validator("lines")
    @classmethod
    def _lines(cls, lines: dict[str, LineSettings]) -> dict[str, LineSettings]:
        parse_lines({name: line.model_dump() for name, line in lines.items()})
        return lines

    @model_validator(mode="after")
    def _consistent(self) -> DetectionPolicySettings:
        if self.min_area > self.max_area:
            raise ValueError("min_area must not exceed max_area")
        unknown = sorted(set(self.min_score_by_label) - set(self.labels or self.min_score_by_label))
        if unknown:
            raise ValueError(f"min_score_by_label names labels not in labels: {unknown}")
        return self


class WakeWordPolicySettings(Strict):
    """microWakeWord's rule (mean of the last N probabilities >= cutoff), one event per
    utterance; unset values come from the model's JSON manifest."""

    kind: Literal["wakeword"]
    word: str | None = Field(None, min_length=1, description="default: the manifest's")
    probability_cutoff: float | None = Field(None, gt=0, le=1, description="default: manifest")
    sliding_window_size: int | None = Field(None, ge=1, le=1000, description="default: manifest")
    refractory: float = Field(
        2.0, ge=0, le=3600, description="seconds of audio after an event without another"
    )


PolicySettings = Annotated[
    ClassificationPolicySettings
    | ThresholdPolicySettings
    | DetectionPolicySettings
    | WakeWordPolicySettings,
    Field(discriminator="kind"),
]

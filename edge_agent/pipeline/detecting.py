"""A camera pipeline for object detectors: frames -> Detector -> DetectionPolicy -> MQTT.

The decoder threads run the detector's first half (decode the frame, fit it into
the input tensor, remember where it sits); the pipeline thread runs the model
and the second half (read the boxes, map them onto the frame, name them), then
feeds the detections to the policy. The retained state carries the policy's
counts and crossing totals as ``detection``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.errors import InputError
from edge_agent.model.detection.decode import DecodeOptions
from edge_agent.model.detection.detector import Detector
from edge_agent.model.detection.types import Detections
from edge_agent.model.preprocess import Placement
from edge_agent.model.runtime import Model
from edge_agent.mqtt.payloads import Decision, ModelInfo
from edge_agent.pipeline.policy import Policy
from edge_agent.pipeline.runner import Pipeline
from edge_agent.sources.base import Frame, Item


@dataclass(frozen=True)
class Prepared:
    """A frame ready for the detector: its tensor and where the frame sits in it."""

    tensor: np.ndarray
    placement: Placement


class DetectionPipeline(Pipeline):
    """A `Pipeline` whose model is a detector and whose policy a `DetectionPolicy`;
    `make_detector` wraps each model it serves (the configured one, then every
    update) to decode as the policy says, and may raise ModelError."""

    def __init__(
        self,
        name: str,
        *,
        make_detector: Callable[[Model, DecodeOptions], Detector],
        **parts: Any,
    ) -> None:
        self._make_detector = make_detector
        self.last_detections = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
        super().__init__(name, **parts)

    @property
    def policy(self) -> Policy:
        return self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        """A new policy (a reload) may decode differently: a lower score, another NMS
        overlap; the detector follows it."""
        self._policy = policy
        detector = getattr(self, "detector", None)
        if detector is not None and detector.options != self._decode_options():
            self.detector = self._make_detector(self.model, self._decode_options())

    def _decode_options(self) -> DecodeOptions:
        options = getattr(self._policy, "decode", None)
        return options if isinstance(options, DecodeOptions) else DecodeOptions()

    def _install(self, model: Model, info: ModelInfo) -> None:
        # First: a refused model changes nothing.
        detector = self._make_detector(model, self._decode_options())
        self._serve(model, info)
        self.detector = detector
        self._image = None  # the detector prepares the frames

    def _prepare(self, item: Item) -> Prepared:
        if not isinstance(item, Frame):
            raise InputError("a detection pipeline takes camera frames")
        return Prepared(*self.detector.prepare(item.data))

    def _tensor(self, prepared: Any) -> np.ndarray:
        tensor: np.ndarray = prepared.tensor
        return tensor

    def _decide(self, outputs: list[np.ndarray], prepared: Any, now: float) -> Decision | None:
        detections = self.detector.decode(outputs, prepared.placement)
        # For the tap (a shadow compares counts), which sees this input next, in
        # input order: decisions are made one at a time even with several workers.
        self.last_detections = detections
        return self.policy.decide(detections, now)

    def _state_extra(self) -> dict[str, Any] | None:
        snapshot = getattr(self.policy, "snapshot", None)
        return {"detection": snapshot()} if snapshot is not None else None

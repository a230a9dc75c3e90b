"""Detector outputs (dequantized arrays) -> detections, per family, in numpy.

Boxes come out as xmin, ymin, xmax, ymax normalized to the model's input
tensor, labelled with their class ids; `Detections.to_frame` maps them onto the
original frame and `Detections.named` names them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_agent.errors import ConfigError
from edge_agent.model.detection.geometry import center_to_corners, to_normalized
from edge_agent.model.detection.layouts import DetectionLayout, SsdRoles
from edge_agent.model.detection.nms import nms
from edge_agent.model.detection.types import Detections


@dataclass(frozen=True)
class DecodeOptions:
    """What counts as a detection: a minimum score, and the overlap (IoU) above
    which a raw head's weaker box of the same class is dropped."""

    min_score: float = 0.25
    iou: float = 0.45
    max_detections: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(f"min_score must lie in [0, 1], got {self.min_score}")
        if not 0.0 <= self.iou <= 1.0:
            raise ConfigError(f"iou must lie in [0, 1], got {self.iou}")
        if self.max_detections < 1:
            raise ConfigError(f"max_detections must be at least 1, got {self.max_detections}")


class Decoder:
    """`decode` is the verb: one frame's outputs -> detections on the input tensor."""

    def __init__(self, layout: DetectionLayout, options: DecodeOptions, source: str = "model"):
        self.layout = layout
        self.options = options
        self._roles = SsdRoles(layout.ssd, source) if layout.ssd else None

    def decode(self, outputs: Sequence[np.ndarray]) -> Detections:
        layout, options = self.layout, self.options
        if layout.ssd is not None and self._roles is not None:
            classes, scores = self._roles.resolve(outputs)
            ssd = layout.ssd
            return decode_ssd(
                outputs[ssd.boxes], outputs[classes], outputs[scores], outputs[ssd.count], options
            )
        head = outputs[layout.head][0]
        if layout.family == "yolov8":
            return decode_yolov8(head.T if layout.transposed else head, layout.input_size, options)
        if layout.family == "yolov5":
            return decode_yolov5(head, layout.input_size, options)
        return decode_end_to_end(head, layout.input_size, options)


def decode_ssd(
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    count: np.ndarray,
    options: DecodeOptions,
) -> Detections:
    """The post-processing op's outputs: boxes are ymin, xmin, ymax, xmax normalized,
    already suppressed; only the first `count` rows are detections."""
    flat_scores = scores.reshape(-1)
    n = int(np.clip(np.rint(count.reshape(-1)[0]), 0, flat_scores.size))
    keep = np.flatnonzero(flat_scores[:n] >= options.min_score)
    corners = boxes.reshape(-1, 4)[keep][:, [1, 0, 3, 2]]
    found = Detections.ranked(corners, flat_scores[keep], np.rint(classes.reshape(-1)[keep]))
    return found.first(options.max_detections)


def decode_yolov8(head: np.ndarray, size: tuple[int, int], options: DecodeOptions) -> Detections:
    """A [4+C, N] head: centre x, centre y, width, height, then C class scores."""
    class_scores = head[4:]
    best = class_scores.max(axis=0)
    keep = np.flatnonzero(best >= options.min_score)
    classes = class_scores[:, keep].argmax(axis=0)
    boxes = to_normalized(center_to_corners(head[:4, keep].T), size)
    return suppress(boxes, best[keep], classes, options)


def decode_yolov5(head: np.ndarray, size: tuple[int, int], options: DecodeOptions) -> Detections:
    """A [N, 5+C] head: centre x, centre y, width, height, objectness, C class
    scores; a box's confidence in a class is objectness x class score."""
    # The product never exceeds the objectness: filter on it first, multiply few rows.
    rows = head[head[:, 4] >= options.min_score]
    confidence = rows[:, 5:] * rows[:, 4:5]
    classes = confidence.argmax(axis=1)
    scores = confidence[np.arange(len(rows)), classes]
    keep = scores >= options.min_score
    boxes = to_normalized(center_to_corners(rows[keep, :4]), size)
    return suppress(boxes, scores[keep], classes[keep], options)


def decode_end_to_end(
    head: np.ndarray, size: tuple[int, int], options: DecodeOptions
) -> Detections:
    """A [N, 6] head already suppressed by the model: x1, y1, x2, y2, score, class."""
    rows = head[head[:, 4] >= options.min_score]
    found = Detections.ranked(to_normalized(rows[:, :4], size), rows[:, 4], np.rint(rows[:, 5]))
    return found.first(options.max_detections)


def suppress(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, options: DecodeOptions
) -> Detections:
    """Class-wise NMS, best first."""
    kept = nms(boxes, scores, classes, options.iou, options.max_detections)
    return Detections(boxes[kept], scores[kept], classes[kept])

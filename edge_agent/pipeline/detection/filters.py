"""Which detections count: label, score (global and per label, with hysteresis) and area."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from edge_agent.model.detection.types import Detections

_Mask = npt.NDArray[np.bool_]


def check_fraction(name: str, value: float) -> float:
    """A number in [0, 1] (a score or a fraction of the frame)."""
    if isinstance(value, bool) or not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


class DetectionFilter:
    """Keeps the detections worth counting.

    A detection is *strong* when its score reaches its label's ``min_score``;
    it is kept when it has a wanted label, an area (after clipping to the
    frame) within [``min_area``, ``max_area``] and a score at least
    ``min_score - score_hysteresis``. Only strong detections may start a
    track; a weaker kept one only continues one, so an object whose score
    wavers around the threshold is not lost and found again.
    """

    def __init__(
        self,
        *,
        labels: Sequence[str] | None = None,
        min_score: float = 0.5,
        min_score_by_label: Mapping[str, float] | None = None,
        score_hysteresis: float = 0.0,
        min_area: float = 0.0,
        max_area: float = 1.0,
    ) -> None:
        if labels is not None and (isinstance(labels, str) or not labels):
            raise ValueError(f"labels must be a non-empty list of labels, got {labels!r}")
        self.labels = None if labels is None else tuple(labels)
        self._min_score = check_fraction("min_score", min_score)
        self._by_label = {
            label: check_fraction(f"min_score_by_label[{label!r}]", value)
            for label, value in (min_score_by_label or {}).items()
        }
        unknown = sorted(set(self._by_label) - set(self.labels or self._by_label))
        if unknown:
            raise ValueError(f"min_score_by_label has labels not in labels: {unknown}")
        self._margin = check_fraction("score_hysteresis", score_hysteresis)
        self._min_area = check_fraction("min_area", min_area)
        self._max_area = check_fraction("max_area", max_area)
        if self._min_area > self._max_area:
            raise ValueError(f"min_area ({min_area}) must be <= max_area ({max_area})")

    @property
    def floor(self) -> float:
        """The lowest score a detection can be kept at (any label)."""
        lowest = min([self._min_score, *self._by_label.values()])
        return max(lowest - self._margin, 0.0)

    def apply(self, d: Detections) -> tuple[_Mask, _Mask]:
        """``(kept, strong)`` masks over ``d``."""
        boxes = np.clip(d.boxes, 0.0, 1.0)
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        area = width * height
        shaped = (width > 0) & (height > 0) & (area >= self._min_area) & (area <= self._max_area)
        wanted = np.array([self.labels is None or x in self.labels for x in d.labels], bool)
        need = np.array([self._by_label.get(x, self._min_score) for x in d.labels], np.float32)
        strong = d.scores >= need
        return shaped & wanted & (d.scores >= need - self._margin), strong

"""The shadow comparison for detectors. Two detectors agree on a frame when they
count the same number of objects of each label at or above the policy's
`min_score` (per label when the policy sets one): what a detection pipeline
publishes is counts, so that is what must not change when the candidate takes
over. Boxes are not matched: a candidate that moves a box a little but counts
the same would publish the same events. The confidence of a frame is its top
detection's score, 0 when there is none.

Each side decodes its own outputs: the serving pipeline with its Detector, the
shadow with a Detector built from the shadow model (its own layout, input size
and labels), both with the policy's decoding options.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from edge_agent.capture.shadow import Top1
from edge_agent.model.detection.detector import Detector
from edge_agent.model.detection.types import Detections
from edge_agent.model.preprocess import Placement
from edge_agent.sources.base import Frame, Item

NOTHING = "-"  # the verdict of a frame without a counted object


@dataclass(frozen=True)
class Counting:
    """Which detections count: the detection policy's score thresholds."""

    min_score: float = 0.5
    by_label: Mapping[str, float] = field(default_factory=dict)

    def threshold(self, label: str) -> float:
        return self.by_label.get(label, self.min_score)


def count_verdict(detections: Detections, counting: Counting) -> Top1:
    """`label` names the counts ("circle:2,square:1", sorted; "-" for none), so two
    verdicts are equal exactly when every label's count is; `score` is the top
    detection's score."""
    counts = Counter(
        label
        for label, score in zip(detections.labels, detections.scores.tolist(), strict=True)
        if score >= counting.threshold(label)
    )
    text = ",".join(f"{label}:{n}" for label, n in sorted(counts.items())) or NOTHING
    top = float(np.max(detections.scores)) if len(detections) else 0.0
    return Top1(text, top)


class DetectionReader:
    """A `ShadowReader` for a detection model: frames in, counts out."""

    def __init__(self, detector: Detector, counting: Counting) -> None:
        self.detector = detector
        self.counting = counting

    def prepare(self, item: Item) -> tuple[np.ndarray, Placement]:
        if not isinstance(item, Frame):
            raise ValueError("the shadow of a detection pipeline takes frames")
        return self.detector.prepare(item.data)

    def verdict(self, outputs: list[np.ndarray], context: Placement) -> Top1:
        return count_verdict(self.detector.decode(outputs, context), self.counting)

"""One frame's detections as arrays: what a detector decodes and the decision side reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_agent.model.detection.geometry import to_frame
from edge_agent.model.detection.labels import DetectionLabels
from edge_agent.model.preprocess import Placement


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous: compare fields explicitly
class Detections:
    """One frame's detections, one row per object.

    ``boxes`` are ``[xmin, ymin, xmax, ymax]`` normalized (0-1) to the model's
    input tensor as decoded, to the original frame after ``to_frame`` (decoders
    may leave values slightly outside, consumers clip). ``labels`` default to
    the class ids as text; ``named`` gives them their names. The arrays are
    converted to float32 / float32 / int64 and checked on construction: a
    ValueError names the field that does not fit.
    """

    boxes: np.ndarray
    """float32 ``[K, 4]``."""
    scores: np.ndarray
    """float32 ``[K]``."""
    classes: np.ndarray
    """int64 ``[K]``: the class index in the label file."""
    labels: tuple[str, ...] = ()
    """The class name of each detection (``len == K``); empty: the class ids as text."""

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        classes = np.asarray(self.classes).reshape(-1)
        count = scores.shape[0]
        if boxes.ndim != 2 or boxes.shape != (count, 4):
            raise ValueError(f"boxes must have shape [{count}, 4], got {list(boxes.shape)}")
        if classes.shape != (count,) or (count and not np.issubdtype(classes.dtype, np.integer)):
            raise ValueError(
                f"classes must be {count} integers, got {classes.dtype} {classes.shape}"
            )
        labels = tuple(self.labels) or tuple(str(c) for c in classes)
        if len(labels) != count:
            raise ValueError(f"labels must name each of the {count} detections, got {len(labels)}")
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise ValueError("boxes or scores contain NaN or infinity")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "classes", classes.astype(np.int64))
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        """A frame with nothing detected."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def ranked(cls, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> Detections:
        """Best score first (a stable sort: equal scores keep their order)."""
        order = np.argsort(-np.asarray(scores), kind="stable")
        return cls(boxes[order], scores[order], np.rint(classes[order]).astype(np.int64))

    def select(self, keep: np.ndarray) -> Detections:
        """The detections where the boolean mask ``keep`` is true, in order."""
        return self.take(np.flatnonzero(keep))

    def take(self, indexes: np.ndarray) -> Detections:
        """The detections at ``indexes``, in that order."""
        return Detections(
            self.boxes[indexes],
            self.scores[indexes],
            self.classes[indexes],
            tuple(self.labels[i] for i in indexes),
        )

    def first(self, n: int) -> Detections:
        return self.take(np.arange(min(n, len(self))))

    def named(self, names: DetectionLabels) -> Detections:
        """The same detections with each class id's name from a label file."""
        labels = tuple(names.name(int(c)) for c in self.classes)
        return Detections(self.boxes, self.scores, self.classes, labels)

    def to_frame(self, placement: Placement, size: tuple[int, int]) -> Detections:
        """Boxes on the original frame; a box left empty by clipping (it lay in the
        letterbox bands) is dropped."""
        boxes = to_frame(self.boxes, placement, size)
        kept = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        moved = Detections(boxes, self.scores, self.classes, self.labels)
        return moved.select(kept)

    def records(self, digits: int = 4) -> list[dict[str, object]]:
        """One JSON-ready dict per detection: label, class, score, box."""
        return [
            {
                "label": label,
                "class": int(c),
                "score": round(float(s), digits),
                "box": [round(float(v), digits) for v in box],
            }
            for box, s, c, label in zip(
                self.boxes, self.scores, self.classes, self.labels, strict=True
            )
        ]

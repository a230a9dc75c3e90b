"""What a detector hands to the decision side: one frame's objects as arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous: compare fields explicitly
class Detections:
    """One frame's detections, one row per object, sorted or not.

    ``boxes`` are ``[xmin, ymin, xmax, ymax]`` normalized to the original frame
    (0-1; decoders may leave values slightly outside, consumers clip). The
    arrays are converted to float32 / float32 / int64 and checked on
    construction: a ValueError names the field that does not fit.
    """

    boxes: np.ndarray
    """float32 ``[K, 4]``."""
    scores: np.ndarray
    """float32 ``[K]``."""
    classes: np.ndarray
    """int64 ``[K]``: the class index in the label file."""
    labels: tuple[str, ...] = field(default=())
    """The class name of each detection (``len == K``)."""

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
        if len(self.labels) != count:
            raise ValueError(
                f"labels must name each of the {count} detections, got {len(self.labels)}"
            )
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise ValueError("boxes or scores contain NaN or infinity")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "classes", classes.astype(np.int64))
        object.__setattr__(self, "labels", tuple(self.labels))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        """A frame with nothing detected."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def select(self, keep: np.ndarray) -> Detections:
        """The detections where the boolean mask ``keep`` is true, in order."""
        indexes = np.flatnonzero(keep)
        return Detections(
            self.boxes[indexes],
            self.scores[indexes],
            self.classes[indexes],
            tuple(self.labels[i] for i in indexes),
        )

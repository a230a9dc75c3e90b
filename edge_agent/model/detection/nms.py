"""Class-wise non-maximum suppression over numpy arrays."""

from __future__ import annotations

import numpy as np


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box [4] with each of boxes [K, 4] (x1, y1, x2, y2)."""
    width = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    height = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.clip(width, 0.0, None) * np.clip(height, 0.0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0.0, inter / np.where(union > 0.0, union, 1.0), 0.0)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou_threshold: float,
    max_keep: int,
) -> np.ndarray:
    """Indices of the boxes kept, best score first: a box is dropped when it overlaps
    a better box of the same class by more than `iou_threshold`.

    Boxes of different classes never suppress each other: each class is shifted to
    its own region of the plane, so one greedy pass serves every class at once."""
    if len(scores) == 0:
        return np.zeros(0, dtype=np.intp)
    span = float(np.max(np.abs(boxes))) * 2.0 + 1.0
    shifted = boxes + (classes.astype(np.float64) * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    if order.size <= MATRIX_MAX:
        kept: np.ndarray = order[_greedy(pairwise_iou(shifted[order]) > iou_threshold, max_keep)]
        return kept
    keep: list[int] = []
    # One numpy pass per kept box: the loop runs at most `max_keep` times.
    while order.size and len(keep) < max_keep:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        order = rest[iou(shifted[best], shifted[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


MATRIX_MAX = 1500
"""Candidates up to which the IoU of every pair is computed at once (18 MB of float64
at most): the usual case after the score filter, and ~5x faster than a pass per box."""


def pairwise_iou(boxes: np.ndarray) -> np.ndarray:
    """[K, K] intersection over union of every pair of boxes [K, 4] (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    width = np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :])
    height = np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :])
    inter = np.clip(width, 0.0, None) * np.clip(height, 0.0, None)
    areas = (x2 - x1) * (y2 - y1)
    union = areas[:, None] + areas[None, :] - inter
    return np.where(union > 0.0, inter / np.where(union > 0.0, union, 1.0), 0.0)


def _greedy(overlaps: np.ndarray, max_keep: int) -> np.ndarray:
    """Positions kept by greedy suppression, given which pairs overlap too much
    (rows in score order)."""
    alive = np.ones(len(overlaps), dtype=bool)
    keep: list[int] = []
    for i in range(len(overlaps)):
        if alive[i]:
            keep.append(i)
            if len(keep) == max_keep:
                break
            alive &= ~overlaps[i]
    return np.asarray(keep, dtype=np.intp)

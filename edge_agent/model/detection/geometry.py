"""Which resize a detector family wants, and boxes from tensor to frame coordinates."""

from __future__ import annotations

import numpy as np

from edge_agent.model.preprocess import Placement, ResizeMode

# YOLO models are trained on letterboxed frames: stretched, a detection can vanish.
# The SSD starter models were trained on frames stretched to their square input.
DEFAULT_RESIZE: dict[str, ResizeMode] = {
    "ssd": "stretch",
    "yolov8": "letterbox",
    "yolov5": "letterbox",
    "yolo-e2e": "letterbox",
}


def default_resize(family: str) -> ResizeMode:
    return DEFAULT_RESIZE.get(family, "stretch")


def to_frame(boxes: np.ndarray, placement: Placement, size: tuple[int, int]) -> np.ndarray:
    """Boxes [K, 4] (xmin, ymin, xmax, ymax) normalized to a tensor of `size` (width,
    height), normalized to the frame that `placement` put in it, clipped to it."""
    width, height = size
    scale = np.array([width / placement.width, height / placement.height] * 2, dtype=np.float32)
    offset = np.array(
        [placement.left / placement.width, placement.top / placement.height] * 2,
        dtype=np.float32,
    )
    mapped = boxes.astype(np.float32) * scale - offset
    return np.asarray(np.clip(mapped, 0.0, 1.0))


def to_normalized(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boxes in input pixels, or already normalized: an export may give either. A
    coordinate above 1.5 cannot be normalized (boxes overhang the frame only a little)."""
    if boxes.size and float(np.max(boxes)) > 1.5:
        width, height = size
        return boxes / np.array([width, height, width, height], dtype=np.float32)
    return boxes


def center_to_corners(xywh: np.ndarray) -> np.ndarray:
    """[K, 4] centre x, centre y, width, height -> xmin, ymin, xmax, ymax."""
    half = xywh[:, 2:4] / 2.0
    return np.concatenate([xywh[:, 0:2] - half, xywh[:, 0:2] + half], axis=1)

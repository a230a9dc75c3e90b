"""Which detector family a model is, recognised from its tensors, never from their order.

SSD exports with `TFLite_Detection_PostProcess` list their four outputs in an
order that depends on the exporter, and two of them (classes and scores) have
the same shape: those two are told apart by name when the names say it, else by
their values on the first frame with detections. Raw YOLO heads are told apart
by shape, using the anchor count their input size implies.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np

from edge_agent.errors import ModelError
from edge_agent.model.preprocess import ImageLayout
from edge_agent.model.runtime import TensorSpec

log = logging.getLogger(__name__)

Family = Literal["ssd", "yolov8", "yolov5", "yolo-e2e"]
FAMILIES: tuple[str, ...] = get_args(Family)
KINDS: tuple[str, ...] = ("classifier", *FAMILIES)
STRIDES = (8, 16, 32)  # the P3-P5 heads every YOLOv5/v8/11 detector has


@dataclass(frozen=True)
class SsdOutputs:
    """Positions of an SSD's outputs; `pair` holds classes and scores in some order."""

    boxes: int
    count: int
    pair: tuple[int, int]
    named: tuple[int, int] | None  # (classes, scores), when the names say which


@dataclass(frozen=True)
class DetectionLayout:
    """How to read a detector's outputs."""

    family: Family
    input_size: tuple[int, int]  # width, height
    classes: int = 0  # the class count, 0 when the outputs do not tell
    head: int = 0  # the position of a YOLO head among the outputs
    transposed: bool = False  # a YOLOv8 head exported as [1, N, 4+C]
    ssd: SsdOutputs | None = None


def recognise(
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    kind: str | None = None,
    classes: int | None = None,
    source: str = "model",
) -> DetectionLayout:
    """The detector layout of a model; `kind` (one of FAMILIES) overrides the guess.
    `ModelError` naming the outputs when they fit no family (or not the named one)."""
    if kind is not None and kind not in FAMILIES:
        raise ModelError(
            f"{source}: kind {kind!r} is not a detector; choose from {', '.join(FAMILIES)}"
        )
    size = _input_size(inputs, source)
    layout = _ssd(outputs, size) if kind in (None, "ssd") else None
    if layout is None and kind != "ssd" and len(outputs) == 1:
        layout = _yolo(outputs[0].shape, size, kind)
    if layout is None:
        wanted = f"{kind} " if kind else ""
        raise ModelError(
            f"{source}: unrecognised {wanted}detection outputs: {describe(outputs)} "
            "(expected SSD boxes [1,N,4] + classes [1,N] + scores [1,N] + count [1], "
            "YOLOv8 [1,4+C,N], YOLOv5 [1,N,5+C] or end-to-end [1,N,6])"
        )
    if classes and not layout.classes:
        layout = replace(layout, classes=classes)
    return layout


def model_kind(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str:
    """What `inspect` calls the model: "classifier", a detector family, or "other"."""
    if len(outputs) == 1 and len(outputs[0].shape) == 2 and outputs[0].shape[0] == 1:
        return "classifier" if outputs[0].shape[1] > 1 else "other"
    try:
        return recognise(inputs, outputs).family
    except ModelError:
        return "other"


def looks_like_detector(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
    """An image model whose outputs have a detector's shape: one [1, A, B] head, or
    several outputs among which a [1, N, 4] box tensor. Such a model is decoded as
    detections, or refused; anything else is shown as raw numbers."""
    if not inputs or _image(inputs[0]) is None:
        return False
    if len(outputs) == 1:
        return len(outputs[0].shape) == 3 and outputs[0].shape[0] == 1
    return any(len(s.shape) == 3 and s.shape[0] == 1 and s.shape[2] == 4 for s in outputs)


def describe(specs: Sequence[TensorSpec]) -> str:
    return ", ".join(f"{s.name!r} [{','.join(map(str, s.shape))}] {s.dtype.name}" for s in specs)


def anchors(size: tuple[int, int]) -> int:
    """Anchor points of an anchor-free YOLO head (v8/11) at this input size; YOLOv5
    has three anchors per point."""
    width, height = size
    return sum(math.ceil(width / s) * math.ceil(height / s) for s in STRIDES)


def _image(spec: TensorSpec) -> ImageLayout | None:
    try:
        return ImageLayout.of(spec)
    except ModelError:
        return None


def _input_size(inputs: Sequence[TensorSpec], source: str) -> tuple[int, int]:
    image = _image(inputs[0]) if len(inputs) == 1 else None
    if image is None:
        shapes = describe(inputs)
        raise ModelError(f"{source}: a detector takes one image input; this one takes {shapes}")
    return image.width, image.height


def _ssd(outputs: Sequence[TensorSpec], size: tuple[int, int]) -> DetectionLayout | None:
    if len(outputs) != 4:
        return None
    shapes = [s.shape for s in outputs]
    boxes = [i for i, s in enumerate(shapes) if len(s) == 3 and s[0] == 1 and s[2] == 4]
    count = [i for i, s in enumerate(shapes) if s in ((1,), ())]
    vectors = [i for i, s in enumerate(shapes) if len(s) == 2 and s[0] == 1]
    if len(boxes) != 1 or len(count) != 1 or len(vectors) != 2:
        return None
    n = shapes[boxes[0]][1]
    if any(shapes[i][1] != n for i in vectors):
        return None
    pair = (vectors[0], vectors[1])
    named = _named_roles(outputs[pair[0]].name, outputs[pair[1]].name, pair)
    return DetectionLayout("ssd", size, ssd=SsdOutputs(boxes[0], count[0], pair, named))


def _named_roles(first: str, second: str, pair: tuple[int, int]) -> tuple[int, int] | None:
    """(classes, scores) when the names say which is which: `...class...` and
    `...score...` from signatures, or the post-processing op's own output numbers
    (its outputs are boxes, classes, scores, count, as :0 to :3)."""
    for a, b, order in ((first, second, pair), (second, first, pair[::-1])):
        if "class" in a.lower() and "score" in b.lower():
            return order
        if a.endswith("TFLite_Detection_PostProcess:1") and b.endswith(
            "TFLite_Detection_PostProcess:2"
        ):
            return order
    return None


def _yolo(
    shape: tuple[int, ...], size: tuple[int, int], kind: str | None
) -> DetectionLayout | None:
    if len(shape) != 3 or shape[0] != 1:
        return None
    for family, classes, transposed in _candidates(shape[1], shape[2], anchors(size)):
        if kind in (None, family):
            return DetectionLayout(family, size, classes, transposed=transposed)  # type: ignore[arg-type]
    return None


def _candidates(a: int, b: int, points: int) -> list[tuple[str, int, bool]]:
    """Families a [1, a, b] head could be, most convincing first: an anchor count
    that matches the input size, then the usual shapes (more boxes than values)."""
    found: list[tuple[str, int, bool]] = []
    if b == points and a >= 5:
        found.append(("yolov8", a - 4, False))
    if a == points and b >= 5:
        found.append(("yolov8", b - 4, True))
    if a == 3 * points and b >= 6:
        found.append(("yolov5", b - 5, False))
    if b == 6:
        found.append(("yolo-e2e", 0, False))
    if a < b and a >= 5:
        found.append(("yolov8", a - 4, False))
    if a > b >= 6:
        found.append(("yolov5", b - 5, False))
    if a > b >= 5:
        found.append(("yolov8", b - 4, True))
    return found


class SsdRoles:
    """Which of an SSD's two [1, N] outputs holds classes and which scores: from the
    names if they say, else from the values of the first frame with a detection
    (class ids are whole numbers, scores lie in [0, 1]), then kept."""

    def __init__(self, ssd: SsdOutputs, source: str = "model") -> None:
        self._pair = ssd.pair
        self._count = ssd.count
        self._known = ssd.named
        self._source = source

    def resolve(self, arrays: Sequence[np.ndarray]) -> tuple[int, int]:
        """(classes, scores) positions among the outputs `arrays`."""
        if self._known is not None:
            return self._known
        first, second = self._pair
        n = int(np.clip(np.rint(arrays[self._count].reshape(-1)[0]), 0, arrays[first].size))
        a, b = arrays[first].reshape(-1)[:n], arrays[second].reshape(-1)[:n]
        first_is_classes = _looks_like_classes(a) or _looks_like_scores(b)
        second_is_classes = _looks_like_classes(b) or _looks_like_scores(a)
        if first_is_classes == second_is_classes:
            return self._pair  # no evidence yet (no detection): this frame only
        self._known = self._pair if first_is_classes else (second, first)
        log.info("%s: SSD classes are output %d, scores output %d", self._source, *self._known)
        return self._known


def _whole(values: np.ndarray) -> bool:
    return bool(np.all(values == np.rint(values)))


def _looks_like_classes(values: np.ndarray) -> bool:
    return values.size > 0 and _whole(values) and float(values.max()) > 1.0


def _looks_like_scores(values: np.ndarray) -> bool:
    in_range = values.size > 0 and float(values.min()) >= 0.0 and float(values.max()) <= 1.0
    return in_range and not _whole(values)

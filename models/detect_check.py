"""Reference check of the shapes detectors: a small pure-numpy decoder, NMS and scoring.

This is validation code for models/build_detector.py, not part of edge_agent. It needs
only numpy, Pillow and a TFLite interpreter (tf.lite, ai_edge_litert or tflite_runtime),
so the committed models can be re-checked without TensorFlow:

    .venv/bin/python models/detect_check.py

Everything about a model's tensors (input size, dtype, scale, zero point, output layout)
is read from the model itself. Frames are letterboxed (pad 114) into the input, the input
is quantized from pixel / 255 with the model's own scale and zero point, and boxes are
mapped back to the original frame, normalized 0-1.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

MODELS_DIR = Path(__file__).resolve().parent
DETECTORS = ("shapes_yolov8_int8.tflite", "shapes_yolov5_int8.tflite", "shapes_e2e_int8.tflite")
LABELS_FILE = "shapes_detect_labels.txt"
DEMO_DIR = MODELS_DIR / "detect_demo"
PAD_VALUE = 114
MIN_SCORE, NMS_IOU, MATCH_IOU = 0.25, 0.45, 0.5


@dataclass(frozen=True)
class Detection:
    label: int
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 normalized to the frame


def make_interpreter(model_path: Path) -> Any:
    """A TFLite interpreter from whichever runtime is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # noqa: PLC0415
        except ImportError:
            import tensorflow as tf  # noqa: PLC0415

            Interpreter = tf.lite.Interpreter  # noqa: N806
    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    return interpreter


def letterbox(image: Image.Image, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """RGB pixels letterboxed into size x size (pad 114), the scale and the (x, y) offset."""
    image = image.convert("RGB")
    scale = min(size / image.width, size / image.height)
    inner = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    offset = ((size - inner[0]) // 2, (size - inner[1]) // 2)
    canvas = Image.new("RGB", (size, size), (PAD_VALUE,) * 3)
    canvas.paste(image.resize(inner, Image.Resampling.BILINEAR), offset)
    return np.asarray(canvas, dtype=np.uint8), scale, offset


def to_input(pixels: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """pixel / 255 quantized with the input tensor's own scale and zero point."""
    real = pixels.astype(np.float32) / 255.0
    scale, zero_point = detail["quantization"]
    if scale == 0.0:
        return real[None].astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    q = np.clip(np.round(real / scale) + zero_point, info.min, info.max)
    return q.astype(detail["dtype"])[None]


def dequantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if scale == 0.0:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (n, 4) against every box in b (m, 4), x1 y1 x2 y2."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by class-wise greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(scores), dtype=bool)
    overlaps = iou_matrix(boxes, boxes)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= (overlaps[i] > iou) & (labels == labels[i])
    return np.array(keep, dtype=np.int64)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    half = boxes[:, 2:4] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def decode(
    output: np.ndarray, classes: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes x1 y1 x2 y2 in input pixels, scores, labels) from one dequantized output.

    The layout is recognised by shape: [1, 4+C, N] YOLOv8, [1, N, 5+C] YOLOv5,
    [1, N, 6] end-to-end. Box units (normalized or input pixels) are recognised by
    their range: coordinates above 2 can only be pixels.
    """
    shape = output.shape
    if shape[1] == 4 + classes and shape[2] > shape[1]:
        rows = output[0].T
        boxes, class_scores = cxcywh_to_xyxy(rows[:, :4]), rows[:, 4:]
    elif shape[2] == 5 + classes:
        rows = output[0]
        boxes, class_scores = cxcywh_to_xyxy(rows[:, :4]), rows[:, 4:5] * rows[:, 5:]
    elif shape[2] == 6:
        rows = output[0]
        boxes = rows[:, :4]
        scores, labels = rows[:, 4], np.round(rows[:, 5]).astype(np.int64)
        return scaled(boxes, size), scores, labels
    else:
        raise ValueError(f"unrecognised detector output shape {list(shape)}")
    labels = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(rows)), labels]
    return scaled(boxes, size), scores, labels


def scaled(boxes: np.ndarray, size: int) -> np.ndarray:
    return boxes * size if np.abs(boxes).max(initial=0.0) <= 2.0 else boxes


def detect(interpreter: Any, image: Image.Image, labels: int) -> list[Detection]:
    """Detections in one frame, best first, boxes normalized to the frame."""
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    size = int(inp["shape"][1])
    pixels, scale, (dx, dy) = letterbox(image, size)
    interpreter.set_tensor(inp["index"], to_input(pixels, inp))
    interpreter.invoke()
    output = dequantize(interpreter.get_tensor(out["index"]), out)
    boxes, scores, classes = decode(output, labels, size)
    mask = scores >= MIN_SCORE
    boxes, scores, classes = boxes[mask], scores[mask], classes[mask]
    kept = nms(boxes, scores, classes, NMS_IOU)
    frame = np.array([image.width, image.height] * 2, dtype=np.float32)
    offset = np.array([dx, dy, dx, dy], dtype=np.float32)
    mapped = np.clip((boxes[kept] - offset) / scale / frame, 0.0, 1.0)
    return [
        Detection(int(c), float(s), (float(b[0]), float(b[1]), float(b[2]), float(b[3])))
        for b, s, c in zip(mapped, scores[kept], classes[kept], strict=True)
    ]


@dataclass
class Tally:
    """Per-model counts over a set of frames."""

    top_ok: int = 0  # frames with shapes whose best detection matches a shape (IoU, class)
    with_shapes: int = 0
    matched: int = 0  # true shapes matched by some detection (greedy, score order)
    shapes: int = 0
    false_pos: int = 0  # detections matching no true shape
    empty_clean: int = 0  # frames without shapes and without detections
    empty: int = 0

    def add(self, found: list[Detection], truth: list[Detection]) -> None:
        if not truth:
            self.empty += 1
            self.empty_clean += not found
            self.false_pos += len(found)
            return
        self.with_shapes += 1
        self.shapes += len(truth)
        true_boxes = np.array([t.box for t in truth])
        used = np.zeros(len(truth), dtype=bool)
        for rank, det in enumerate(found):
            overlaps = iou_matrix(np.array([det.box]), true_boxes)[0]
            good = (overlaps > MATCH_IOU) & np.array([t.label == det.label for t in truth])
            if rank == 0 and good.any():
                self.top_ok += 1
            free = np.flatnonzero(good & ~used)
            if free.size:
                used[free[np.argmax(overlaps[free])]] = True
            else:
                self.false_pos += 1
        self.matched += int(used.sum())

    def rows(self) -> list[tuple[str, int, int]]:
        return [
            ("top detection right (IoU>0.5, class)", self.top_ok, self.with_shapes),
            ("shapes found (recall)", self.matched, self.shapes),
            ("frames without shapes and no detection", self.empty_clean, self.empty),
            ("false detections / all detections", self.false_pos, self.false_pos + self.matched),
        ]


Frames = list[tuple[Image.Image, list[Detection]]]


def evaluate(model_path: Path, frames: Frames, labels: int) -> Tally:
    interpreter = make_interpreter(model_path)
    tally = Tally()
    for image, truth in frames:
        tally.add(detect(interpreter, image, labels), truth)
    return tally


def print_table(title: str, tallies: dict[str, Tally]) -> None:
    print(f"\n{title}")
    for name, tally in tallies.items():
        print(f"  {name}")
        for what, good, total in tally.rows():
            share = f"{good / total:.4f}" if total else "-"
            print(f"    {what:<42} {good:>5} / {total:<5} {share}")


def read_truth(path: Path, names: list[str]) -> dict[str, list[Detection]]:
    """truth.csv: frame,label,x1,y1,x2,y2 (normalized); frames without shapes have no row."""
    truth: dict[str, list[Detection]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            box = (float(row["x1"]), float(row["y1"]), float(row["x2"]), float(row["y2"]))
            truth.setdefault(row["frame"], []).append(
                Detection(names.index(row["label"]), 1.0, box)
            )
    return truth


def demo_frames(names: list[str]) -> Frames:
    truth = read_truth(DEMO_DIR / "truth.csv", names)
    paths = sorted(DEMO_DIR.glob("frame_*.jpg"))
    return [(Image.open(path), truth.get(path.name, [])) for path in paths]


def main() -> int:
    names = (MODELS_DIR / LABELS_FILE).read_text().split()
    frames = demo_frames(names)
    tallies = {name: evaluate(MODELS_DIR / name, frames, len(names)) for name in DETECTORS}
    print_table(f"detect_demo frames from disk ({len(frames)})", tallies)
    worst = min(t.top_ok / max(t.with_shapes, 1) for t in tallies.values())
    return 0 if worst > 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())

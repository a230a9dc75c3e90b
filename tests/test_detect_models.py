"""The project's own YOLO-layout detectors (models/build_detector.py) through the
package's Detector, on the detection demo's frames against their ground truth:
each output layout (YOLOv8 [1,4+C,N], YOLOv5 [1,N,5+C] in input pixels, end-to-end
[1,N,6]) is recognised and decoded on a real .tflite, with the model's own input
quantization."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_agent.model.detection.detector import Detector
from edge_agent.model.detection.layouts import model_kind
from edge_agent.model.runtime import Model, RuntimeName

from .conftest import DEMO_MODELS

pytestmark = pytest.mark.runtime

FRAMES = DEMO_MODELS / "detect_demo"
LABELS = ("circle", "square")


def truth() -> dict[str, list[tuple[str, np.ndarray]]]:
    boxes: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
    with (FRAMES / "truth.csv").open() as handle:
        for row in csv.DictReader(handle):
            box = np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
            boxes[row["frame"]].append((row["label"], box))
    return boxes


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.parametrize(
    ("file", "kind"),
    [
        ("shapes_yolov8_int8.tflite", "yolov8"),
        ("shapes_yolov5_int8.tflite", "yolov5"),
        ("shapes_e2e_int8.tflite", "yolo-e2e"),
    ],
)
def test_each_layout_finds_the_demo_shapes(file: str, kind: str, runtime_name: RuntimeName) -> None:
    model = Model.load(DEMO_MODELS / file, runtime=runtime_name, num_threads=1)
    assert model_kind(model.inputs, model.outputs) == kind  # recognised from the model itself
    detector = Detector(model)
    expected = truth()
    right = 0
    for frame, objects in expected.items():
        found = detector.detect((FRAMES / frame).read_bytes())
        assert len(found), f"{file}: nothing found on {frame}"
        label = LABELS[int(found.classes[0])]
        right += any(label == name and iou(found.boxes[0], box) > 0.5 for name, box in objects)
    assert right >= 0.9 * len(expected), f"{file}: top detection right on {right}/{len(expected)}"


def test_the_input_is_quantized_with_the_models_own_parameters(runtime_name: RuntimeName) -> None:
    """The end-to-end model takes pixel / 1.2 - 107, not the usual pixel - 128."""
    model = Model.load(DEMO_MODELS / "shapes_e2e_int8.tflite", runtime=runtime_name)
    spec = model.inputs[0]
    assert (round(spec.scale * 255, 3), spec.zero_point) == (1.2, -107)
    white = Image.new("RGB", (128, 128), (255, 255, 255))
    tensor, _ = Detector(model).prepare(white)
    assert tensor.dtype == np.int8
    assert int(tensor.max()) == round(255 / 1.2) - 107  # 105


def test_an_empty_frame_gives_no_detection(tmp_path: Path, runtime_name: RuntimeName) -> None:
    model = Model.load(DEMO_MODELS / "shapes_yolov8_int8.tflite", runtime=runtime_name)
    frames = sorted(FRAMES.glob("frame_*.jpg"))
    empty = [f for f in frames if f.name not in truth()]
    assert empty, "the demo clip starts with empty frames"
    assert len(Detector(model).detect(empty[0].read_bytes())) == 0

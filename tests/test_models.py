"""The bundled demo models give the documented answers on the bundled samples
(models/README.md), through the same runtime and preprocessing as the daemon."""

import numpy as np
import pytest

from edge_agent.model.labels import read_labels
from edge_agent.model.preprocess import ImagePreprocessor
from edge_agent.model.runtime import Model

from .conftest import DEMO_MODELS

pytestmark = pytest.mark.runtime

CAMERA_STORY = [
    ("empty", range(0, 10)),
    ("circle", range(10, 20)),
    ("empty", range(20, 28)),
    ("square", range(28, 40)),
]
VIBRATION_STORY = [
    ("normal", range(0, 640)),
    ("anomaly", range(640, 1024)),
    ("normal", range(1024, 1600)),
]


def test_camera_model_follows_the_sample_story(runtime_name: str) -> None:
    model = Model.load(DEMO_MODELS / "shapes_int8.tflite", runtime=runtime_name)  # type: ignore[arg-type]
    labels = read_labels(DEMO_MODELS / "shapes_labels.txt")
    assert labels == ["empty", "circle", "square"]
    preprocessor = ImagePreprocessor(model.inputs[0])
    for expected, frames in CAMERA_STORY:
        for index in frames:
            data = (DEMO_MODELS / f"samples/camera/frame_{index:03d}.jpg").read_bytes()
            (scores,) = model.infer(preprocessor.prepare(data))
            assert labels[int(np.argmax(scores))] == expected, index
            assert float(np.max(scores)) > 0.6, index


def test_vibration_model_follows_the_sample_story(runtime_name: str) -> None:
    model = Model.load(DEMO_MODELS / "vibration_int8.tflite", runtime=runtime_name)  # type: ignore[arg-type]
    labels = read_labels(DEMO_MODELS / "vibration_labels.txt")
    assert labels == ["normal", "anomaly"]
    samples = np.loadtxt(DEMO_MODELS / "samples/vibration.csv", delimiter=",", dtype=np.float32)
    assert samples.shape == (1600, 3)
    normalised = (samples - np.array([0.0, 0.0, 1.0])) / 0.5
    for expected, lines in VIBRATION_STORY:
        for start in range(lines.start, lines.stop - 63, 64):
            (scores,) = model.infer(normalised[start : start + 64].astype(np.float32))
            assert labels[int(np.argmax(scores))] == expected, start

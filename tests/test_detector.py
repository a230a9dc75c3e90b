"""The SSD starter model on the two dogs: a real detector from the wild."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_agent.errors import InputError, ModelError
from edge_agent.model.detection.decode import DecodeOptions
from edge_agent.model.detection.detector import Detector
from edge_agent.model.detection.labels import DetectionLabels
from edge_agent.model.detection.types import Detections
from edge_agent.model.runtime import Model

from .conftest import FIXTURE_IMAGES, FIXTURE_MODELS, MOBILENET

pytestmark = pytest.mark.runtime

SSD = FIXTURE_MODELS / "ssd_mobilenet_v1_coco_quant.tflite"
PETS = FIXTURE_IMAGES / "pets.jpg"
LABEL_FILES = [
    FIXTURE_MODELS / "ssd_mobilenet_v1_coco_labelmap.txt",
    FIXTURE_MODELS / "coco_labels.txt",
]
# The fixture's README: pets.jpg stretched to 300x300.
DOGS = [(0.82, (0.237, 0.114, 0.491, 0.678)), (0.74, (0.664, 0.384, 0.965, 0.860))]


@pytest.fixture(scope="module")
def ssd(runtime_name: str) -> Model:
    return Model.load(SSD, runtime=runtime_name)  # type: ignore[arg-type]


def assert_two_dogs(found: Detections, labels: DetectionLabels, box_tolerance: float) -> None:
    assert [labels.name(int(c)) for c in found.classes] == ["dog", "dog"]
    for (score, box), got_score, got_box in zip(DOGS, found.scores, found.boxes, strict=True):
        assert got_score == pytest.approx(score, abs=0.02)
        np.testing.assert_allclose(got_box, box, atol=box_tolerance)


@pytest.mark.parametrize("label_file", LABEL_FILES, ids=lambda p: Path(p).name)
def test_ssd_finds_the_two_dogs(ssd: Model, label_file: Path) -> None:
    detector = Detector(ssd, options=DecodeOptions(min_score=0.5))
    assert (detector.layout.family, detector.resize) == ("ssd", "stretch")
    assert_two_dogs(detector.detect(PETS.read_bytes()), DetectionLabels.read(label_file), 0.01)


def test_weaker_detections_follow_best_first(ssd: Model) -> None:
    found = Detector(ssd).detect(PETS.read_bytes())  # the default minimum, 0.25
    assert len(found) > 2
    assert found.scores.min() >= 0.25
    assert np.all(np.diff(found.scores) <= 0)
    assert found.scores[0] == pytest.approx(0.82, abs=0.02)


def test_a_decoded_image_gives_what_its_bytes_give(ssd: Model) -> None:
    detector = Detector(ssd, options=DecodeOptions(min_score=0.5))
    with Image.open(PETS) as image:
        found = detector.detect(image)
    assert_two_dogs(found, DetectionLabels.read(LABEL_FILES[0]), 0.01)


def test_letterboxed_boxes_map_back_onto_the_same_dogs(ssd: Model) -> None:
    # Left on the tensor, the boxes would sit up to 0.06 off (the bands are 24 of
    # 300 rows); the model's own answer on the smaller dogs moves by less than 0.03.
    options = DecodeOptions(min_score=0.5)
    found = Detector(ssd, options=options, resize="letterbox").detect(PETS.read_bytes())
    labels = DetectionLabels.read(LABEL_FILES[1])
    assert [labels.name(int(c)) for c in found.classes] == ["dog", "dog"]
    for (_, box), got_box in zip(DOGS, found.boxes, strict=True):
        np.testing.assert_allclose(got_box, box, atol=0.03)


def test_an_unreadable_frame_is_an_input_error(ssd: Model) -> None:
    with pytest.raises(InputError, match="not a readable image"):
        Detector(ssd).detect(b"not a jpeg")


def test_a_classifier_is_not_a_detector(runtime_name: str) -> None:
    classifier = Model.load(MOBILENET, runtime=runtime_name)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=r"unrecognised detection outputs: .*\[1,1001\]"):
        Detector(classifier)


def test_a_kind_the_outputs_do_not_fit_is_refused_at_start(ssd: Model) -> None:
    with pytest.raises(ModelError, match=r"unrecognised yolov5 detection outputs.*\[1,10,4\]"):
        Detector(ssd, kind="yolov5")

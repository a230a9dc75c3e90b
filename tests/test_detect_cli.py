"""`edge-agent infer` and `inspect` on a real detector, as a user runs them."""

from __future__ import annotations

import pytest

from .conftest import FIXTURE_IMAGES, FIXTURE_MODELS, MOBILENET
from .test_cli import edge_agent, json_lines

pytestmark = [pytest.mark.runtime, pytest.mark.integration]

SSD = FIXTURE_MODELS / "ssd_mobilenet_v1_coco_quant.tflite"
LABELS = FIXTURE_MODELS / "ssd_mobilenet_v1_coco_labelmap.txt"
PETS = FIXTURE_IMAGES / "pets.jpg"


def test_infer_prints_the_dogs_best_first() -> None:
    done = edge_agent("infer", "--model", SSD, "--labels", LABELS, "--min-score", "0.5", PETS)
    assert done.returncode == 0, done.stderr
    (line,) = json_lines(done.stdout)
    assert line["input"] == str(PETS)
    assert isinstance(line["latency_ms"], float)
    detections = line["detections"]
    assert isinstance(detections, list)
    assert [(d["label"], d["class"]) for d in detections] == [("dog", 17), ("dog", 17)]
    expected = [(0.82, [0.237, 0.114, 0.491, 0.678]), (0.74, [0.664, 0.384, 0.965, 0.860])]
    for detection, (score, box) in zip(detections, expected, strict=True):
        assert detection["score"] == pytest.approx(score, abs=0.02)
        assert detection["box"] == pytest.approx(box, abs=0.01)
    assert done.stderr == ""


def test_min_score_and_a_bad_input_among_good_ones() -> None:
    done = edge_agent("infer", "--model", SSD, "--labels", LABELS, PETS, "missing.jpg", PETS)
    assert done.returncode == 4
    lines = json_lines(done.stdout)
    assert len(lines) == 2
    detections = lines[0]["detections"]
    assert isinstance(detections, list)
    scores = [d["score"] for d in detections]
    assert len(scores) > 2  # the default 0.25 lets weaker boxes through
    assert min(scores) >= 0.25
    assert scores == sorted(scores, reverse=True)
    assert "missing.jpg: cannot read" in done.stderr


def test_a_kind_that_does_not_fit_exits_3_naming_the_outputs() -> None:
    done = edge_agent("infer", "--model", SSD, "--kind", "yolov8", PETS)
    assert done.returncode == 3
    assert done.stdout == ""
    assert "unrecognised yolov8 detection outputs" in done.stderr
    assert "'TFLite_Detection_PostProcess:3' [1] float32" in done.stderr


def test_a_score_outside_0_1_is_a_usage_error() -> None:
    done = edge_agent("infer", "--model", SSD, "--min-score", "1.5", PETS)
    assert done.returncode == 2
    assert "'1.5' is not a number between 0 and 1" in done.stderr


def test_inspect_names_the_kind() -> None:
    assert "kind     ssd" in edge_agent("inspect", SSD).stdout
    assert '"kind": "classifier"' in edge_agent("inspect", "--json", MOBILENET).stdout

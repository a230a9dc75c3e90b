"""Shadow models for detection pipelines: agreement is the same count per label at or
above the policy's min_score, checked against both Detectors run directly."""

from __future__ import annotations

import csv
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edge_agent.app.agent import Agent
from edge_agent.capture.shadow import ShadowJob, ShadowOptions, ShadowRunner, Top1
from edge_agent.capture.shadow_detect import Counting, DetectionReader, count_verdict
from edge_agent.config.settings import load_settings
from edge_agent.model.detection.decode import DecodeOptions
from edge_agent.model.detection.detector import Detector
from edge_agent.model.detection.labels import DetectionLabels
from edge_agent.model.detection.types import Detections
from edge_agent.model.runtime import Model
from edge_agent.sources.base import Frame

from .broker import Mosquitto
from .conftest import DEMO_MODELS, FIXTURE_MODELS
from .fleet_helpers import wait_for
from .subscriber import Subscriber

YOLOV8 = DEMO_MODELS / "shapes_yolov8_int8.tflite"
E2E = DEMO_MODELS / "shapes_e2e_int8.tflite"
SHAPES_LABELS = DEMO_MODELS / "shapes_detect_labels.txt"
SSD = FIXTURE_MODELS / "ssd_mobilenet_v1_coco_quant.tflite"
COCO_LABELS = FIXTURE_MODELS / "coco_labels.txt"
DEMO = DEMO_MODELS / "detect_demo"
FRAMES = sorted(DEMO.glob("*.jpg"))
MIN_SCORE = 0.5


def detections(labels: list[str], scores: list[float]) -> Detections:
    n = len(scores)
    boxes = np.tile(np.array([0.1, 0.1, 0.2, 0.2], np.float32), (n, 1))
    return Detections(boxes, np.array(scores), np.arange(n, dtype=np.int64), tuple(labels))


def test_the_verdict_counts_each_label_at_or_above_its_threshold() -> None:
    found = detections(["square", "circle", "circle", "square", "cat"], [0.9, 0.5, 0.7, 0.3, 0.6])
    verdict = count_verdict(found, Counting(0.5, {"cat": 0.65}))
    assert verdict.label == "circle:2,square:1"
    assert verdict.score == pytest.approx(0.9)
    # the order of the detections does not matter, only the counts
    other = detections(["circle", "square", "circle"], [0.6, 0.8, 0.55])
    assert count_verdict(other, Counting(0.5)).label == verdict.label


def test_a_frame_without_counted_objects_has_its_own_verdict() -> None:
    assert count_verdict(detections([], []), Counting(0.5)) == Top1("-", 0.0)
    weak = count_verdict(detections(["circle"], [0.4]), Counting(0.5))
    assert weak.label == "-"
    assert weak.score == pytest.approx(0.4)  # the confidence is the top score regardless


# --- real models -----------------------------------------------------------------


def detector(path: Path, labels: Path, runtime_name: str) -> Detector:
    model = Model.load(path, runtime=runtime_name, num_threads=1)  # type: ignore[arg-type]
    return Detector(model, labels=DetectionLabels.read(labels), options=DecodeOptions(0.25))


def counts(found: Detections) -> dict[str, int]:
    """The test's own count, independent of count_verdict."""
    kept = [
        name for name, score in zip(found.labels, found.scores, strict=True) if score >= MIN_SCORE
    ]
    return dict(Counter(kept))


def compare(serving: Detector, shadow: Detector, frames: list[Path]) -> tuple[ShadowRunner, float]:
    """Run the shadow on every frame; return it and the agreement the test expects."""
    rule = Counting(MIN_SCORE)
    runner = ShadowRunner(
        shadow.model,
        reader=DetectionReader(shadow, rule),
        options=ShadowOptions(every=1),
        publish=lambda _r: None,
    )
    agreed = 0
    for frame in frames:
        data = frame.read_bytes()
        mine, theirs = serving.detect(data), shadow.detect(data)
        agreed += counts(mine) == counts(theirs)
        runner.compare(ShadowJob(Frame(data, str(frame), 0.0), count_verdict(mine, rule), 1.0))
    return runner, agreed / len(frames)


@pytest.mark.runtime
def test_two_yolo_layouts_of_the_shapes_detector_mostly_agree(runtime_name: str) -> None:
    serving = detector(YOLOV8, SHAPES_LABELS, runtime_name)
    shadow = detector(E2E, SHAPES_LABELS, runtime_name)
    runner, expected = compare(serving, shadow, FRAMES)
    assert 0.8 <= expected < 1.0  # mostly, not trivially always
    report = runner.report()
    assert report["compared"] == len(FRAMES)
    assert report["agreement"] == round(expected, 4)
    assert (report["state"], report["errors"]) == ("running", 0)
    assert 0.3 < report["confidence"]["shadow"] <= 1.0
    assert report["latency_ms"]["shadow"] > 0


@pytest.mark.runtime
def test_a_coco_ssd_and_the_shapes_yolo_almost_never_agree(runtime_name: str) -> None:
    """On the frames with a shape in them (truth.csv) the SSD sees COCO things, if any."""
    with (DEMO / "truth.csv").open(newline="") as f:
        shaped = sorted({row["frame"] for row in csv.DictReader(f)})
    frames = [DEMO / name for name in shaped]
    assert len(frames) >= 20
    serving = detector(SSD, COCO_LABELS, runtime_name)
    shadow = detector(YOLOV8, SHAPES_LABELS, runtime_name)
    runner, expected = compare(serving, shadow, frames)
    assert expected <= 0.05
    report = runner.report()
    assert report["compared"] == len(frames)
    assert report["agreement"] == round(expected, 4)


@pytest.mark.runtime
def test_a_classifier_is_no_detector_shadow(runtime_name: str) -> None:
    """The wiring builds the shadow's Detector at start: a model it cannot read is
    refused there with a ModelError (and the shadow is dropped, not serving)."""
    from edge_agent.errors import ModelError  # noqa: PLC0415

    with pytest.raises(ModelError):
        detector(DEMO_MODELS / "shapes_int8.tflite", SHAPES_LABELS, runtime_name)


# --- in the daemon ---------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.runtime
def test_a_detection_pipeline_reports_its_shadow_agreement(
    broker: Mosquitto, tmp_path: Path, runtime_name: str
) -> None:
    """YOLOv8 serving, the end-to-end export in shadow (no labels file: the serving
    one's names), every frame compared once: the report says what the test counts."""
    serving = detector(YOLOV8, SHAPES_LABELS, runtime_name)
    shadow = detector(E2E, SHAPES_LABELS, runtime_name)
    expected = sum(
        counts(serving.detect(f.read_bytes())) == counts(shadow.detect(f.read_bytes()))
        for f in FRAMES
    ) / len(FRAMES)
    settings = {
        "device_id": "dev1",
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "keepalive": 5},
        "pipelines": [
            {
                "name": "cam",
                "model": str(YOLOV8),
                "labels": str(SHAPES_LABELS),
                "source": {"kind": "files", "pattern": str(DEMO / "*.jpg"), "fps": 50},
                "policy": {"kind": "detection", "min_score": MIN_SCORE},
                "shadow": {
                    "model": str(E2E),
                    "version": "2",
                    "every": 1,
                    "queue": 1000,
                    "report_interval": 1,
                },
            }
        ],
    }
    agent = Agent(load_settings(None, settings))
    subscriber = Subscriber(broker.port, "edge/dev1/cam/shadow")
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    try:
        wait_for(
            lambda: any(m.json()["compared"] == len(FRAMES) for m in subscriber.on("/shadow")),
            60,
            "a shadow report over every frame",
        )
    finally:
        stop.set()
        thread.join(30)
        subscriber.close()
    assert not thread.is_alive()
    report = next(m.json() for m in subscriber.on("/shadow") if m.json()["compared"] == len(FRAMES))
    assert report["agreement"] == round(expected, 4)
    assert 0.8 <= report["agreement"] < 1.0
    assert report["shadow"]["version"] == "2"
    assert (report["state"], report["errors"]) == ("running", 0)

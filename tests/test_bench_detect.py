"""The detection benchmark measures real work: its synthetic heads decode into the
objects they were made with, and `edge-agent bench` reports every measurement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_agent.devtools.bench_detect import (
    OBJECTS,
    SSD_BOXES,
    bench_policy,
    spec,
    synthetic_ssd,
    synthetic_yolov8,
)
from edge_agent.model.detection.decode import DecodeOptions, Decoder
from edge_agent.model.detection.layouts import recognise

from .conftest import FIXTURE_MODELS
from .test_bench import bench


@pytest.mark.parametrize(("size", "anchors"), [(320, 2100), (640, 8400)])
def test_a_synthetic_yolov8n_head_holds_its_objects(size: int, anchors: int) -> None:
    outputs = synthetic_yolov8(size, frames=3)
    assert outputs[0][0].shape == (1, 84, anchors)
    layout = recognise(
        [spec("x", 0, (1, size, size, 3), "uint8")], [spec("y", 1, (1, 84, anchors))]
    )
    assert layout.family == "yolov8"
    found = Decoder(layout, DecodeOptions(min_score=0.25)).decode(outputs[0])
    # the objects (a few boxes each survive NMS: their anchors jitter) and a thin noise tail
    strong = found.scores >= 0.5
    assert OBJECTS <= int(np.count_nonzero(strong)) <= 4 * OBJECTS
    assert len(found) < 100  # the background stays below the floor, almost all of it


def test_synthetic_ssd_outputs_feed_the_policy() -> None:
    frames = synthetic_ssd(frames=4)
    specs = [
        spec("b", 1, (1, 10, 4)),
        spec("c", 2, (1, 10)),
        spec("s", 3, (1, 10)),
        spec("n", 4, (1,)),
    ]
    layout = recognise([spec("x", 0, (1, 300, 300, 3), "uint8")], specs)
    decoder = Decoder(layout, DecodeOptions(min_score=0.25))
    policy = bench_policy()
    decisions = [policy.decide(decoder.decode(f), t * 0.1) for t, f in enumerate(frames)]
    assert len(decoder.decode(frames[0])) == SSD_BOXES
    assert decisions[0] is not None  # the first frame always speaks
    counts = policy.snapshot()["counts"]
    assert sum(n for zone in counts.values() for n in zone.values()) > 0


@pytest.mark.integration
@pytest.mark.runtime
def test_bench_reports_the_detection_overhead() -> None:
    child = bench(
        "--seconds",
        "1",
        "--json",
        "--detector",
        str(FIXTURE_MODELS / "ssd_mobilenet_v1_coco_quant.tflite"),
        "--detector-labels",
        str(FIXTURE_MODELS / "ssd_mobilenet_v1_coco_labelmap.txt"),
    )
    assert child.returncode == 0, child.stderr
    found = {d["name"]: d for d in json.loads(child.stdout)["detection"]}
    names = list(found)
    assert names[:3] == [
        "YOLOv8n-320 head [1,84,2100] (synthetic)",
        "YOLOv8n-640 head [1,84,8400] (synthetic)",
        "SSD, 10 boxes (synthetic outputs)",
    ]
    assert names[3] == "ssd_mobilenet_v1_coco_quant.tflite (ssd)"
    assert all(d["post_ms"] > 0 for d in found.values())
    assert found[names[3]]["invoke_ms"] > 0
    assert found[names[0]]["ratio"] > 0  # against the estimated YOLOv8n invoke
    assert found[names[2]]["ratio"] is None  # no SSD model behind the synthetic outputs

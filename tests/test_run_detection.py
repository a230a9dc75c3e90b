"""`edge-agent run` on a detection pipeline: a real SSD model, a files source, a real
mosquitto; events and the retained state as a subscriber sees them."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent.app.agent import Agent
from edge_agent.config.settings import load_settings
from edge_agent.model.detection.decode import DecodeOptions
from edge_agent.pipeline.detecting import DetectionPipeline

from .broker import Mosquitto
from .conftest import FIXTURE_IMAGES, FIXTURE_MODELS
from .subscriber import Subscriber
from .test_daemon import run

pytestmark = [pytest.mark.integration, pytest.mark.runtime]

SSD = FIXTURE_MODELS / "ssd_mobilenet_v1_coco_quant.tflite"
SSD_LABELS = FIXTURE_MODELS / "ssd_mobilenet_v1_coco_labelmap.txt"
# The fixture's README: two dogs, (xmin, ymin, xmax, ymax) normalized to pets.jpg.
DOGS = [(0.237, 0.114, 0.491, 0.678), (0.664, 0.384, 0.965, 0.860)]

CONFIG = """
device_id = "cam1"
state_dir = "{state}"

[mqtt]
host = "127.0.0.1"
port = {port}

[[pipelines]]
name = "yard"
model = "{model}"
labels = "{labels}"

[pipelines.source]
kind = "files"
pattern = "{frames}/*.jpg"

[pipelines.policy]
kind = "detection"
min_score = 0.5
debounce = 2
{policy}
"""


def write_config(tmp_path: Path, port: int, *, model: Path = SSD, policy: str = "") -> Path:
    frames = tmp_path / "frames"
    frames.mkdir(exist_ok=True)
    for i in range(4):  # the same scene, four frames in a row
        shutil.copy(FIXTURE_IMAGES / "pets.jpg", frames / f"pets_{i}.jpg")
    path = tmp_path / "config.toml"
    path.write_text(
        CONFIG.format(
            state=tmp_path / "state",
            port=port,
            model=model,
            labels=SSD_LABELS,
            frames=frames,
            policy=policy,
        ),
        encoding="utf-8",
    )
    return path


def run_to_end(broker: Mosquitto, config: Path) -> Subscriber:
    sub = Subscriber(broker.port, "edge/cam1/#")
    done = run("run", "--config", config, "--exit-when-done")
    assert done.returncode == 0, done.stderr
    return sub


def assert_two_dogs(objects: list[dict[str, Any]]) -> None:
    assert [o["label"] for o in objects] == ["dog", "dog"]
    boxes = sorted(tuple(o["box"]) for o in objects)
    for box, expected in zip(boxes, DOGS, strict=True):
        assert box == pytest.approx(expected, abs=0.03)
    assert len({o["id"] for o in objects}) == 2  # two tracks


def test_a_detection_pipeline_publishes_the_two_dogs(broker: Mosquitto, tmp_path: Path) -> None:
    sub = run_to_end(broker, write_config(tmp_path, broker.port))
    sub.wait_for(lambda s: len(s.on("/yard/event")) >= 2)
    events = [m.json() for m in sub.on("/yard/event")]
    # The first frame's event says nothing is counted yet (a count must hold 2 frames);
    # the second settles on two dogs.
    assert [(e["previous"], e["decision"]) for e in events] == [(None, "none"), ("none", "dog:2")]
    dogs = events[1]
    assert dogs["reason"] == "change"
    assert dogs["label"] == "dog"
    assert dogs["detection"]["counts"] == {"frame": {"dog": 2}}
    assert dogs["detection"]["changed"] == [
        {"zone": "frame", "label": "dog", "count": 2, "previous": 0}
    ]
    assert_two_dogs(dogs["detection"]["objects"])
    sub.close()
    # What a consumer that connects later reads: the retained state, with the counts.
    late = Subscriber(broker.port, "edge/cam1/yard/state", client_id="late")
    late.wait_for(lambda s: bool(s.messages))
    state = late.messages[0]
    assert state.retain
    assert state.json()["inferences"] == 4
    assert state.json()["state"] == "dog:2"
    assert state.json()["detection"] == {"counts": {"frame": {"dog": 2}}, "crossings": {}}
    late.close()


def test_zones_and_lines_are_counted_and_reported(broker: Mosquitto, tmp_path: Path) -> None:
    # The left dog stands (bottom-centre ~ (0.36, 0.68)) in "left"; the right one
    # (~ (0.81, 0.86)) is outside it. No one crosses the line: its totals stay 0.
    policy = """
[pipelines.policy.zones]
left = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]

[pipelines.policy.lines.gate]
points = [[0.0, 0.95], [1.0, 0.95]]
"""
    sub = run_to_end(broker, write_config(tmp_path, broker.port, policy=policy))
    sub.wait_for(lambda s: any(e.json()["decision"] != "none" for e in s.on("/yard/event")))
    event = next(m.json() for m in sub.on("/yard/event") if m.json()["decision"] != "none")
    assert event["decision"] == "dog:1@left"
    assert event["detection"]["counts"] == {"left": {"dog": 1}}
    assert [(e["label"], e["zone"]) for e in event["detection"]["entered"]] == [("dog", "left")]
    sub.wait_for(lambda s: any(m.json()["inferences"] == 4 for m in s.on("/yard/state")))
    state = sub.on("/yard/state")[-1].json()
    assert state["detection"]["crossings"] == {"gate": {"in": 0, "out": 0}}
    sub.close()


def test_a_model_that_is_no_detector_is_refused_naming_its_outputs(
    broker: Mosquitto, tmp_path: Path
) -> None:
    classifier = FIXTURE_MODELS / "mobilenet_v1_0.25_128_quant.tflite"
    config = write_config(tmp_path, broker.port, model=classifier)
    done = run("run", "--config", config, "--exit-when-done")
    assert done.returncode == 78, done.stderr
    assert "pipelines.yard.model" in done.stderr
    assert "unrecognised detection outputs" in done.stderr
    assert "[1,1001]" in done.stderr  # the outputs, named
    assert "Traceback" not in done.stderr
    checked = run("config", "check", config)
    assert checked.returncode == 78
    assert "pipelines.yard.model" in checked.stderr


def test_a_reload_makes_the_detector_decode_as_the_new_policy_says(
    broker: Mosquitto, tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(FIXTURE_IMAGES / "pets.jpg", frames / "pets.jpg")
    pipeline = {
        "name": "yard",
        "model": str(SSD),
        "labels": str(SSD_LABELS),
        "source": {"kind": "files", "pattern": str(frames / "*.jpg"), "loop": True, "fps": 20},
        "policy": {"kind": "detection", "min_score": 0.5},
    }
    base = {
        "device_id": "cam1",
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "pipelines": [pipeline],
    }
    agent = Agent(load_settings(None, base))
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,))
    runner.start()
    try:
        (serving,) = agent.pipelines
        assert isinstance(serving, DetectionPipeline)
        assert serving.detector.options == DecodeOptions(min_score=0.5, iou=0.45)
        policy = {"kind": "detection", "min_score": 0.6, "score_hysteresis": 0.2, "iou": 0.3}
        changed = {**base, "pipelines": [{**pipeline, "policy": policy}]}
        agent.reloader = lambda: load_settings(None, changed)
        assert agent.reload() == []  # every change applied live
        options = serving.detector.options  # the floor: 0.6 less the hysteresis
        assert options.min_score == pytest.approx(0.4)
        assert options.iou == 0.3
        served = serving.stats.inferences
        deadline = time.monotonic() + 20
        while serving.stats.inferences < served + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert serving.stats.inferences >= served + 3
        assert serving.stats.model_errors == 0
    finally:
        stop.set()
        runner.join(30)

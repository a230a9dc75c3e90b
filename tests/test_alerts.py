"""Drift alerts through the whole daemon to a real subscriber: frames that get
darker, sensor readings whose mean shifts; one alert per episode, one all-clear."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageEnhance

from edge_agent.app.agent import Agent
from edge_agent.config.settings import load_settings

from .broker import Mosquitto
from .conftest import DEMO_MODELS
from .subscriber import Subscriber

pytestmark = pytest.mark.integration

SAMPLES = sorted((DEMO_MODELS / "samples/camera").glob("*.jpg"))
DRIFT = {"sample_every": 1, "reference_size": 30, "window": 30, "check_every": 10}


def run(broker: Mosquitto, tmp_path: Path, pipeline: dict[str, Any]) -> list[dict[str, Any]]:
    sub = Subscriber(broker.port, "edge/dev1/p/alert")
    config = {
        "device_id": "dev1",
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "pipelines": [{"name": "p", "drift": DRIFT, **pipeline}],
    }
    try:
        Agent(load_settings(None, config)).run(threading.Event(), until_done=True)
        sub.wait_for(lambda s: len(s.messages) >= 2, timeout=10)
        return [m.json() for m in sub.messages]
    finally:
        sub.close()


def write_frames(folder: Path, brightness: list[float]) -> str:
    folder.mkdir()
    for i, level in enumerate(brightness):
        with Image.open(SAMPLES[i % 10]) as frame:  # the empty scene, lit as asked
            ImageEnhance.Brightness(frame).enhance(level).save(folder / f"{i:04d}.jpg")
    return str(folder / "*.jpg")


def test_frames_getting_darker_raise_one_alert_and_one_all_clear(
    broker: Mosquitto, tmp_path: Path
) -> None:
    pattern = write_frames(tmp_path / "frames", [1.0] * 40 + [0.3] * 60 + [1.0] * 60)
    alerts = run(
        broker,
        tmp_path,
        {
            "model": str(DEMO_MODELS / "shapes_int8.tflite"),
            "labels": str(DEMO_MODELS / "shapes_labels.txt"),
            "source": {"kind": "files", "pattern": pattern},
            "policy": {"kind": "classification"},
        },
    )
    assert [a["state"] for a in alerts] == ["drift", "clear"]
    assert alerts[0]["worst"].startswith("mean[")
    assert alerts[0]["score"] >= 0.25
    assert {"v", "device", "pipeline", "ts", "measure", "details", "model"} <= set(alerts[0])


def test_a_sensor_mean_shift_raises_one_alert_and_one_all_clear(
    broker: Mosquitto, tmp_path: Path
) -> None:
    normal = (DEMO_MODELS / "samples/vibration.csv").read_text().splitlines()[:640]
    shifted = []
    for line in normal:
        x, y, z = (float(v) for v in line.split(","))
        shifted.append(f"{x + 0.6:.4f},{y:.4f},{z:.4f}")  # +0.6 g on x: a tilted mount
    readings = tmp_path / "accel.csv"
    readings.write_text("\n".join(normal * 3 + shifted * 2 + normal * 3) + "\n")
    window = {"size": 64, "hop": 8, "channels": 3, "mean": [0.0, 0.0, 1.0], "std": [0.5, 0.5, 0.5]}
    alerts = run(
        broker,
        tmp_path,
        {
            # a reference of 150 windows (1 200 readings): small ones are noisy
            "drift": {"sample_every": 1, "reference_size": 150, "window": 100, "check_every": 20},
            "model": str(DEMO_MODELS / "vibration_int8.tflite"),
            "source": {"kind": "lines", "path": str(readings), "window": window},
            "policy": {"kind": "threshold", "index": 1},
        },
    )
    assert [a["state"] for a in alerts] == ["drift", "clear"]
    assert alerts[0]["worst"] in ("mean[0]", "output")  # the model sees it too
    assert alerts[0]["details"]["mean[0]"] > 2 * alerts[0]["details"]["mean[1]"]  # x moved

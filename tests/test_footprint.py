"""What the run path loads: modules that only some configurations need stay out
of the agent's resident memory when those configurations are off. Checked in a
fresh interpreter, since this one has imported everything the tests use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .broker import Mosquitto
from .conftest import DEMO_MODELS

pytestmark = pytest.mark.integration

WATCHED = ("cryptography", "http.server", "numpy.ma")
CAMERA_ONLY = ("PIL", "edge_agent.sources.camera", "edge_agent.model.preprocess")
SENSOR_ONLY = ("edge_agent.sources.sensor", "edge_agent.sources.sensor.window")
DETECTION_AND_AUDIO = (
    "edge_agent.model.detection.detector",
    "edge_agent.pipeline.detection.policy",
    "edge_agent.pipeline.audio.listener",
)

# Builds an agent, runs it over a finite source (the drift monitor learns its
# reference and checks it), takes a telemetry sample, and reports which of the
# watched modules were imported on the way.
CHILD = """
import json, sys, threading
from edge_agent.app.agent import Agent
from edge_agent.config.settings import load_settings

config, watched = json.loads(sys.stdin.read())
agent = Agent(load_settings(None, config))
built = [m for m in watched if m in sys.modules]
agent.run(threading.Event(), until_done=True)
snapshot = agent.telemetry_snapshot()
print(json.dumps({
    "built": built,
    "ran": [m for m in watched if m in sys.modules],
    "drift": next(iter(snapshot["pipelines"].values()))["drift"]["state"],
    "latency": sorted(next(iter(snapshot["pipelines"].values()))["latency_ms"]),
}))
"""


def config(broker: Mosquitto, tmp_path: Path) -> dict[str, Any]:
    return {
        "device_id": "dev1",
        "state_dir": str(tmp_path / "state"),
        "log_level": "warning",
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "pipelines": [
            {
                "name": "cam",
                "model": str(DEMO_MODELS / "shapes_int8.tflite"),
                "source": {
                    "kind": "files",
                    "pattern": str(DEMO_MODELS / "samples" / "camera" / "*.jpg"),
                },
                "policy": {"kind": "classification"},
                "drift": {"sample_every": 1, "reference_size": 10, "window": 10},
            }
        ],
    }


def sensor_config(broker: Mosquitto, tmp_path: Path) -> dict[str, Any]:
    settings = config(broker, tmp_path)
    window = {"size": 64, "hop": 32, "channels": 3}
    source = {"kind": "lines", "path": str(DEMO_MODELS / "samples" / "vibration.csv")}
    settings["pipelines"][0] |= {
        "name": "vib",
        "model": str(DEMO_MODELS / "vibration_int8.tflite"),
        "source": source | {"window": window},
        "policy": {"kind": "threshold", "index": 1},
    }
    return settings


def run_child(
    config: dict[str, Any], watched: tuple[str, ...] = WATCHED + SENSOR_ONLY
) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps([config, watched]),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_run_path_leaves_out_what_the_configuration_does_not_use(
    broker: Mosquitto, tmp_path: Path
) -> None:
    result = run_child(config(broker, tmp_path), WATCHED + SENSOR_ONLY + DETECTION_AND_AUDIO)
    assert result["drift"] != "learning"  # the reference was learned and checked
    assert result["latency"] == ["p50", "p95", "p99"]
    # cryptography: update signatures, with no [update] section; http.server: the
    # Prometheus endpoint, off by default; numpy.ma: numpy's quantiles and unique,
    # which drift and telemetry do without.
    # The sensor sources and their windowing: a camera-only device needs neither;
    # a classifier needs no detector, no detection policy, no audio.
    assert result["built"] == []
    assert result["ran"] == []


def test_a_sensor_device_loads_no_camera_code(broker: Mosquitto, tmp_path: Path) -> None:
    result = run_child(sensor_config(broker, tmp_path), WATCHED + CAMERA_ONLY + DETECTION_AND_AUDIO)
    assert result["drift"] != "learning"
    assert result["ran"] == []  # Pillow alone is 2+ MB resident


def test_updates_turned_on_do_load_cryptography(broker: Mosquitto, tmp_path: Path) -> None:
    key = tmp_path / "update.pub"
    key.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    settings = config(broker, tmp_path)
    settings["update"] = {
        "enabled": True,
        "manifest_url": "https://updates.invalid/manifest.json",
        "keys": [str(key)],
        "interval": 3600,
    }
    result = run_child(settings)
    assert "cryptography" in result["built"]

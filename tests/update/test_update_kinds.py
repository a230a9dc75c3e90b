"""Model updates of detection and audio pipelines: the update swaps in, the pipeline
rebuilds what reads the new model (the Detector; the Listener), and decisions go on."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest

from edge_agent.app.agent import Agent
from edge_agent.config.settings import load_settings
from edge_agent.pipeline.detecting import DetectionPipeline
from edge_agent.pipeline.listening import ListeningPipeline
from tests.broker import Mosquitto
from tests.conftest import FIXTURE_IMAGES, FIXTURE_MODELS, FIXTURES
from tests.subscriber import Subscriber
from tests.update.fixtures import NAME, Site
from tests.update.servers import CA, StaticServer

pytestmark = [pytest.mark.integration, pytest.mark.runtime]

SSD = FIXTURE_MODELS / "ssd_mobilenet_v1_coco_quant.tflite"
WAKE = FIXTURES / "audio"


def config(
    broker: Mosquitto, tmp_path: Path, server: StaticServer, site: Site, ca: CA, pipeline: Any
) -> dict[str, Any]:
    return {
        "device_id": "dev1",
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "update": {
            "enabled": True,
            "manifest_url": server.url("/manifest.json"),
            "keys": [str(site.public())],
            "ca_file": str(ca.cert_file),
            "probation_inferences": 10,
            "interval": 3600,
        },
        "pipelines": [{"model_name": NAME, "model_version": "1", **pipeline}],
    }


def update_to_v2(broker: Mosquitto, site: Site, sub: Subscriber, model: bytes) -> None:
    site.publish(model + b"\0" * 16, version=2)  # the same network, other bytes
    mqtt_publish.single("edge/dev1/cmd/update", b"", hostname="127.0.0.1", port=broker.port)
    sub.wait_for(
        lambda s: any(m.json()["state"] == "committed" for m in s.on("dev1/update")), timeout=60
    )


class Running:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.agent = Agent(load_settings(None, settings))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.agent.run, args=(self.stop,))
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def test_a_detection_update_rebuilds_the_detector(
    broker: Mosquitto, tmp_path: Path, site: Site, server: StaticServer, ca: CA
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(FIXTURE_IMAGES / "pets.jpg", frames / "pets.jpg")
    pipeline = {
        "name": "yard",
        "model": str(SSD),
        "labels": str(FIXTURE_MODELS / "ssd_mobilenet_v1_coco_labelmap.txt"),
        "source": {"kind": "files", "pattern": str(frames / "*.jpg"), "loop": True, "fps": 20},
        "policy": {"kind": "detection", "min_score": 0.5, "heartbeat": 0.5},
    }
    sub = Subscriber(broker.port, "edge/dev1/#")
    running = Running(config(broker, tmp_path, server, site, ca, pipeline))
    try:
        sub.wait_for(lambda s: any(e.json()["decision"] == "dog:2" for e in s.on("/yard/event")))
        serving = running.agent.pipelines[0]
        assert isinstance(serving, DetectionPipeline)
        before = serving.detector
        update_to_v2(broker, site, sub, SSD.read_bytes())
        assert serving.detector is not before
        # The detector reads the new model (with interpreter workers, each runs a copy).
        assert serving.detector.model.sha256 == serving.model.sha256
        assert serving.model_info.version == "2"
        # The heartbeat after the swap: the new model, still the two dogs.
        sub.wait_for(lambda s: s.on("/yard/event")[-1].json()["model"]["version"] == "2")
        last = sub.on("/yard/event")[-1].json()
        assert last["decision"] == "dog:2"
        assert serving.stats.model_errors == 0
    finally:
        running.close()
        sub.close()


def test_an_audio_update_rebuilds_the_listener(
    broker: Mosquitto, tmp_path: Path, site: Site, server: StaticServer, ca: CA
) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    shutil.copy(WAKE / "okay_nabu_2.wav", recordings / "okay_nabu_2.wav")
    pipeline = {
        "name": "voice",
        "model": str(WAKE / "okay_nabu.json"),
        "source": {  # at the pace it was recorded: one event every 2 s
            "kind": "audio",
            "pattern": str(recordings / "*.wav"),
            "loop": True,
            "realtime": True,
        },
        "policy": {"kind": "wakeword", "refractory": 0.5},
    }
    sub = Subscriber(broker.port, "edge/dev1/#")
    running = Running(config(broker, tmp_path, server, site, ca, pipeline))
    try:
        sub.wait_for(lambda s: len(s.on("/voice/event")) >= 1)
        serving = running.agent.pipelines[0]
        assert isinstance(serving, ListeningPipeline)
        before = serving.listener
        update_to_v2(broker, site, sub, (WAKE / "okay_nabu.tflite").read_bytes())
        assert serving.listener is not before
        assert serving.listener.policy is not None
        # The word and cutoff still come from the manifest the pipeline was configured with.
        assert serving.listener.policy.options.word == "okay nabu"
        assert serving.listener.policy.options.probability_cutoff == 0.97
        sub.wait_for(lambda s: s.on("/voice/event")[-1].json()["model"]["version"] == "2")
        assert sub.on("/voice/event")[-1].json()["word"] == "okay nabu"
    finally:
        running.close()
        sub.close()

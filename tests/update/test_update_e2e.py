"""A model update as an operator and a device live it: keys, manifest, signature
and model on a real HTTPS server; a running agent told over MQTT to check; the
new model swapped in without a restart, then committed or rolled back."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest

from edge_agent.app.agent import Agent
from edge_agent.config.settings import load_settings
from edge_agent.sources.base import Frame
from tests.broker import Mosquitto
from tests.conftest import BROKEN, DEMO_MODELS
from tests.subscriber import Subscriber
from tests.update.fixtures import Site
from tests.update.servers import CA, StaticServer

pytestmark = pytest.mark.integration

SHAPES = DEMO_MODELS / "shapes_int8.tflite"


def agent_config(
    broker: Mosquitto, tmp_path: Path, server: StaticServer, site: Site, ca: CA
) -> dict[str, Any]:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(40):
        sample = DEMO_MODELS / f"samples/camera/frame_{i:03d}.jpg"
        (frames / f"{i:03d}.jpg").write_bytes(sample.read_bytes())
    return {
        "device_id": "dev1",
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "update": {
            "enabled": True,
            "manifest_url": server.url("/manifest.json"),
            "keys": [str(site.public())],
            "ca_file": str(ca.cert_file),
            "probation_inferences": 30,
            "interval": 3600,
        },
        "pipelines": [
            {
                "name": "cam",
                "model": str(SHAPES),
                "model_name": "shapes",
                "model_version": "1",
                "labels": str(DEMO_MODELS / "shapes_labels.txt"),
                "source": {
                    "kind": "files",
                    "pattern": str(frames / "*.jpg"),
                    "loop": True,
                    "fps": 50,
                },
                "policy": {"kind": "classification", "threshold": 0.6, "debounce": 2},
            }
        ],
    }


class Running:
    def __init__(self, config: dict[str, Any]) -> None:
        self.agent = Agent(load_settings(None, config))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.agent.run, args=(self.stop,))
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def statuses(sub: Subscriber) -> list[str]:
    return [m.json()["state"] for m in sub.messages if m.topic == "edge/dev1/update"]


def ask_for_update(broker: Mosquitto) -> None:
    mqtt_publish.single("edge/dev1/cmd/update", b"", hostname="127.0.0.1", port=broker.port)


def test_a_signed_update_is_swapped_in_and_committed(
    broker: Mosquitto, tmp_path: Path, site: Site, server: StaticServer, ca: CA
) -> None:
    sub = Subscriber(broker.port, "edge/dev1/#")
    running = Running(agent_config(broker, tmp_path, server, site, ca))
    try:
        sub.wait_for(lambda s: len(s.on("/cam/event")) >= 2)
        site.publish(SHAPES.read_bytes() + b"\0" * 16, version=2)  # same network, new bytes
        ask_for_update(broker)
        sub.wait_for(lambda s: "committed" in statuses(s), timeout=30)
        pipeline = running.agent.pipelines[0]
        assert pipeline.model_info.version == "2"
        assert pipeline.stats.model_errors == 0
        sub.wait_for(lambda s: s.on("/cam/event")[-1].json()["model"]["version"] == "2")
    finally:
        running.close()
        sub.close()
    states = statuses(sub)
    assert states.index("downloading") < states.index("verifying") < states.index("installed")
    assert states.index("installed") < states.index("committed")
    trusted = json.loads((tmp_path / "state/updates/state.json").read_text())
    assert "2" in json.dumps(trusted)


def test_a_model_that_does_not_load_is_rejected_and_the_old_one_keeps_serving(
    broker: Mosquitto, tmp_path: Path, site: Site, server: StaticServer, ca: CA
) -> None:
    sub = Subscriber(broker.port, "edge/dev1/#")
    running = Running(agent_config(broker, tmp_path, server, site, ca))
    try:
        sub.wait_for(lambda s: len(s.on("/cam/event")) >= 1)
        site.publish(BROKEN.read_bytes(), version=2)  # signed, hash-correct, unloadable
        ask_for_update(broker)
        sub.wait_for(lambda s: "rejected" in statuses(s), timeout=30)
        rejected = next(m.json() for m in sub.on("dev1/update") if m.json()["state"] == "rejected")
        assert "does not load" in rejected["reason"]
        assert running.agent.pipelines[0].model_info.version == "1"
        served = running.agent.pipelines[0].stats.inferences
        sub.wait_for(lambda s: running.agent.pipelines[0].stats.inferences > served + 10)
    finally:
        running.close()
        sub.close()


def test_a_crash_during_probation_rolls_back_at_the_next_start(
    broker: Mosquitto, tmp_path: Path, site: Site, server: StaticServer, ca: CA
) -> None:
    config = agent_config(broker, tmp_path, server, site, ca)
    config["update"]["probation_inferences"] = 1_000_000  # stays on probation
    config["update"]["probation_seconds"] = 3600
    sub = Subscriber(broker.port, "edge/dev1/#")
    running = Running(config)
    try:
        site.publish(SHAPES.read_bytes() + b"\0" * 16, version=2)
        ask_for_update(broker)
        sub.wait_for(lambda s: "installed" in statuses(s), timeout=30)
        assert running.agent.pipelines[0].model_info.version == "2"
    finally:
        running.close()  # stopped before the commit: as good as a crash for the store
        sub.close()
    again = Agent(load_settings(None, config))
    try:
        assert again.pipelines[0].model_info.version == "1"  # rolled back at start-up
    finally:
        again.outbox.close()


def test_labels_that_come_with_an_update_rename_the_decisions(
    broker: Mosquitto, tmp_path: Path, site: Site, server: StaticServer, ca: CA
) -> None:
    config = agent_config(broker, tmp_path, server, site, ca)
    config["update"]["probation_inferences"] = 5
    sub = Subscriber(broker.port, "edge/dev1/#")
    running = Running(config)
    try:
        site.publish(SHAPES.read_bytes() + b"\0" * 16, version=2, labels=b"nothing\nball\nbox\n")
        ask_for_update(broker)
        sub.wait_for(lambda s: "committed" in statuses(s), timeout=30)
        sub.wait_for(lambda s: len(labels_of_version(s, "2")) >= 2)
        assert labels_of_version(sub, "2") <= {"nothing", "ball", "box"}
    finally:
        running.close()
        sub.close()
    again = Agent(load_settings(None, config))  # after a restart: the installed labels
    try:
        frame = Frame((DEMO_MODELS / "samples/camera/frame_015.jpg").read_bytes(), "test", 0.0)
        again.pipelines[0].process(frame)  # debounce = 2: the second one decides
        decision = again.pipelines[0].process(frame)
        assert decision is not None
        assert decision.label == "ball"
    finally:
        again.outbox.close()


def labels_of_version(sub: Subscriber, version: str) -> set[str]:
    events = [m.json() for m in sub.on("/cam/event")]
    return {e["label"] for e in events if e["model"]["version"] == version}

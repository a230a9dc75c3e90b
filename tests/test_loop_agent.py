"""The loop in the daemon, end to end: real models (MobileNet serving, the shapes
model in shadow), a real mosquitto, a real subscriber publishing feedback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.app.agent import Agent
from edge_agent.config.settings import load_settings

from .broker import Mosquitto
from .conftest import BROKEN, DEMO_MODELS, IMAGENET_LABELS, MOBILENET
from .subscriber import Subscriber

pytestmark = [pytest.mark.integration, pytest.mark.runtime]

SHAPES = DEMO_MODELS / "shapes_int8.tflite"
FRAMES = DEMO_MODELS / "samples" / "camera"


def config(broker: Mosquitto, state: Path, **pipeline: Any) -> dict[str, Any]:
    return {
        "device_id": "dev1",
        "state_dir": str(state),
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "keepalive": 5},
        "pipelines": [
            {
                "name": "cam",
                "model": str(MOBILENET),
                "labels": str(IMAGENET_LABELS),
                "model_version": "3",
                "source": {
                    "kind": "files",
                    "pattern": str(FRAMES / "*.jpg"),
                    "loop": True,
                    "fps": 20,
                },
                "policy": {"kind": "classification", "threshold": 0.0, "heartbeat": 0.1},
                **pipeline,
            }
        ],
    }


@pytest.fixture
def subscriber(broker: Mosquitto) -> Iterator[Subscriber]:
    sub = Subscriber(broker.port, "edge/#")
    yield sub
    sub.close()


@pytest.fixture
def feedback(broker: Mosquitto) -> Iterator[mqtt.Client]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="truth-teller")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


class Running:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.stop = threading.Event()
        self.thread = threading.Thread(target=agent.run, args=(self.stop,))

    def __enter__(self) -> Agent:
        self.thread.start()
        return self.agent

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def wait(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met")


def sidecars(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_bytes()) for p in sorted(folder.glob("*.json"))]


def test_capture_shadow_and_feedback_in_the_daemon(
    broker: Mosquitto, subscriber: Subscriber, feedback: mqtt.Client, tmp_path: Path
) -> None:
    cfg = config(
        broker,
        tmp_path / "state",
        capture={"enabled": True, "on_change": True, "on_disagreement": True, "per_hour": 1000},
        shadow={
            "model": str(SHAPES),
            "labels": str(DEMO_MODELS / "shapes_labels.txt"),
            "version": "9",
            "every": 2,
            "report_interval": 1,
        },
        feedback={"enabled": True, "window": 6, "min_labelled": 4, "threshold": 0.5},
    )
    agent = Agent(load_settings(None, cfg))
    answered: set[str] = set()

    def answer(wrong: bool, count: int) -> None:
        """Tell the truth about `count` events not answered yet."""
        sent = 0
        while sent < count:
            fresh = [
                e
                for e in (m.json() for m in subscriber.on("/cam/event"))
                if e["id"] not in answered
            ]
            for event in fresh[: count - sent]:
                truth = "not-" + event["decision"] if wrong else event["decision"]
                feedback.publish(
                    "edge/dev1/cam/feedback", json.dumps({"id": event["id"], "truth": truth}), qos=1
                )
                answered.add(event["id"])
                sent += 1
            time.sleep(0.05)

    def alerts() -> list[dict[str, Any]]:
        return [m.json() for m in subscriber.on("/cam/alert")]

    with Running(agent):
        answer(wrong=True, count=5)
        wait(lambda: any(a["state"] == "accuracy" for a in alerts()))
        answer(wrong=False, count=8)
        wait(lambda: any(a["state"] == "clear" for a in alerts()))
        wait(lambda: any(m.json()["compared"] >= 3 for m in subscriber.on("/cam/shadow")))
        snap = agent.telemetry_snapshot()

    accuracy = [a for a in alerts() if a["measure"] == "accuracy"]
    assert [a["state"] for a in accuracy] == ["accuracy", "clear"]  # one episode
    assert accuracy[0]["score"] < 0.5 <= accuracy[1]["score"]
    assert accuracy[0]["worst"] == "3"  # the model version it was measured on

    shadow = list(subscriber.on("/cam/shadow"))[-1]
    assert shadow.qos == 0
    report = shadow.json()
    assert report["serving"]["version"] == "3"
    assert report["shadow"]["version"] == "9"
    assert report["agreement"] == 0.0  # ImageNet and shapes labels share no name
    assert report["latency_ms"]["serving"] > 0
    assert report["latency_ms"]["shadow"] > 0
    assert (report["state"], report["errors"]) == ("running", 0)

    cam = snap["pipelines"]["cam"]
    assert cam["accuracy"]["versions"]["3"]["labelled"] == 6  # the window
    assert cam["capture"]["kept"] >= 5
    assert snap["samples"]["stopped"] is None
    kept = sidecars(tmp_path / "state" / "samples")
    why = {w for s in kept for w in s["why"]}
    assert {"wrong", "disagreement"} <= why
    wrong = [s for s in kept if "wrong" in s["why"]]
    assert len(wrong) == 5
    frames = {p.read_bytes() for p in FRAMES.glob("*.jpg")}
    for side in kept:
        assert side["device"] == "dev1"
        assert side["model"]["version"] == "3"
        assert (tmp_path / "state" / "samples" / side["input"]).read_bytes() in frames
    for side in wrong:
        assert side["truth"] == "not-" + side["decision"]["state"]
        assert side["outputs"]["top"][0]["label"]  # the model's top-k travel with it
    assert any(s["shadow"]["model"]["version"] == "9" for s in kept if "shadow" in s)


def test_a_shadow_that_cannot_load_is_dropped_and_serving_goes_on(
    broker: Mosquitto, subscriber: Subscriber, tmp_path: Path
) -> None:
    cfg = config(broker, tmp_path / "state", shadow={"model": str(BROKEN), "every": 1})
    agent = Agent(load_settings(None, cfg))
    with Running(agent):
        wait(lambda: len(subscriber.on("/cam/event")) >= 3)
        snap = agent.telemetry_snapshot()
    shadow = snap["pipelines"]["cam"]["shadow"]
    assert shadow["state"] == "dropped"
    assert "cannot allocate tensors" in shadow["reason"]
    assert snap["pipelines"]["cam"]["errors"] == 0

"""The daemon end to end: real models, real sources, a real mosquitto, a real
subscriber. What is asserted is what a consumer of the topics receives."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.app.agent import Agent
from edge_agent.config.settings import load_settings

from .broker import Mosquitto
from .conftest import DEMO_MODELS
from .subscriber import Subscriber

pytestmark = pytest.mark.integration

SHAPES = DEMO_MODELS / "shapes_int8.tflite"
FRAMES = DEMO_MODELS / "samples" / "camera"
EMPTY, CIRCLE, SQUARE = (FRAMES / f"frame_{i:03d}.jpg" for i in (0, 15, 30))
EVENT_FIELDS = {
    "v",
    "device",
    "pipeline",
    "seq",
    "id",
    "ts",
    "decision",
    "score",
    "previous",
    "reason",
    "label",
    "model",
}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def camera_config(
    broker: Mosquitto, state_dir: Path, source: dict[str, Any], **policy: Any
) -> dict[str, Any]:
    return {
        "device_id": "dev1",
        "state_dir": str(state_dir),
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "keepalive": 5},
        "pipelines": [
            {
                "name": "cam",
                "model": str(SHAPES),
                "labels": str(DEMO_MODELS / "shapes_labels.txt"),
                "model_version": "7",
                "source": source,
                "policy": {
                    "kind": "classification",
                    "threshold": 0.6,
                    "default_state": "empty",
                    **policy,
                },
            }
        ],
    }


def run_to_end(config: dict[str, Any]) -> Agent:
    agent = Agent(load_settings(None, config))
    agent.run(threading.Event(), until_done=True)
    return agent


@pytest.fixture
def subscriber(broker: Mosquitto) -> Iterator[Subscriber]:
    sub = Subscriber(broker.port, "edge/#")
    yield sub
    sub.close()


def write_scene(folder: Path, scene: list[tuple[Path, int]]) -> str:
    folder.mkdir()
    index = 0
    for frame, count in scene:
        for _ in range(count):
            (folder / f"{index:04d}.jpg").write_bytes(frame.read_bytes())
            index += 1
    return str(folder / "*.jpg")


def events(sub: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in sub.on("/event")]


def test_events_arrive_with_the_documented_payload(
    broker: Mosquitto, subscriber: Subscriber, tmp_path: Path
) -> None:
    source = {"kind": "files", "pattern": str(FRAMES / "*.jpg")}
    agent = run_to_end(camera_config(broker, tmp_path / "state", source, debounce=2))
    subscriber.wait_for(lambda s: len(s.on("/event")) >= 4)
    received = events(subscriber)
    assert [e["decision"] for e in received] == ["empty", "circle", "empty", "square"]
    assert [e["previous"] for e in received] == [None, "empty", "circle", "empty"]
    assert [e["seq"] for e in received] == [1, 2, 3, 4]
    assert len({e["id"] for e in received}) == 4
    sha = hashlib.sha256(SHAPES.read_bytes()).hexdigest()[:12]
    for event in received:
        assert set(event) == EVENT_FIELDS
        assert event["v"] == 1
        assert (event["device"], event["pipeline"]) == ("dev1", "cam")
        assert TS.match(event["ts"])
        assert event["model"] == {"name": "shapes_int8", "version": "7", "sha256": sha}
        assert event["reason"] == "change"
        assert 0.6 <= event["score"] <= 1.0
    assert all(m.topic == "edge/dev1/cam/event" and m.qos == 1 for m in subscriber.on("/event"))
    assert agent.pipelines[0].stats.inferences == 40


def test_state_and_status_are_retained(
    broker: Mosquitto, subscriber: Subscriber, tmp_path: Path
) -> None:
    source = {"kind": "files", "pattern": str(FRAMES / "*.jpg")}
    run_to_end(camera_config(broker, tmp_path / "state", source, debounce=2))
    subscriber.wait_for(lambda s: len(s.on("/event")) >= 4)
    late = Subscriber(broker.port, "edge/#", client_id="late-comer")
    try:
        late.wait_for(lambda s: bool(s.on("/state")) and bool(s.on("/status")))
        (state,) = late.on("/cam/state")
        assert state.retain
        payload = state.json()
        assert payload["state"] == "square"
        assert payload["inputs"] == 40
        assert payload["events"] == 4
        assert payload["bytes_in"] == sum(p.stat().st_size for p in FRAMES.glob("*.jpg"))
        assert payload["bandwidth_ratio"] > 10
        (status,) = late.on("/status")
        assert status.retain
        assert status.payload == b"offline"  # said on a clean stop
    finally:
        late.close()


def test_seq_continues_after_a_restart(
    broker: Mosquitto, subscriber: Subscriber, tmp_path: Path
) -> None:
    source = {"kind": "files", "pattern": str(FRAMES / "*.jpg")}
    config = camera_config(broker, tmp_path / "state", source, debounce=2)
    run_to_end(config)
    run_to_end(config)
    subscriber.wait_for(lambda s: len(s.on("/event")) >= 8)
    assert [e["seq"] for e in events(subscriber)] == list(range(1, 9))


def test_300_frames_with_3_scenes_give_exactly_3_events(
    broker: Mosquitto, subscriber: Subscriber, tmp_path: Path
) -> None:
    pattern = write_scene(tmp_path / "frames", [(EMPTY, 100), (CIRCLE, 100), (SQUARE, 100)])
    source = {"kind": "files", "pattern": pattern}
    agent = run_to_end(camera_config(broker, tmp_path / "state", source))
    assert agent.pipelines[0].stats.inferences == 300
    subscriber.wait_for(lambda s: len(s.on("/cam/state")) >= 3)
    assert [e["decision"] for e in events(subscriber)] == ["empty", "circle", "square"]


def test_heartbeats_repeat_the_state_between_changes(
    broker: Mosquitto, subscriber: Subscriber, tmp_path: Path
) -> None:
    pattern = write_scene(tmp_path / "frames", [(EMPTY, 60), (CIRCLE, 60)])
    source = {"kind": "files", "pattern": pattern, "fps": 40}  # 3 s of input
    run_to_end(camera_config(broker, tmp_path / "state", source, heartbeat=0.5))
    subscriber.wait_for(lambda s: len(s.on("/cam/state")) >= 4)
    received = events(subscriber)
    changes = [e for e in received if e["reason"] == "change"]
    beats = [e for e in received if e["reason"] == "heartbeat"]
    assert [e["decision"] for e in changes] == ["empty", "circle"]
    assert 3 <= len(beats) <= 7  # about one per 0.5 s over 3 s
    assert all(e["decision"] == e["previous"] for e in beats)
    assert [e["seq"] for e in received] == list(range(1, len(received) + 1))


def test_bad_frames_are_counted_and_skipped(
    broker: Mosquitto, subscriber: Subscriber, tmp_path: Path
) -> None:
    pattern = write_scene(tmp_path / "frames", [(EMPTY, 5), (CIRCLE, 5)])
    (tmp_path / "frames" / "0002.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "frames" / "0003.jpg").write_bytes(b"")
    source = {"kind": "files", "pattern": pattern}
    agent = run_to_end(camera_config(broker, tmp_path / "state", source))
    subscriber.wait_for(lambda s: len(s.on("/event")) >= 2)
    assert [e["decision"] for e in events(subscriber)] == ["empty", "circle"]
    pipeline = agent.pipelines[0]
    assert (
        pipeline.stats.inferences + pipeline.stats.input_errors + pipeline.source.stats.errors == 10
    )
    assert pipeline.stats.input_errors + pipeline.source.stats.errors == 2
    assert pipeline.state_payload()["errors"] == 2


def test_refused_events_go_to_dead_letters_and_others_flow(tmp_path: Path) -> None:
    """An ACL forbids one pipeline's event topic: mosquitto answers PUBACK 0x87
    (MQTT 5); that pipeline's events are set aside with the reason, not retried,
    and the other pipeline is unaffected."""
    folder = tmp_path / "broker"
    folder.mkdir()
    acl = folder / "acl"
    acl.write_text("topic deny edge/dev1/cam/event\ntopic readwrite #\n", encoding="utf-8")
    server = Mosquitto(folder, f"acl_file {acl}")
    server.start()
    sub = Subscriber(server.port, "edge/#")
    try:
        config = camera_config(
            server,
            tmp_path / "state",
            {"kind": "files", "pattern": str(FRAMES / "*.jpg")},
            debounce=2,
        )
        second = dict(config["pipelines"][0], name="cam2")
        config["pipelines"].append(second)
        agent = Agent(load_settings(None, config))
        agent.run(threading.Event(), until_done=True)
        sub.wait_for(lambda s: len(s.on("/cam2/event")) >= 4)
        assert sub.on("/cam/event") == []
        assert agent.dispatcher.refused == 4
        with sqlite3.connect(tmp_path / "state" / "outbox.db") as db:
            reasons = db.execute("SELECT topic, reason FROM dead_letters").fetchall()
            assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
        assert reasons == [("edge/dev1/cam/event", "Not authorized")] * 4
    finally:
        sub.close()
        server.stop()


def test_mqtt_311_works_too(broker: Mosquitto, subscriber: Subscriber, tmp_path: Path) -> None:
    config = camera_config(
        broker, tmp_path / "state", {"kind": "files", "pattern": str(FRAMES / "*.jpg")}, debounce=2
    )
    config["mqtt"]["protocol"] = "3.1.1"
    run_to_end(config)
    subscriber.wait_for(lambda s: len(s.on("/event")) >= 4)
    assert [e["seq"] for e in events(subscriber)] == [1, 2, 3, 4]


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    folder = tmp_path / "broker"
    folder.mkdir()
    passwords = folder / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "cam", "s3cret"], check=True)
    passwords.chmod(0o644)
    server = Mosquitto(folder, f"password_file {passwords}")
    server.config.write_text(
        server.config.read_text().replace("allow_anonymous true", "allow_anonymous false")
    )
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(("password", "delivered"), [("s3cret", True), ("wrong", False)])
def test_username_and_password(
    password_broker: Mosquitto,
    tmp_path: Path,
    password: str,
    delivered: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = camera_config(
        password_broker,
        tmp_path / "state",
        {"kind": "files", "pattern": str(FRAMES / "*.jpg")},
        debounce=2,
    )
    config["mqtt"].update(username="cam", password=password)
    agent = run_to_end(config)
    with sqlite3.connect(agent.outbox.path) as db:  # what shutdown left on disk
        waiting = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    if delivered:
        assert waiting == 0
    else:
        assert waiting == 4  # kept for when the credentials are fixed
        assert "refused the connection: Not authorized" in caplog.text


def test_home_assistant_discovery_announces_and_removes_entities(
    broker: Mosquitto, tmp_path: Path
) -> None:
    source = {"kind": "files", "pattern": str(FRAMES / "*.jpg")}
    config = camera_config(broker, tmp_path / "state", source, debounce=2)
    config["homeassistant"] = {"enabled": True}
    run_to_end(config)
    seen = Subscriber(broker.port, "homeassistant/#", client_id="home-assistant")
    try:
        seen.wait_for(lambda s: len(s.messages) >= 3)
        configs = {m.topic: m.json() for m in seen.messages}
        state = configs["homeassistant/sensor/dev1/cam_state/config"]
        assert state["state_topic"] == "edge/dev1/cam/state"
        assert state["availability_topic"] == "edge/dev1/status"
        assert all(m.retain for m in seen.messages)
    finally:
        seen.close()
    config["homeassistant"] = {"enabled": False}
    run_to_end(config)  # turned off: the entities are removed
    late = Subscriber(broker.port, "homeassistant/#", client_id="home-assistant-2")
    try:
        time.sleep(1.0)
        assert late.messages == []  # no retained config is left
    finally:
        late.close()

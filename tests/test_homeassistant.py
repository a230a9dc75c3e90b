"""Home Assistant MQTT discovery: the configs (pure), the announcer with a fake sink,
and what a subscriber to `homeassistant/#` sees on a real mosquitto."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.publish as mqtt_publish
import pytest

from edge_agent.errors import PublishError
from edge_agent.mqtt.homeassistant import (
    Discovery,
    EntitySpec,
    classification_spec,
    discovery_configs,
    node_id,
    status_topic,
    threshold_spec,
)
from edge_agent.mqtt.payloads import Topics
from edge_agent.mqtt.publisher import MqttOptions, MqttPublisher

from .broker import Mosquitto
from .subscriber import Subscriber

DOOR = threshold_spec("door", on_state="open", off_state="closed")
CAM = classification_spec(
    "cam", states={"circle": "ball", "square": "box"}, default_state="empty"
)  # three states: a sensor
CONFIG_TOPIC = re.compile(
    r"^homeassistant/(binary_sensor|sensor)/[a-zA-Z0-9_-]+/[a-zA-Z0-9_-]+/config$"
)
COMMON_FIELDS = {
    "name",
    "unique_id",
    "object_id",
    "default_entity_id",
    "state_topic",
    "value_template",
    "availability_topic",
    "payload_available",
    "payload_not_available",
    "dev",
    "origin",
}


def configs(*entities: EntitySpec, device: str = "dev1") -> dict[str, bytes]:
    return discovery_configs(device_id=device, prefix="edge", entities=entities, sw_version="9.9")


def decoded(topic_configs: dict[str, bytes]) -> dict[str, dict[str, object]]:
    return {topic: json.loads(payload) for topic, payload in topic_configs.items()}


# -- discovery_configs: pure ---------------------------------------------------


def test_two_states_make_a_binary_sensor_more_make_a_sensor() -> None:
    found = decoded(configs(DOOR, CAM, EntitySpec("raw")))
    assert set(found) == {
        "homeassistant/binary_sensor/dev1/door_state/config",
        "homeassistant/sensor/dev1/door_model_version/config",
        "homeassistant/sensor/dev1/door_latency_p50/config",
        "homeassistant/sensor/dev1/cam_state/config",
        "homeassistant/sensor/dev1/cam_model_version/config",
        "homeassistant/sensor/dev1/cam_latency_p50/config",
        "homeassistant/sensor/dev1/raw_state/config",
        "homeassistant/sensor/dev1/raw_model_version/config",
        "homeassistant/sensor/dev1/raw_latency_p50/config",
    }
    door = found["homeassistant/binary_sensor/dev1/door_state/config"]
    assert (door["payload_on"], door["payload_off"]) == ("ON", "OFF")
    assert door["value_template"] == (
        "{{ 'ON' if value_json.state == \"open\" else "
        "('None' if value_json.state is none else 'OFF') }}"
    )
    cam = found["homeassistant/sensor/dev1/cam_state/config"]
    assert cam["value_template"] == "{{ value_json.state }}"
    assert "payload_on" not in cam


def test_specs_from_policy_settings() -> None:
    assert EntitySpec("door", ("open", "closed"), "open") == DOOR
    assert DOOR.binary
    person = classification_spec("p", states={"person": "occupied"}, default_state="clear")
    assert person == EntitySpec("p", ("clear", "occupied"), "occupied")
    assert person.binary
    assert CAM.states == ("ball", "box", "empty")
    assert not CAM.binary
    assert classification_spec("p", states=None, default_state="none") == EntitySpec("p")
    # Two states but no ON among them: which one is ON is unknown, so a sensor.
    assert not EntitySpec("p", ("a", "b"), None).binary
    assert not EntitySpec("p", ("a", "b"), "c").binary


def test_every_documented_field_is_present() -> None:
    for topic, config in decoded(configs(DOOR, CAM)).items():
        assert set(config) >= COMMON_FIELDS, topic
        assert config["availability_topic"] == "edge/dev1/status"
        assert (config["payload_available"], config["payload_not_available"]) == (
            "online",
            "offline",
        )
        assert config["dev"] == {
            "identifiers": ["edge_agent_dev1"],
            "name": "dev1",
            "manufacturer": "edge-agent",
            "model": "edge-agent",
            "sw_version": "9.9",
        }
        assert config["origin"] == {"name": "edge-agent", "sw_version": "9.9"}
        component = topic.split("/")[1]
        assert config["default_entity_id"] == f"{component}.{config['object_id']}"
        pipeline = "door" if "/door_" in topic else "cam"
        if topic.endswith("_state/config"):
            assert config["name"] == pipeline
            assert config["state_topic"] == f"edge/dev1/{pipeline}/state"
            assert config["json_attributes_topic"] == config["state_topic"]
            assert config["unique_id"] == f"edge_agent_dev1_{pipeline}_state"
        elif topic.endswith("_model_version/config"):
            assert config["state_topic"] == f"edge/dev1/{pipeline}/state"
            assert config["value_template"] == "{{ value_json.model.version }}"
            assert config["entity_category"] == "diagnostic"
        else:
            assert config["state_topic"] == "edge/dev1/telemetry"
            assert config["value_template"] == (
                f'{{{{ value_json.pipelines.get("{pipeline}", {{}})'
                ".get('latency_ms', {}).get('p50') }}"
            )
            assert config["unit_of_measurement"] == "ms"
            assert config["state_class"] == "measurement"
            assert config["entity_category"] == "diagnostic"


def test_payloads_are_compact_json() -> None:
    for payload in configs(DOOR, CAM).values():
        again = json.dumps(json.loads(payload), separators=(",", ":"), ensure_ascii=False)
        assert payload == again.encode()


def test_unique_ids_are_stable_and_distinct() -> None:
    first, second = configs(DOOR, CAM), configs(DOOR, CAM)
    assert first == second
    ids = [c["unique_id"] for c in decoded(first).values()]
    assert len(set(ids)) == len(ids) == 6
    elsewhere = [c["unique_id"] for c in decoded(configs(DOOR, CAM, device="dev2")).values()]
    assert not set(ids) & set(elsewhere)


def test_topics_are_sanitised_and_the_state_topics_are_not() -> None:
    found = decoded(configs(EntitySpec("a.b c"), device="gate.2@lab"))
    assert node_id("gate.2@lab") == "gate_2_lab"
    for topic, config in found.items():
        assert CONFIG_TOPIC.match(topic), topic
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", str(config["object_id"]))
        assert str(config["availability_topic"]) == "edge/gate.2@lab/status"
    state = found["homeassistant/sensor/gate_2_lab/a_b_c_state/config"]
    assert state["state_topic"] == Topics("edge", "gate.2@lab").state("a.b c")


def test_names_that_clash_once_sanitised_are_refused() -> None:
    with pytest.raises(ValueError, match="clash"):
        configs(EntitySpec("a.b"), EntitySpec("a_b"))


def test_discovery_prefix_and_no_latency_without_telemetry() -> None:
    found = discovery_configs(
        device_id="dev1",
        prefix="edge",
        discovery_prefix="ha",
        entities=[DOOR],
        sw_version="1",
        latency=False,
    )
    assert sorted(found) == [
        "ha/binary_sensor/dev1/door_state/config",
        "ha/sensor/dev1/door_model_version/config",
    ]
    assert status_topic("ha") == "ha/status"


# -- Discovery with a fake sink --------------------------------------------------


class FakeSink:
    def __init__(self, fail_on: str | None = None) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []
        self.fail_on = fail_on

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        if topic == self.fail_on:
            raise PublishError("queue full")
        self.sent.append((topic, payload, qos, retain))
        return len(self.sent)


class FakeTimer:
    def __init__(self, interval: float, function: Callable[[], None]) -> None:
        self.interval, self.function = interval, function
        self.started = self.cancelled = False

    def start(self) -> None:
        self.started = True

    def cancel(self) -> None:
        self.cancelled = True


def fake_timers() -> tuple[list[FakeTimer], Callable[[float, Callable[[], None]], FakeTimer]]:
    made: list[FakeTimer] = []

    def factory(interval: float, function: Callable[[], None]) -> FakeTimer:
        made.append(FakeTimer(interval, function))
        return made[-1]

    return made, factory


def test_announce_publishes_retained_and_records_the_topics(tmp_path: Path) -> None:
    sink, announced = FakeSink(), tmp_path / "ha.json"
    wanted = configs(DOOR)
    Discovery(sink=sink, configs=wanted, announced_file=announced).announce()
    assert sink.sent == [(t, p, 1, True) for t, p in wanted.items()]
    assert json.loads(announced.read_bytes()) == sorted(wanted)


def test_remove_stale_deletes_what_is_gone_then_everything(tmp_path: Path) -> None:
    sink, announced = FakeSink(), tmp_path / "ha.json"
    both, door = configs(DOOR, CAM), configs(DOOR)
    Discovery(sink=sink, configs=both, announced_file=announced).announce()
    sink.sent.clear()
    # A restart without the cam pipeline:
    later = Discovery(sink=sink, configs=door, announced_file=announced)
    assert later.remove_stale(door) == sorted(set(both) - set(door))
    assert sink.sent == [(t, b"", 1, True) for t in sorted(set(both) - set(door))]
    assert json.loads(announced.read_bytes()) == sorted(door)
    sink.sent.clear()
    assert later.remove_stale(door) == []  # nothing twice
    assert sink.sent == []
    # Discovery turned off:
    assert Discovery(sink=sink, configs={}, announced_file=announced).remove_stale({}) == sorted(
        door
    )
    assert {t for t, p, _, _ in sink.sent if p == b""} == set(door)
    assert not announced.exists()


def test_an_unreadable_record_is_ignored(tmp_path: Path) -> None:
    announced = tmp_path / "ha.json"
    announced.write_text("{not json")
    sink = FakeSink()
    discovery = Discovery(sink=sink, configs=configs(DOOR), announced_file=announced)
    assert discovery.remove_stale(configs(DOOR)) == []
    discovery.announce()
    assert json.loads(announced.read_bytes()) == sorted(configs(DOOR))


def test_a_refused_publish_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wanted = configs(DOOR)
    refused = sorted(wanted)[0]
    sink = FakeSink(fail_on=refused)
    Discovery(sink=sink, configs=wanted, announced_file=tmp_path / "ha.json").announce()
    assert {t for t, *_ in sink.sent} == set(wanted) - {refused}
    assert "queue full" in caplog.text


def test_homeassistant_online_schedules_one_announce(tmp_path: Path) -> None:
    made, factory = fake_timers()
    sink = FakeSink()
    discovery = Discovery(
        sink=sink,
        configs=configs(DOOR),
        announced_file=tmp_path / "ha.json",
        delay=lambda: 3.5,
        timer_factory=factory,
    )
    discovery.on_homeassistant_status(b"offline")
    assert made == []
    discovery.on_homeassistant_status(b"online")
    discovery.on_homeassistant_status(b"online")  # merged into the pending one
    assert len(made) == 1
    assert (made[0].interval, made[0].started) == (3.5, True)
    made[0].function()
    assert len(sink.sent) == 3
    discovery.on_homeassistant_status(b"online")  # a later start: a new timer
    assert len(made) == 2
    discovery.cancel()
    assert made[1].cancelled
    made[1].function()  # fired anyway (the race): nothing is sent
    discovery.on_homeassistant_status(b"online")
    assert len(made) == 2
    assert len(sink.sent) == 3


# -- a real mosquitto, a real publisher -------------------------------------------

TOPICS = Topics("edge", "dev1")


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[MqttPublisher]:
    options = MqttOptions(
        host="127.0.0.1", port=broker.port, client_id="dev1", topics=TOPICS, keepalive=5
    )
    made = MqttPublisher(options)
    yield made
    made.stop(timeout=2)


def retained_config_topics(port: int) -> dict[str, bytes]:
    """What a subscriber arriving now gets retained under homeassistant/: a marker
    published after it subscribed arrives after every retained message."""
    late = Subscriber(port, "homeassistant/#", client_id="late")
    try:
        mqtt_publish.single("homeassistant/marker", b"x", qos=1, hostname="127.0.0.1", port=port)
        late.wait_for(lambda s: bool(s.on("/marker")), timeout=5)
        return {m.topic: m.payload for m in late.messages if m.retain and m.payload}
    finally:
        late.close()


@pytest.mark.integration
def test_configs_are_retained_on_the_broker(
    broker: Mosquitto, publisher: MqttPublisher, tmp_path: Path
) -> None:
    wanted = configs(DOOR, CAM)
    early = Subscriber(broker.port, "homeassistant/#", client_id="early")
    try:
        publisher.start()
        assert publisher.connected.wait(10)
        Discovery(sink=publisher, configs=wanted, announced_file=tmp_path / "ha.json").announce()
        early.wait_for(lambda s: len(s.messages) >= len(wanted), timeout=10)
        assert {m.topic: m.payload for m in early.messages} == wanted
        assert {m.qos for m in early.messages} == {1}
    finally:
        early.close()
    assert retained_config_topics(broker.port) == wanted


@pytest.mark.integration
def test_homeassistant_online_makes_the_device_announce_again(
    broker: Mosquitto, publisher: MqttPublisher, tmp_path: Path
) -> None:
    wanted = configs(DOOR)
    asked = threading.Event()

    def delay() -> float:
        asked.set()
        return 0.2

    discovery = Discovery(
        sink=publisher, configs=wanted, announced_file=tmp_path / "ha.json", delay=delay
    )
    publisher.on_command(status_topic(), discovery.on_homeassistant_status)
    watcher = Subscriber(broker.port, "homeassistant/+/dev1/#", client_id="watcher")
    try:
        publisher.start()
        assert publisher.connected.wait(10)
        discovery.announce()
        watcher.wait_for(lambda s: len(s.messages) == len(wanted), timeout=10)
        # Home Assistant (re)starts: its birth message.
        mqtt_publish.single(
            status_topic(), b"online", qos=1, hostname="127.0.0.1", port=broker.port
        )
        watcher.wait_for(lambda s: len(s.messages) == 2 * len(wanted), timeout=10)
        assert asked.is_set()
        again = watcher.messages[len(wanted) :]
        assert {m.topic: m.payload for m in again} == wanted
    finally:
        discovery.cancel()
        watcher.close()


@pytest.mark.integration
def test_turning_discovery_off_removes_the_entities(
    broker: Mosquitto, publisher: MqttPublisher, tmp_path: Path
) -> None:
    announced = tmp_path / "ha.json"
    wanted = configs(DOOR, CAM)
    publisher.start()
    assert publisher.connected.wait(10)
    Discovery(sink=publisher, configs=wanted, announced_file=announced).announce()
    watcher = Subscriber(broker.port, "homeassistant/#", client_id="watcher")
    try:
        watcher.wait_for(lambda s: len(s.messages) == len(wanted), timeout=10)  # retained
        # The next start, with discovery off:
        removed = Discovery(sink=publisher, configs={}, announced_file=announced).remove_stale({})
        assert removed == sorted(wanted)
        watcher.wait_for(lambda s: len([m for m in s.messages if not m.payload]) == len(wanted))
    finally:
        watcher.close()
    assert retained_config_topics(broker.port) == {}
    assert not announced.exists()

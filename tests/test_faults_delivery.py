"""Delivery under faults: a broker with persistence killed and restarted under a
QoS 1 or QoS 2 stream, and a disk that fills up under the outbox (a tmpfs, so
these need root; CI runs as root). Nothing the agent decided may go missing,
and SIGTERM must still end the agent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from .broker import Mosquitto
from .test_faults import (
    DURABLE_BROKER,
    AgentProcess,
    no_leftover_agents,  # noqa: F401 - an autouse fixture: kills agents a test left
    outbox_rows,
    toggling_frames,
    write_config,
)

pytestmark = pytest.mark.integration

EVENT_TOPIC = "edge/dev1/cam/event"


class Consumer:
    """A consumer with a persistent session (the broker queues for it while it is
    away) subscribed at `qos`; it counts unique event ids, as a de-duplicating
    consumer of an at-least-once stream would."""

    def __init__(self, port: int, qos: int) -> None:
        self.events: dict[str, int] = {}  # id -> seq
        self.received = 0
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"consumer-q{qos}", clean_session=False
        )
        self._client.reconnect_delay_set(1, 1)
        self._client.on_connect = lambda c, *_: c.subscribe(EVENT_TOPIC, qos=qos)
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port, keepalive=5)
        self._client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("subscription not acknowledged")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        event = json.loads(msg.payload)
        with self._lock:
            self.received += 1
            self.events[event["id"]] = event["seq"]

    def seqs(self) -> set[int]:
        with self._lock:
            return set(self.events.values())

    def unique(self) -> int:
        with self._lock:
            return len(self.events)

    def wait_for(self, condition: Callable[[Consumer], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self):
                return True
            time.sleep(0.1)
        return condition(self)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    folder = tmp_path / "broker"
    folder.mkdir()
    server = Mosquitto(folder, DURABLE_BROKER)
    server.start()
    yield server
    server.stop()


def qos_config(tmp_path: Path, port: int, pattern: str, qos: int, **kwargs: Any) -> Path:
    config = write_config(tmp_path, port, pattern, **kwargs)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[mqtt]\n", f"[mqtt]\nqos = {qos}\n", 1), encoding="utf-8")
    return config


def kill_after_a_delivery(broker: Mosquitto, consumer: Consumer, at_least: int) -> None:
    """SIGKILL the broker just after an event reached the consumer (they come 0.1 s
    apart): mosquitto acknowledges before it saves, so a kill in the middle of
    forwarding can lose a message on the broker's side, whatever the agent does.
    The agent's faults show after the restart, with the backlog it sends then."""
    reached = consumer.wait_for(lambda c: c.unique() >= at_least, 30)
    assert reached, f"stalled at {consumer.unique()}"
    seen = consumer.received
    assert consumer.wait_for(lambda c: c.received > seen, 5)
    time.sleep(0.02)
    broker.kill()


@pytest.mark.parametrize("qos", [1, 2])
def test_broker_killed_three_times_loses_nothing(
    durable_broker: Mosquitto, tmp_path: Path, qos: int
) -> None:
    """150 events at 10/s; the broker is SIGKILLed three times and restarted 2 s
    later each time, so 20-40 events wait for each reconnection: more than the 20
    mosquitto takes unacknowledged. A consumer de-duplicating by id sees every seq."""
    consumer = Consumer(durable_broker.port, qos)
    total = 150
    pattern = toggling_frames(tmp_path / "frames", total)
    config = qos_config(tmp_path, durable_broker.port, pattern, qos, fps=10)
    agent = AgentProcess(config, tmp_path / "a.log")
    try:
        for at_least in (15, 50, 85):
            kill_after_a_delivery(durable_broker, consumer, at_least)
            time.sleep(2)
            durable_broker.start()
        consumer.wait_for(lambda c: c.unique() >= total, timeout=20)
        missing = sorted(set(range(1, total + 1)) - consumer.seqs())
        assert not missing, f"{len(missing)} of {total} event(s) never arrived: seq {missing}"
    finally:
        consumer.close()
        assert agent.stop() == 0
    assert outbox_rows(tmp_path) == 0

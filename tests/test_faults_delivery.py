"""Delivery under faults: a broker with persistence killed and restarted under a
QoS 1 or QoS 2 stream, and a disk that fills up under the outbox (a tmpfs, so
these need root; CI runs as root). Nothing the agent decided may go missing,
and SIGTERM must still end the agent."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.app.sdnotify import Heartbeats
from edge_agent.app.supervision import Supervisor
from edge_agent.errors import OutboxError
from edge_agent.mqtt import outbox as outbox_module
from edge_agent.mqtt.delivery import Dispatcher, OutboxWriter
from edge_agent.mqtt.outbox import NewEvent, Outbox
from edge_agent.mqtt.payloads import Topics
from edge_agent.mqtt.publisher import MqttOptions, MqttPublisher

from .broker import Mosquitto, free_port
from .subscriber import Subscriber
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


# -- a full disk --------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs: a real filesystem that really fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill `disk` up, then give back `leave` bytes; delete the file to free it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def rows(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def event(n: int) -> NewEvent:
    return NewEvent("p", "edge/dev1/p/event", lambda seq: b"%d:%d" % (n, seq) + b"x" * 250, 1)


@pytest.mark.parametrize("reserve", [None, 0], ids=["space-reserved", "no-reserve"])
def test_a_full_disk_neither_inflates_the_counters_nor_drops_real_events(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch, reserve: int | None
) -> None:
    """max_events 300, 100 events stored, the disk filled while 120 more are
    decided (the writer retries), then freed: all 220 end up stored, the counters
    match the table, nothing is dropped. With no reserve the failures come from
    SQLite's own commits."""
    if reserve is not None:
        monkeypatch.setattr(outbox_module, "RESERVE_BYTES", reserve, raising=False)
    db = small_disk / "state" / "outbox.db"
    outbox = Outbox(db, max_events=300)
    committed = threading.Event()
    writer = OutboxWriter(outbox, committed.set)
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(stop,))
    thread.start()
    try:
        for n in range(100):
            writer.submit(event(n))
        assert wait_until(lambda: rows(db) == 100)
        filler = fill(small_disk)
        for n in range(100, 220):
            writer.submit(event(n))
        time.sleep(3)  # the writer tries (and fails) about three times
        assert rows(db) == 100
        assert outbox.stats().depth == 100, "a failed commit was counted"
        filler.unlink()
        assert wait_until(lambda: rows(db) == 220)
    finally:
        stop.set()
        thread.join(10)
    stats = outbox.stats()
    assert (stats.depth, stats.dropped) == (220, 0)
    assert stats.bytes == sum(len(e.payload) for e in outbox.pending(limit=1000))
    outbox.close()


def wait_until(condition: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_full_disk_during_acknowledgements_does_not_stop_delivery(
    small_disk: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk fills while events are in flight: the acks cannot be written, the
    delivery thread keeps delivering and writes them once space is back."""
    topics = Topics("edge", "dev1")
    subscriber = Subscriber(broker.port, topics.event("+"))
    publisher = MqttPublisher(
        MqttOptions(host="127.0.0.1", port=broker.port, client_id="dev1", topics=topics)
    )
    outbox = Outbox(small_disk / "state" / "outbox.db")
    dispatcher = Dispatcher(outbox, publisher)
    publisher.on_ack(dispatcher.on_ack)
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), name="delivery")
    for n in range(50):
        outbox.add_many([event(n)])
    with sqlite3.connect(small_disk / "state" / "outbox.db") as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next write must grow the WAL
    filler = fill(small_disk)
    publisher.start()
    thread.start()
    try:
        subscriber.wait_for(lambda s: len(s.messages) >= 50, timeout=20)
        time.sleep(1.5)  # acks arrived; their removal failed at least once
        assert thread.is_alive(), "the delivery thread died"
        assert "acknowledgement(s) kept in memory, retrying" in caplog.text
        assert outbox.stats().depth == 50
        filler.unlink()
        assert wait_until(lambda: outbox.stats().depth == 0), outbox.stats()
        outbox.add_many([event(50)])  # and delivery goes on
        dispatcher.wake()
        subscriber.wait_for(lambda s: len(s.messages) >= 51, timeout=10)
    finally:
        stop.set()
        thread.join(10)
        publisher.stop()
        subscriber.close()
    assert dispatcher.delivered == 51
    outbox.close()


def disk_config(tmp_path: Path, disk: Path, port: int, frames: int, loop: bool) -> Path:
    config = write_config(tmp_path, port, toggling_frames(tmp_path / "frames", frames), loop=loop)
    text = config.read_text(encoding="utf-8")
    text = text.replace(f'state_dir = "{tmp_path / "state"}"', f'state_dir = "{disk / "state"}"')
    config.write_text(text, encoding="utf-8")
    return config


def test_agent_on_a_2mb_state_dir_delivers_and_stops_on_sigterm(
    small_disk: Path, tmp_path: Path
) -> None:
    """`edge-agent run` with its state_dir on a 2 MB tmpfs and the broker up: the
    WAL must not fill the disk, every event arrives, SIGTERM ends it."""
    folder = tmp_path / "broker"
    folder.mkdir()
    server = Mosquitto(folder)
    server.start()
    consumer = Consumer(server.port, 1)
    agent = AgentProcess(
        disk_config(tmp_path, small_disk, server.port, 40, loop=True), tmp_path / "a.log"
    )
    try:
        reached = consumer.wait_for(lambda c: c.unique() >= 300, timeout=30)
        assert reached, f"{consumer.unique()} events arrived\n{agent.text()[-3000:]}"
        assert agent.stop() == 0
        last = max(consumer.seqs())
        consumer.wait_for(lambda c: c.unique() >= last, timeout=5)
        assert consumer.seqs() == set(range(1, last + 1))
    finally:
        consumer.close()
        server.stop()
    assert "Traceback" not in agent.text()


def test_agent_with_a_full_state_dir_stops_on_sigterm_and_counts_what_it_kept(
    small_disk: Path, tmp_path: Path
) -> None:
    """The broker is down and the disk full: decisions cannot be stored. SIGTERM
    still ends the agent within 30 s, and the log says how many were not stored."""
    config = disk_config(tmp_path, small_disk, free_port(), 30, loop=False)
    agent = AgentProcess(config, tmp_path / "a.log")
    assert wait_until((small_disk / "state" / "outbox.db").exists, 20)
    fill(small_disk)
    assert wait_until(lambda: agent.text().count(" -> ") >= 30, 30), agent.text()[-2000:]
    assert wait_until(lambda: "cannot store" in agent.text(), 10)
    assert agent.stop() == 0
    text = agent.text()
    assert "could not be stored in the outbox and are lost: cam: " in text, text[-3000:]
    assert "Traceback" not in text


# -- supervision --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_dead_delivery_thread_is_logged_and_starves_the_watchdog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    heartbeats = Heartbeats(clock=clock)
    threads = Supervisor(heartbeats)
    stop = threading.Event()

    def delivery(_stop: threading.Event) -> None:
        raise OutboxError("outbox: cannot acknowledge 3 event(s): disk I/O error")

    threads.start("delivery", delivery, stop, stop=stop)

    def writer(stop: threading.Event) -> None:
        stop.wait()

    threads.start("outbox-writer", writer, stop, stop=stop)
    threads.start("update", lambda: None, stop=stop)  # returns before the stop: a death
    threads.join(["delivery", "update"], timeout=5)
    clock.now = 100.0
    threads.beat_alive()
    try:
        assert set(heartbeats.silent(clock.now, 30)) == {"delivery", "update"}
        assert threads.deaths == {
            "delivery": "OutboxError: outbox: cannot acknowledge 3 event(s): disk I/O error",
            "update": "it returned before it was asked to stop",
        }
        assert "thread delivery died: OutboxError" in caplog.text
    finally:
        stop.set()
        threads.join(threads.names(), timeout=5)
    assert "outbox-writer" not in threads.deaths  # it ended because it was asked to

"""Fault injection: the agent runs as a process, a real mosquitto is killed,
frozen and restarted under it, and a QoS 1 subscriber with a persistent session
counts what actually arrives. Nothing the agent decided may go missing."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from .broker import Mosquitto
from .conftest import DEMO_MODELS, PROJECT
from .subscriber import Subscriber

pytestmark = pytest.mark.integration

EMPTY = (DEMO_MODELS / "samples/camera/frame_000.jpg").read_bytes()
CIRCLE = (DEMO_MODELS / "samples/camera/frame_015.jpg").read_bytes()
# The broker saves its state after every change, so a SIGKILL loses no session:
# what is tested is the agent, not mosquitto's own durability.
DURABLE_BROKER = "autosave_on_changes true\nautosave_interval 1\n"
KEEPALIVE = 5


def toggling_frames(folder: Path, count: int) -> str:
    """`count` frames alternating empty/circle: one decision event per frame."""
    folder.mkdir(exist_ok=True)
    for i in range(count):
        (folder / f"{i:05d}.jpg").write_bytes(CIRCLE if i % 2 else EMPTY)
    return str(folder / "*.jpg")


def write_config(
    tmp_path: Path,
    port: int,
    pattern: str,
    *,
    fps: float = 20,
    loop: bool = False,
    outbox: str = "",
) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
device_id = "dev1"
state_dir = "{tmp_path / "state"}"
[mqtt]
host = "127.0.0.1"
port = {port}
keepalive = {KEEPALIVE}
reconnect_min = 1
reconnect_max = 2
[outbox]
{outbox}
[[pipelines]]
name = "cam"
model = "{DEMO_MODELS / "shapes_int8.tflite"}"
labels = "{DEMO_MODELS / "shapes_labels.txt"}"
[pipelines.source]
kind = "files"
pattern = "{pattern}"
fps = {fps}
loop = {"true" if loop else "false"}
[pipelines.policy]
kind = "classification"
threshold = 0.6
""",
        encoding="utf-8",
    )
    return config


class AgentProcess:
    started: ClassVar[list[subprocess.Popen[bytes]]] = []  # killed after each test

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "-v", "run", "--config", str(config)],
                stdout=out,
                stderr=out,
                cwd=PROJECT,
            )
        self.started.append(self.process)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(
            next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(autouse=True)
def no_leftover_agents() -> Iterator[None]:
    yield
    while AgentProcess.started:
        process = AgentProcess.started.pop()
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    folder = tmp_path / "broker"
    folder.mkdir()
    server = Mosquitto(folder, DURABLE_BROKER)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def consumer(durable_broker: Mosquitto) -> Iterator[Subscriber]:
    sub = Subscriber(durable_broker.port, "edge/dev1/cam/event", "fault-consumer", persistent=True)
    yield sub
    sub.close()


def seqs(sub: Subscriber) -> list[int]:
    return [m.json()["seq"] for m in sub.messages]


def assert_complete(sub: Subscriber, last: int) -> None:
    """Every seq from 1 to `last` arrived; a repeated seq carries the same id."""
    ids: dict[int, str] = {}
    for message in sub.messages:
        event: dict[str, Any] = message.json()
        assert ids.setdefault(event["seq"], event["id"]) == event["id"], event
    missing = sorted(set(range(1, last + 1)) - set(ids))
    assert not missing, f"missing seq: {missing[:20]}"


def outbox_rows(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "state" / "outbox.db") as db:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def last_seq(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "state" / "outbox.db") as db:
        return int(db.execute("SELECT seq FROM seqs WHERE pipeline = 'cam'").fetchone()[0])


def counter(tmp_path: Path, name: str) -> int:
    with sqlite3.connect(tmp_path / "state" / "outbox.db") as db:
        row = db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row else 0


def test_broker_down_at_start_then_up_10s_later(
    durable_broker: Mosquitto, consumer: Subscriber, tmp_path: Path
) -> None:
    durable_broker.stop()  # the consumer's session stays on the broker's disk
    pattern = toggling_frames(tmp_path / "frames", 40)
    agent = AgentProcess(write_config(tmp_path, durable_broker.port, pattern), tmp_path / "a.log")
    try:
        time.sleep(10)
        durable_broker.start()
        consumer.wait_for(lambda s: len(set(seqs(s))) >= 40, timeout=30)
        assert_complete(consumer, 40)
    finally:
        assert agent.stop() == 0
    assert outbox_rows(tmp_path) == 0


def test_broker_killed_mid_stream_and_restarted(
    durable_broker: Mosquitto, consumer: Subscriber, tmp_path: Path
) -> None:
    pattern = toggling_frames(tmp_path / "frames", 100)
    agent = AgentProcess(write_config(tmp_path, durable_broker.port, pattern), tmp_path / "a.log")
    try:
        consumer.wait_for(lambda s: len(s.messages) >= 20)
        durable_broker.kill()
        time.sleep(2)
        durable_broker.start()
        consumer.wait_for(lambda s: len(set(seqs(s))) >= 100, timeout=40)
        assert_complete(consumer, 100)
    finally:
        assert agent.stop() == 0


def test_agent_killed_with_unacknowledged_events_then_restarted(
    durable_broker: Mosquitto, consumer: Subscriber, tmp_path: Path
) -> None:
    pattern = toggling_frames(tmp_path / "frames", 30)
    config = write_config(tmp_path, durable_broker.port, pattern, fps=0)
    durable_broker.stop()
    agent = AgentProcess(config, tmp_path / "a.log")
    deadline = time.monotonic() + 20
    while not (tmp_path / "state/outbox.db").exists() or outbox_rows(tmp_path) < 30:
        assert time.monotonic() < deadline, agent.text()
        time.sleep(0.1)
    agent.kill()  # 30 events stored, none acknowledged
    assert outbox_rows(tmp_path) == 30
    durable_broker.start()
    again = AgentProcess(config, tmp_path / "b.log")  # decides 30 more (seq 31-60)
    try:
        consumer.wait_for(lambda s: len(set(seqs(s))) >= 60, timeout=30)
        assert_complete(consumer, 60)
    finally:
        assert again.stop() == 0


def test_frozen_broker_is_detected_and_everything_arrives_after(
    durable_broker: Mosquitto, consumer: Subscriber, tmp_path: Path
) -> None:
    pattern = toggling_frames(tmp_path / "frames", 200)
    agent = AgentProcess(
        write_config(tmp_path, durable_broker.port, pattern, fps=10), tmp_path / "a.log"
    )
    try:
        consumer.wait_for(lambda s: len(s.messages) >= 10)
        durable_broker.freeze()
        frozen = time.monotonic()
        while "disconnected from" not in agent.text():
            assert time.monotonic() - frozen < 2 * KEEPALIVE + 1, "half-open link not detected"
            time.sleep(0.1)
        time.sleep(2)
        durable_broker.thaw()
        consumer.wait_for(lambda s: len(set(seqs(s))) >= 200, timeout=60)
        assert_complete(consumer, 200)
    finally:
        durable_broker.thaw()
        assert agent.stop() == 0


def test_outbox_bound_drops_the_oldest_and_memory_stays_flat(
    durable_broker: Mosquitto, consumer: Subscriber, tmp_path: Path
) -> None:
    durable_broker.stop()
    pattern = toggling_frames(tmp_path / "frames", 600)
    config = write_config(tmp_path, durable_broker.port, pattern, fps=100, outbox="max_events = 50")
    agent = AgentProcess(config, tmp_path / "a.log")
    try:
        while agent.text().count(" -> ") < 100:
            time.sleep(0.05)
        early = agent.rss_kib()
        while agent.text().count(" -> ") < 600:
            time.sleep(0.05)
        assert agent.rss_kib() - early < 5 * 1024, "memory grew while offline"
        assert outbox_rows(tmp_path) == 50
        durable_broker.start()
        consumer.wait_for(lambda s: len(set(seqs(s))) >= 50, timeout=30)
        time.sleep(1)
        assert sorted(set(seqs(consumer))) == list(range(551, 601))
    finally:
        assert agent.stop() == 0
    assert "dropped the" in agent.text()
    with sqlite3.connect(tmp_path / "state" / "outbox.db") as db:
        assert db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone() == (550,)


def test_expired_events_are_not_delivered(
    durable_broker: Mosquitto, consumer: Subscriber, tmp_path: Path
) -> None:
    durable_broker.stop()
    pattern = toggling_frames(tmp_path / "frames", 20)
    config = write_config(tmp_path, durable_broker.port, pattern, fps=0, outbox="ttl = 2")
    agent = AgentProcess(config, tmp_path / "a.log")
    try:
        while agent.text().count(" -> ") < 20:
            time.sleep(0.05)
        time.sleep(3)  # older than the ttl now
        durable_broker.start()
        # Settled by the dispatcher once connected: counted as expired, never sent.
        deadline = time.monotonic() + 30
        while counter(tmp_path, "expired") < 20:
            assert time.monotonic() < deadline, agent.text()
            time.sleep(0.1)
        assert consumer.messages == []
    finally:
        assert agent.stop() == 0
    assert outbox_rows(tmp_path) == 0
    with sqlite3.connect(tmp_path / "state" / "outbox.db") as db:
        assert db.execute("SELECT value FROM counters WHERE name = 'expired'").fetchone() == (20,)


def test_sustained_run_with_broker_restarts_loses_nothing(
    durable_broker: Mosquitto, consumer: Subscriber, tmp_path: Path
) -> None:
    pattern = toggling_frames(tmp_path / "frames", 40)
    config = write_config(tmp_path, durable_broker.port, pattern, fps=20, loop=True)
    agent = AgentProcess(config, tmp_path / "a.log")
    try:
        time.sleep(5)
        baseline = agent.rss_kib()
        started = time.monotonic()
        while time.monotonic() - started < 60:
            time.sleep(4)
            durable_broker.kill()
            time.sleep(1)
            durable_broker.start()
        grown = agent.rss_kib() - baseline
    finally:
        assert agent.stop() == 0
    last = last_seq(tmp_path)
    assert last > 800  # about 20 events/s for 65 s
    assert outbox_rows(tmp_path) == 0, "shutdown left events undelivered"
    consumer.wait_for(lambda s: len(set(seqs(s))) >= last, timeout=30)
    assert_complete(consumer, last)
    assert grown < 10 * 1024, f"RSS grew by {grown} KiB"

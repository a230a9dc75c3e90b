"""The dispatcher: unit tests against a fake broker, and one end-to-end run
through the real MqttPublisher and a real mosquitto."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import DiskFullError, PublishError
from edge_agent.mqtt import delivery
from edge_agent.mqtt.delivery import Dispatcher, OutboxWriter
from edge_agent.mqtt.outbox import NewEvent, Outbox
from edge_agent.mqtt.payloads import Topics
from edge_agent.mqtt.publisher import MqttOptions, MqttPublisher

from .broker import Mosquitto
from .subscriber import Subscriber

TOPIC = "edge/dev/p/event"
SUCCESS = ReasonCode(PacketTypes.PUBACK, identifier=0x00)
NO_SUBSCRIBERS = ReasonCode(PacketTypes.PUBACK, identifier=0x10)  # success, < 0x80
NOT_AUTHORIZED = ReasonCode(PacketTypes.PUBACK, identifier=0x87)
QUOTA_EXCEEDED = ReasonCode(PacketTypes.PUBACK, identifier=0x97)
TOPIC_INVALID = ReasonCode(PacketTypes.PUBACK, identifier=0x90)


@dataclass(frozen=True)
class Published:
    mid: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    expiry: float | None


class FakeBroker:
    """Implements delivery.Broker: records publishes, hands out increasing mids."""

    def __init__(self, *, connected: bool = True) -> None:
        self.connected = threading.Event()
        if connected:
            self.connected.set()
        self.published: list[Published] = []
        self.fail_next = 0  # raise PublishError for this many publishes
        self.auto_ack: Dispatcher | None = None  # answer every publish at once
        self.send_quota = 65_535  # the broker's Receive Maximum
        self._mid = 0

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry: float | None = None,
    ) -> int:
        if self.fail_next:
            self.fail_next -= 1
            raise PublishError("out of memory")
        self._mid += 1
        self.published.append(Published(self._mid, topic, payload, qos, retain, expiry))
        if self.auto_ack is not None:
            self.auto_ack.on_ack(self._mid, SUCCESS)
        return self._mid

    def mids(self) -> list[int]:
        return [p.mid for p in self.published]

    def payloads(self) -> list[bytes]:
        return [p.payload for p in self.published]


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """One wall clock for the outbox (injected) and the dispatcher (patched)."""
    fake = FakeClock()
    monkeypatch.setattr(
        delivery, "time", SimpleNamespace(time=fake, monotonic=time.monotonic, sleep=time.sleep)
    )
    return fake


@pytest.fixture
def outbox(tmp_path: Path, clock: FakeClock) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db", durability="crash", clock=clock)
    yield box
    box.close()


@pytest.fixture
def fake() -> FakeBroker:
    return FakeBroker()


def add(outbox: Outbox, n: int = 1, *, ttl: float | None = None, qos: int = 1) -> None:
    for _ in range(n):
        outbox.add("p", TOPIC, lambda seq: b"%d" % seq, qos=qos, ttl=ttl)


def in_outbox(outbox: Outbox) -> list[bytes]:
    return [e.payload for e in outbox.pending(limit=10_000)]


def dead_letters(outbox: Outbox) -> list[tuple[int, str]]:
    rows = outbox._db.execute("SELECT seq, reason FROM dead_letters ORDER BY id").fetchall()
    return [(int(seq), str(reason)) for seq, reason in rows]


def test_publishes_in_outbox_order_with_topic_and_qos(outbox: Outbox, fake: FakeBroker) -> None:
    add(outbox, 3)
    outbox.add("q", "edge/dev/q/event", lambda seq: b"q%d" % seq, qos=2)
    Dispatcher(outbox, fake).step()
    assert [(p.topic, p.payload, p.qos, p.retain, p.expiry) for p in fake.published] == [
        (TOPIC, b"1", 1, False, None),
        (TOPIC, b"2", 1, False, None),
        (TOPIC, b"3", 1, False, None),
        ("edge/dev/q/event", b"q1", 2, False, None),
    ]


def test_the_window_limits_events_in_flight(outbox: Outbox, fake: FakeBroker) -> None:
    add(outbox, 10)
    dispatcher = Dispatcher(outbox, fake, window=3)
    dispatcher.step()
    assert fake.payloads() == [b"1", b"2", b"3"]
    dispatcher.step()
    assert len(fake.published) == 3  # nothing settled, no room

    dispatcher.on_ack(fake.published[1].mid, SUCCESS)  # out of order is fine
    dispatcher.step()
    assert fake.payloads() == [b"1", b"2", b"3", b"4"]

    for mid in fake.mids():
        dispatcher.on_ack(mid, SUCCESS)
    dispatcher.step()
    assert fake.payloads()[4:] == [b"5", b"6", b"7"]
    assert dispatcher.delivered == 4


def test_acks_settle_events(outbox: Outbox, fake: FakeBroker) -> None:
    add(outbox, 4)
    dispatcher = Dispatcher(outbox, fake)
    dispatcher.step()
    first, second, third, _ = fake.mids()
    dispatcher.on_ack(first, None)  # QoS 1 under MQTT 3.1.1: no reason code
    dispatcher.on_ack(second, SUCCESS)
    dispatcher.on_ack(third, NO_SUBSCRIBERS)  # the broker took it; nobody listens
    dispatcher.step()
    assert in_outbox(outbox) == [b"4"]
    assert dispatcher.delivered == 3
    assert dispatcher.refused == 0
    assert outbox.stats().depth == 1
    assert len(fake.published) == 4  # settled events are not sent again


def test_acks_are_settled_only_by_the_dispatcher_thread(outbox: Outbox, fake: FakeBroker) -> None:
    add(outbox)
    dispatcher = Dispatcher(outbox, fake)
    dispatcher.step()
    dispatcher.on_ack(fake.mids()[0], SUCCESS)
    # on_ack (paho's thread) only enqueues; the outbox is untouched until step.
    assert outbox.stats().depth == 1
    assert dispatcher.delivered == 0
    dispatcher.step()
    assert outbox.stats().depth == 0
    assert dispatcher.delivered == 1


@pytest.mark.parametrize("reason", [NOT_AUTHORIZED, TOPIC_INVALID])
def test_a_refusal_moves_the_event_to_dead_letters(
    outbox: Outbox, fake: FakeBroker, reason: ReasonCode
) -> None:
    add(outbox, 3)
    dispatcher = Dispatcher(outbox, fake)
    dispatcher.step()
    first, second, third = fake.mids()
    dispatcher.on_ack(first, SUCCESS)
    dispatcher.on_ack(second, reason)
    dispatcher.step()
    assert in_outbox(outbox) == [b"3"]
    assert dead_letters(outbox) == [(2, str(reason))]
    assert (dispatcher.delivered, dispatcher.refused) == (1, 1)
    assert outbox.stats().dead == 1
    # Never retried.
    dispatcher.on_ack(third, SUCCESS)
    dispatcher.step()
    assert fake.payloads() == [b"1", b"2", b"3"]
    assert outbox.stats().depth == 0


def test_a_refusal_for_now_is_sent_again_not_dead_lettered(
    outbox: Outbox, fake: FakeBroker
) -> None:
    add(outbox, 2)
    dispatcher = Dispatcher(outbox, fake)
    dispatcher.step()
    first, second = fake.mids()
    dispatcher.on_ack(first, QUOTA_EXCEEDED)
    dispatcher.on_ack(second, SUCCESS)
    dispatcher.step()
    assert fake.payloads() == [b"1", b"2", b"1"]
    assert dead_letters(outbox) == []
    dispatcher.on_ack(fake.mids()[-1], SUCCESS)
    dispatcher.step()
    assert outbox.stats().depth == 0
    assert (dispatcher.delivered, dispatcher.refused) == (2, 0)


def test_unknown_mids_are_ignored(outbox: Outbox, fake: FakeBroker) -> None:
    add(outbox, 2)
    dispatcher = Dispatcher(outbox, fake)
    dispatcher.step()
    # The status message, a retained state, a duplicate ack: not from the outbox.
    dispatcher.on_ack(999, SUCCESS)
    dispatcher.on_ack(998, NOT_AUTHORIZED)
    dispatcher.on_ack(fake.mids()[0], SUCCESS)
    dispatcher.on_ack(fake.mids()[0], SUCCESS)
    dispatcher.step()
    assert in_outbox(outbox) == [b"2"]
    assert (dispatcher.delivered, dispatcher.refused) == (1, 0)
    assert dead_letters(outbox) == []


def test_nothing_is_published_while_disconnected(outbox: Outbox) -> None:
    fake = FakeBroker(connected=False)
    add(outbox, 3)
    dispatcher = Dispatcher(outbox, fake)
    dispatcher.step()
    dispatcher.step()
    assert fake.published == []
    assert not dispatcher.drain(timeout=0.1)
    assert fake.published == []

    fake.connected.set()
    dispatcher.step()
    assert fake.payloads() == [b"1", b"2", b"3"]


def test_acks_are_settled_while_disconnected(outbox: Outbox, fake: FakeBroker) -> None:
    add(outbox, 2)
    dispatcher = Dispatcher(outbox, fake)
    dispatcher.step()
    dispatcher.on_ack(fake.mids()[0], SUCCESS)  # arrived just before the drop
    fake.connected.clear()
    add(outbox)
    dispatcher.step()
    assert in_outbox(outbox) == [b"2", b"3"]
    assert len(fake.published) == 2


def test_expiry_is_the_remaining_ttl(outbox: Outbox, fake: FakeBroker, clock: FakeClock) -> None:
    add(outbox, ttl=60)
    clock.now += 15
    add(outbox, ttl=30)
    add(outbox)  # no TTL
    clock.now += 5
    Dispatcher(outbox, fake).step()
    assert [p.expiry for p in fake.published] == [40, 25, None]


def test_events_that_expire_before_publishing_are_not_sent(
    outbox: Outbox, fake: FakeBroker, clock: FakeClock
) -> None:
    fake.connected.clear()
    add(outbox, ttl=10)
    add(outbox, ttl=100)
    dispatcher = Dispatcher(outbox, fake)
    dispatcher.step()
    clock.now += 10
    fake.connected.set()
    dispatcher.step()
    assert [(p.payload, p.expiry) for p in fake.published] == [(b"2", 90)]
    assert outbox.stats().expired == 1


def test_a_publish_error_is_retried_without_skipping(outbox: Outbox, fake: FakeBroker) -> None:
    add(outbox, 3)
    dispatcher = Dispatcher(outbox, fake)
    fake.fail_next = 1
    dispatcher.step()
    assert fake.published == []
    dispatcher.step()
    assert fake.payloads() == [b"1", b"2", b"3"]
    assert outbox.stats().depth == 3


def test_a_restart_republishes_what_was_not_acknowledged(outbox: Outbox, fake: FakeBroker) -> None:
    add(outbox, 5)
    before = Dispatcher(outbox, fake, window=4)
    before.step()
    before.on_ack(fake.mids()[0], SUCCESS)
    before.on_ack(fake.mids()[2], SUCCESS)
    before.step()  # settles 1 and 3, sends 5
    assert fake.payloads() == [b"1", b"2", b"3", b"4", b"5"]
    # The process dies here: 2, 4 and 5 were handed to MQTT, never acknowledged.

    again = FakeBroker()
    after = Dispatcher(outbox, again)
    after.step()
    assert again.payloads() == [b"2", b"4", b"5"]
    for mid in again.mids():
        after.on_ack(mid, SUCCESS)
    assert after.drain(timeout=1)
    assert outbox.stats().depth == 0
    assert after.delivered == 3


def test_drain_delivers_everything(outbox: Outbox, fake: FakeBroker) -> None:
    add(outbox, 250)
    dispatcher = Dispatcher(outbox, fake, window=10)
    fake.auto_ack = dispatcher
    assert dispatcher.drain(timeout=5)
    assert fake.payloads() == [b"%d" % n for n in range(1, 251)]
    assert dispatcher.delivered == 250
    assert outbox.stats().depth == 0


def test_the_thread_delivers_what_pipelines_add(outbox: Outbox, fake: FakeBroker) -> None:
    dispatcher = Dispatcher(outbox, fake, window=5)
    fake.auto_ack = dispatcher
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,))
    thread.start()
    try:
        for _ in range(50):
            add(outbox)
            dispatcher.wake()
        deadline = time.monotonic() + 5
        while dispatcher.delivered < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    assert fake.payloads() == [b"%d" % n for n in range(1, 51)]
    assert outbox.stats().depth == 0


# -- the writer ----------------------------------------------------------------


class RefusingOutbox(Outbox):
    """A real outbox whose writes fail while `full` is set (as on a full disk)."""

    full = False

    def add_many(self, events: Sequence[NewEvent]) -> list[int]:
        if self.full:
            raise DiskFullError("outbox: cannot store: the disk is full")
        return super().add_many(events)


def numbered(n: int, _seq: int) -> bytes:
    return b"%d" % n


def test_the_writer_keeps_events_in_memory_within_a_bound_while_the_outbox_refuses(
    tmp_path: Path,
) -> None:
    outbox = RefusingOutbox(tmp_path / "outbox.db")
    writer = OutboxWriter(outbox, lambda: None, max_pending=10)
    outbox.full = True
    for n in range(15):
        writer.submit(NewEvent("p", "t", functools.partial(numbered, n), 1))
    assert not writer.step(timeout=0)
    assert (writer.pending, writer.dropped) == (10, 5)  # the 5 oldest went, counted
    assert writer.flush(timeout=0) == 10  # cannot store: reported, not hung
    outbox.full = False
    assert writer.flush(timeout=1) == 0
    assert [e.payload for e in outbox.pending()] == [b"%d" % n for n in range(5, 15)]


# -- end to end ---------------------------------------------------------------


@pytest.mark.integration
def test_every_event_reaches_a_subscriber_in_order(tmp_path: Path, broker: Mosquitto) -> None:
    topics = Topics("edge", "dev1")
    subscriber = Subscriber(broker.port, topics.event("+"))
    publisher = MqttPublisher(
        MqttOptions(host="127.0.0.1", port=broker.port, client_id="dev1", topics=topics)
    )
    outbox = Outbox(tmp_path / "outbox.db")
    dispatcher = Dispatcher(outbox, publisher)
    publisher.on_ack(dispatcher.on_ack)
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), name="delivery")
    publisher.start()
    thread.start()
    try:
        for _ in range(200):
            outbox.add(
                "p",
                topics.event("p"),
                lambda seq: json.dumps({"seq": seq, "pad": "x" * 200}).encode(),
                qos=1,
            )
            dispatcher.wake()
        subscriber.wait_for(lambda s: len(s.messages) >= 200, timeout=20)
        deadline = time.monotonic() + 10
        while outbox.stats().depth and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
        publisher.stop()
        subscriber.close()
    assert [m.json()["seq"] for m in subscriber.messages] == list(range(1, 201))
    assert {(m.topic, m.qos) for m in subscriber.messages} == {("edge/dev1/p/event", 1)}
    assert outbox.stats().depth == 0
    assert dispatcher.delivered == 200
    assert dispatcher.refused == 0
    outbox.close()

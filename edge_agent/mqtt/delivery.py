"""Delivery: moves events from the durable outbox to the broker, a bounded window
at a time, and settles each one when the broker answers.

paho's own in-memory queue is never relied on for durability: an event leaves
the outbox only on PUBACK/PUBCOMP (or, refused, into the dead-letter table).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Protocol

from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import PublishError
from edge_agent.mqtt.outbox import NewEvent, Outbox, StoredEvent
from edge_agent.mqtt.sink import MessageSink
from edge_agent.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
limited = RateLimitedLog(log)

IDLE_WAIT = 0.05  # seconds between looks at the outbox when nothing woke us
BATCH_PAUSE = 0.001


class Broker(MessageSink, Protocol):
    """The part of MqttPublisher the dispatcher needs."""

    connected: threading.Event


class OutboxWriter:
    """Group commit: pipelines `submit` events and go on; this thread stores all
    that has queued up in one transaction (one disk sync), then wakes the
    dispatcher. An event is on disk within one sync of its decision, and MQTT
    never sees an event that is not."""

    def __init__(self, outbox: Outbox, on_commit: Callable[[], None], max_batch: int = 500) -> None:
        self._outbox = outbox
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[NewEvent] = queue.SimpleQueue()
        self._batch: list[NewEvent] = []

    def submit(self, event: NewEvent) -> None:
        self._queue.put(event)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step(timeout=0.1)

    def step(self, timeout: float) -> None:
        """Store what is queued (waiting up to `timeout` for the first event)."""
        if not self._batch:
            try:
                self._batch.append(self._queue.get(timeout=timeout))
            except queue.Empty:
                return
        while len(self._batch) < self._max_batch:
            try:
                self._batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        try:
            self._outbox.add_many(self._batch)
        except sqlite3.Error as exc:  # disk full, I/O error: keep the batch, retry
            limited.error(
                "outbox-write",
                "cannot store %d event(s) in the outbox: %s; retrying",
                len(self._batch),
                exc,
            )
            time.sleep(1.0)
            return
        self._batch = []
        self._on_commit()

    def flush(self) -> None:
        """Store everything submitted so far (at shutdown, after the pipelines stopped)."""
        while self._batch or not self._queue.empty():
            self.step(timeout=0)


class Dispatcher:
    """`run` is the thread body. Pipelines call `wake` after adding to the outbox."""

    def __init__(
        self,
        outbox: Outbox,
        broker: Broker,
        *,
        window: int = 100,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._outbox = outbox
        self._clock = clock or time.time  # wall clock, like the outbox's expiry times
        self._broker = broker
        self._window = window
        # Acks arrive on paho's thread; a SimpleQueue hands them over without a
        # lock that this thread could hold while inside paho.
        self._acks: queue.SimpleQueue[tuple[int, ReasonCode | None]] = queue.SimpleQueue()
        self._in_flight: dict[int, StoredEvent] = {}  # mid -> event; this thread only
        self._last_sent = 0  # highest outbox id handed to paho in this process
        self._wake = threading.Event()
        self.delivered = 0
        self.refused = 0

    def wake(self) -> None:
        self._wake.set()

    def on_ack(self, mid: int, reason: ReasonCode | None) -> None:
        """paho's on_publish hook: only enqueue."""
        self._acks.put((mid, reason))
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()
            if self._wake.wait(IDLE_WAIT):
                # Under load acks arrive one by one; a moment's pause lets a batch
                # gather, so one transaction settles many instead of one each.
                time.sleep(BATCH_PAUSE)
            self._wake.clear()

    def step(self) -> None:
        """Settle what the broker answered, then fill the window."""
        self._settle()
        if self._broker.connected.is_set():
            self._fill()

    def drain(self, timeout: float) -> bool:
        """Keep delivering until the outbox is empty or `timeout` passes (shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.step()
            if not self._in_flight and self._outbox.stats().depth == 0:
                return True
            self._wake.wait(IDLE_WAIT)
            self._wake.clear()
        return False

    def _settle(self) -> None:
        done: list[int] = []
        while True:
            try:
                mid, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            event = self._in_flight.pop(mid, None)
            if event is None:
                continue  # a message that did not come from the outbox (state, status)
            if reason is not None and reason.is_failure:
                self._refuse(event, reason)
            else:
                done.append(event.id)
        if done:
            self.delivered += self._outbox.ack(done)

    def _refuse(self, event: StoredEvent, reason: ReasonCode) -> None:
        self._outbox.dead_letter(event.id, str(reason))
        self.refused += 1
        limited.error(
            f"refused-{event.topic}",
            "broker refused %s seq %d (%s); moved to dead letters",
            event.topic,
            event.seq,
            reason,
        )

    def _fill(self) -> None:
        room = self._window - len(self._in_flight)
        if room <= 0:
            return
        for event in self._outbox.pending(after=self._last_sent, limit=room):
            expiry = event.expires - self._clock() if event.expires is not None else None
            if expiry is not None and expiry <= 0:
                continue  # expired since it was read; the next `pending` removes it
            try:
                mid = self._broker.publish(event.topic, event.payload, qos=event.qos, expiry=expiry)
            except PublishError as exc:
                limited.warning("publish", "cannot hand event to MQTT yet: %s", exc)
                return
            self._in_flight[mid] = event
            self._last_sent = event.id

"""Delivery: moves events from the durable outbox to the broker, a bounded window
at a time, and settles each one when the broker answers.

paho's own in-memory queue is never relied on for durability: an event leaves
the outbox only on PUBACK/PUBCOMP (or, refused, into the dead-letter table).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Protocol

from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import OutboxError, PublishError
from edge_agent.mqtt.outbox import NewEvent, Outbox, StoredEvent
from edge_agent.mqtt.sink import MessageSink
from edge_agent.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
limited = RateLimitedLog(log)

IDLE_WAIT = 0.05  # seconds between looks at the outbox when nothing woke us
BATCH_PAUSE = 0.001
RETRY = 1.0  # seconds between attempts to write to an outbox that failed (disk full)
# Refusals that say "not now", not "never": the event is sent again, not dead-lettered.
TRANSIENT = frozenset({0x89, 0x97})  # server busy, quota exceeded


class Broker(MessageSink, Protocol):
    """The part of MqttPublisher the dispatcher needs."""

    connected: threading.Event

    @property
    def send_quota(self) -> int:
        """How many QoS 1/2 messages the broker takes unacknowledged at once."""
        ...


class OutboxWriter:
    """Group commit: pipelines `submit` events and go on; this thread stores all
    that has queued up in one transaction (one disk sync), then wakes the
    dispatcher. An event is on disk within one sync of its decision, and MQTT
    never sees an event that is not.

    While the outbox cannot be written (disk full) events wait here, in memory,
    up to `max_pending` (then the oldest go, counted and logged), and storing is
    retried every `RETRY` seconds."""

    def __init__(
        self,
        outbox: Outbox,
        on_commit: Callable[[], None],
        max_batch: int = 500,
        max_pending: int = 10_000,
    ) -> None:
        self._outbox = outbox
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._queue: queue.SimpleQueue[NewEvent] = queue.SimpleQueue()
        self._backlog: deque[NewEvent] = deque()
        self.dropped = 0  # dropped from memory while the outbox could not be written

    def submit(self, event: NewEvent) -> None:
        self._queue.put(event)

    @property
    def pending(self) -> int:
        """Events submitted and not stored yet."""
        return len(self._backlog) + self._queue.qsize()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if not self.step(timeout=0.1):
                stop.wait(RETRY)

    def step(self, timeout: float) -> bool:
        """Store what is queued (waiting up to `timeout` for the first event);
        False if the outbox refused it (kept for the next try)."""
        if not self._backlog:
            try:
                self._backlog.append(self._queue.get(timeout=timeout))
            except queue.Empty:
                return True
        self._take_queued()
        batch = [self._backlog[i] for i in range(min(self._max_batch, len(self._backlog)))]
        try:
            self._outbox.add_many(batch)
        except OutboxError as exc:
            limited.error(
                "outbox-write", "%s; %d event(s) kept in memory, retrying", exc, self.pending
            )
            return False
        for _ in batch:
            self._backlog.popleft()
        self._on_commit()
        return True

    def _take_queued(self) -> None:
        """Move what pipelines submitted into the backlog, within `max_pending`."""
        while True:
            try:
                self._backlog.append(self._queue.get_nowait())
            except queue.Empty:
                break
        excess = len(self._backlog) - self._max_pending
        if excess > 0:
            for _ in range(excess):
                self._backlog.popleft()
            self.dropped += excess
            limited.error(
                "writer-dropped",
                "outbox not writable: dropped the %d oldest event(s) kept in memory (%d in all)",
                excess,
                self.dropped,
            )

    def flush(self, timeout: float) -> int:
        """Store everything submitted so far (at shutdown, after the pipelines
        stopped), trying for at most `timeout` seconds. Returns how many events
        could not be stored; they are logged by pipeline, never dropped silently."""
        deadline = time.monotonic() + timeout
        while self.pending:
            if self.step(timeout=0):
                continue
            wait = min(RETRY, deadline - time.monotonic())
            if wait <= 0:
                break
            time.sleep(wait)
        self._take_queued()
        if self._backlog:
            per_pipeline = Counter(event.pipeline for event in self._backlog)
            log.error(
                "stopping with %d event(s) that could not be stored in the outbox and are lost: %s",
                len(self._backlog),
                ", ".join(f"{name}: {count}" for name, count in sorted(per_pipeline.items())),
            )
        if self.dropped:
            log.error(
                "%d event(s) were dropped from memory while the outbox was not writable",
                self.dropped,
            )
        return len(self._backlog)


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
        # Settled by the broker but not yet in the outbox (its disk was full): kept
        # here and written again later. Lost at a stop, they are only sent again.
        self._unsaved_acks: list[int] = []
        self._unsaved_refusals: list[tuple[StoredEvent, ReasonCode]] = []
        self._resend: deque[StoredEvent] = deque()  # refused for now; sent before newer ones
        # monotonic times before which a failed outbox write is not tried again
        self._ack_retry_at = self._read_retry_at = 0.0
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
            if self._drained():
                return True
            self._wake.wait(IDLE_WAIT)
            self._wake.clear()
        if self._unsaved_acks:
            log.warning(
                "%d delivered event(s) could not be removed from the outbox;"
                " they are sent again on the next start",
                len(self._unsaved_acks),
            )
        return False

    def _drained(self) -> bool:
        if self._in_flight or self._resend or self._unsaved_acks or self._unsaved_refusals:
            return False
        try:
            return self._outbox.stats().depth == 0
        except OutboxError:
            return False

    def _settle(self) -> None:
        while True:
            try:
                mid, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            event = self._in_flight.pop(mid, None)
            if event is None:
                continue  # a message that did not come from the outbox (state, status)
            if reason is not None and reason.value in TRANSIENT:
                limited.warning(
                    "transient", "broker: %s for seq %d; sending it again", reason, event.seq
                )
                self._resend.append(event)
            elif reason is not None and reason.is_failure:
                self._unsaved_refusals.append((event, reason))
            else:
                self._unsaved_acks.append(event.id)
        unsaved = self._unsaved_acks or self._unsaved_refusals
        if unsaved and time.monotonic() >= self._ack_retry_at:
            try:
                self._save_settled()
            except OutboxError as exc:
                # The broker has the events; only their removal waits. Delivery goes on.
                self._ack_retry_at = time.monotonic() + RETRY
                limited.error(
                    "outbox-ack",
                    "%s; %d acknowledgement(s) kept in memory, retrying",
                    exc,
                    len(self._unsaved_acks) + len(self._unsaved_refusals),
                )

    def _save_settled(self) -> None:
        if self._unsaved_acks:
            self.delivered += self._outbox.ack(self._unsaved_acks)
            self._unsaved_acks = []
        while self._unsaved_refusals:
            self._refuse(*self._unsaved_refusals[0])
            self._unsaved_refusals.pop(0)

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
        # Never more unacknowledged than the broker takes: beyond its Receive
        # Maximum mosquitto answers a QoS 2 PUBLISH with PUBREC "quota exceeded",
        # which paho ignores, and then completes the flow as if it were delivered.
        room = min(self._window, self._broker.send_quota) - len(self._in_flight)
        while self._resend and room > 0:
            if not self._send(self._resend[0]):
                return
            self._resend.popleft()
            room -= 1
        if room <= 0 or time.monotonic() < self._read_retry_at:
            return
        try:
            events = self._outbox.pending(after=self._last_sent, limit=room)
        except OutboxError as exc:
            self._read_retry_at = time.monotonic() + RETRY
            limited.error("outbox-read", "%s; retrying", exc)
            return
        for event in events:
            if not self._send(event):
                return
            self._last_sent = event.id

    def _send(self, event: StoredEvent) -> bool:
        """Hand one event to MQTT; False if it cannot take it yet. An event that
        expired since it was read is skipped (the next `pending` removes it)."""
        expiry = event.expires - self._clock() if event.expires is not None else None
        if expiry is not None and expiry <= 0:
            return True
        try:
            mid = self._broker.publish(event.topic, event.payload, qos=event.qos, expiry=expiry)
        except PublishError as exc:
            limited.warning("publish", "cannot hand event to MQTT yet: %s", exc)
            return False
        self._in_flight[mid] = event
        return True

"""The outbound path of one pipeline: a decision in, an MQTT message out.

`emit` is the verb a pipeline calls for every decision. At QoS 1 and 2 the event
goes to the durable outbox (through the group-commit writer) before anything is
sent; at QoS 0 it is sent at once and never touches the database. The retained
state and alerts go straight to the publisher: a lost state is replaced by the
next one, and the broker keeps the last.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent.errors import OutboxError, PublishError
from edge_agent.mqtt.outbox import NewEvent
from edge_agent.mqtt.payloads import (
    Decision,
    ModelInfo,
    Topics,
    encode,
    event_payload,
    new_event_id,
)
from edge_agent.mqtt.sink import MessageSink
from edge_agent.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
limited = RateLimitedLog(log)


@dataclass(frozen=True)
class Delivery:
    """How a pipeline's events travel: QoS and how long they may wait (None: forever)."""

    qos: int = 1
    ttl: float | None = None


class SeqBlock:
    """Sequence numbers for QoS 0 events, which never touch the database per event:
    reserved in blocks (one write per `SIZE` events). A block that cannot be reserved
    (a full disk) is continued in memory; at QoS 0 a repeated seq after such a failure
    and a restart is the lesser evil than not publishing."""

    SIZE = 1000

    def __init__(self, pipeline: str, reserve: Callable[[str, int], int]) -> None:
        self._pipeline = pipeline
        self._reserve = reserve
        self._next = 0
        self._end = 0  # exclusive

    def next(self) -> int:
        if self._next >= self._end:
            try:
                self._next = self._reserve(self._pipeline, self.SIZE)
            except OutboxError as exc:
                limited.error(
                    f"{self._pipeline}-seq", "%s: cannot reserve seqs: %s", self._pipeline, exc
                )
                self._next = max(self._next, 1)
            self._end = self._next + self.SIZE
        seq = self._next
        self._next += 1
        return seq


class Emitter:
    """A pipeline's one door to MQTT. `bytes_out` counts what it sent (topic + payload)."""

    def __init__(
        self,
        pipeline: str,
        *,
        topics: Topics,
        sink: MessageSink,
        store: Callable[[NewEvent], None],
        reserve_seqs: Callable[[str, int], int],
        delivery: Delivery,
    ) -> None:
        self.pipeline = pipeline
        self.topics = topics
        self.bytes_out = 0
        self._sink = sink
        self._store = store  # the outbox writer's submit
        self._seqs = SeqBlock(pipeline, reserve_seqs)
        self._delivery = delivery
        self._lock = threading.Lock()  # events are encoded on the writer's thread
        # Told the id of every event emitted, on the pipeline's thread (feedback matching).
        self.on_event: Callable[[str, Decision], None] | None = None

    @property
    def device(self) -> str:
        return self.topics.device

    def emit(self, decision: Decision, *, captured: float, model: ModelInfo) -> None:
        """One decision event: stored durably (QoS >= 1) or sent now (QoS 0)."""
        topic = self.topics.event(self.pipeline)
        event_id = new_event_id()
        if self.on_event is not None:
            self.on_event(event_id, decision)

        def build(seq: int) -> bytes:
            payload = encode(
                event_payload(
                    device=self.topics.device,
                    pipeline=self.pipeline,
                    seq=seq,
                    event_id=event_id,
                    epoch=captured,
                    decision=decision,
                    model=model,
                )
            )
            self._count(len(topic.encode()) + len(payload))
            return payload

        qos, ttl = self._delivery.qos, self._delivery.ttl
        if qos == 0:  # fire and forget: not worth a disk write
            self.send(topic, build(self._seqs.next()), qos=0, count=False)
        else:
            self._store(NewEvent(self.pipeline, topic, build, qos, ttl))

    def state(self, payload: dict[str, Any]) -> None:
        self.send(self.topics.state(self.pipeline), encode(payload), qos=1, retain=True)

    def alert(self, payload: dict[str, Any]) -> None:
        self.send(self.topics.alert(self.pipeline), encode(payload), qos=1)

    def send(
        self, topic: str, payload: bytes, *, qos: int, retain: bool = False, count: bool = True
    ) -> None:
        """Straight to the publisher; a refusal is logged (rate-limited), never raised."""
        try:
            self._sink.publish(topic, payload, qos=qos, retain=retain)
        except PublishError as exc:
            limited.error(f"{self.pipeline}-publish", "%s: cannot publish: %s", self.pipeline, exc)
            return
        if count:
            self._count(len(topic.encode()) + len(payload))

    def _count(self, size: int) -> None:
        with self._lock:
            self.bytes_out += size

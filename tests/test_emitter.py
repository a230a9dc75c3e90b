"""The outbound path: QoS 0 events never touch the database per event; their seqs
come in reserved blocks, and a restart continues after the block."""

from __future__ import annotations

from pathlib import Path

from edge_agent.mqtt.emitter import Delivery, Emitter, SeqBlock
from edge_agent.mqtt.outbox import NewEvent, Outbox
from edge_agent.mqtt.payloads import Decision, ModelInfo, Topics

DECISION = Decision(state="on", score=0.9, previous=None, reason="change", label="on")
MODEL = ModelInfo("m", "1", "ab" * 32)


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry: float | None = None,
    ) -> int:
        self.sent.append((topic, payload, qos))
        return 0


def test_qos0_reserves_one_block_per_thousand_events(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    reservations: list[int] = []

    def reserve(pipeline: str, count: int) -> int:
        reservations.append(count)
        return outbox.reserve_seqs(pipeline, count)

    stored: list[NewEvent] = []
    sink = Sink()
    emitter = Emitter(
        "cam",
        topics=Topics("edge", "d"),
        sink=sink,
        store=stored.append,
        reserve_seqs=reserve,
        delivery=Delivery(qos=0),
    )
    for _ in range(SeqBlock.SIZE + 1):
        emitter.emit(DECISION, captured=0.0, model=MODEL)
    assert stored == []  # nothing goes to the outbox at QoS 0
    assert len(sink.sent) == SeqBlock.SIZE + 1
    assert reservations == [SeqBlock.SIZE, SeqBlock.SIZE]
    assert b'"seq":1001,' in sink.sent[-1][1]
    assert outbox.stats().depth == 0
    outbox.close()
    # A restart continues after the last reserved block: no seq is ever repeated.
    again = Outbox(tmp_path / "outbox.db")
    assert again.reserve_seqs("cam", SeqBlock.SIZE) == 2 * SeqBlock.SIZE + 1
    again.close()


def test_qos1_events_go_to_the_outbox_writer(tmp_path: Path) -> None:
    stored: list[NewEvent] = []
    emitter = Emitter(
        "cam",
        topics=Topics("edge", "d"),
        sink=Sink(),
        store=stored.append,
        reserve_seqs=lambda _p, _n: 1,
        delivery=Delivery(qos=1, ttl=5.0),
    )
    emitter.emit(DECISION, captured=0.0, model=MODEL)
    assert [(e.pipeline, e.topic, e.qos, e.ttl) for e in stored] == [
        ("cam", "edge/d/cam/event", 1, 5.0)
    ]
    assert b'"decision":"on"' in stored[0].build(7)
    assert b'"seq":7' in stored[0].build(7)

"""The fleet history file (edge_agent.fleet.history): transitions kept once,
models over time, "which devices still run version 7"."""

from __future__ import annotations

from pathlib import Path

from edge_agent.fleet.history import History
from edge_agent.fleet.view import FleetView


def state(device: str, version: str, sha: str = "a" * 12, errors: int = 0) -> bytes:
    model = f'{{"name":"shapes","version":"{version}","sha256":"{sha}"}}'
    return f'{{"v":1,"device":"{device}","model":{model},"errors":{errors}}}'.encode()


def feed(history: History, view: FleetView, messages: list[tuple[str, bytes]], t: float) -> None:
    for offset, (topic, payload) in enumerate(messages):
        history.add(view.apply(topic, payload, t + offset))
    history.flush()


def test_which_devices_still_run_a_version(tmp_path: Path) -> None:
    history = History(tmp_path / "fleet.db")
    view = FleetView("edge")
    feed(history, view, [(f"edge/d{i}/cam/state", state(f"d{i}", "7")) for i in range(4)], 100.0)
    feed(history, view, [("edge/d1/cam/state", state("d1", "8", "b" * 12))], 200.0)
    still = history.running("7", "shapes")
    assert [r.device for r in still] == ["d0", "d2", "d3"]
    assert [r.device for r in history.running("8")] == ["d1"]
    assert history.running("7", "other") == []
    assert history.running("8")[0].since == 200.0


def test_reread_retained_topics_add_no_transitions(tmp_path: Path) -> None:
    path = tmp_path / "fleet.db"
    messages = [
        ("edge/d0/status", b"online"),
        ("edge/d0/cam/state", state("d0", "7")),
        ("edge/d0/update", b'{"state":"committed","model":null,"ts":"2026-01-01T00:00:00.000Z"}'),
    ]
    first = History(path)
    feed(first, FleetView("edge"), messages, 100.0)
    assert len(first.transitions("d0")) == 3
    first.close()
    # A later `fleet status` run reads the same retained messages (fresh view, new ts).
    again = History(path)
    reread = [*messages[:2], (messages[2][0], messages[2][1].replace(b"2026", b"2027"))]
    feed(again, FleetView("edge"), reread, 500.0)
    assert len(again.transitions("d0")) == 3
    # A real change is kept, with its time, after the earlier ones.
    feed(again, FleetView("edge"), [("edge/d0/status", b"offline")], 900.0)
    kinds = [(t.kind, t.value, t.ts) for t in again.transitions("d0")]
    assert kinds[-1] == ("status", "offline", 900.0)
    assert [k[0] for k in kinds] == ["status", "model", "update", "status"]


def test_bad_messages_are_counted_and_skipped(tmp_path: Path) -> None:
    history = History(tmp_path / "fleet.db")
    view = FleetView("edge")
    feed(history, view, [("edge/d0/cam/state", b"{not json"), ("edge/d0/status", b"maybe")], 1.0)
    feed(history, view, [("edge/d1/status", b"online")], 2.0)
    assert view.bad_messages == 2
    assert [t.device for t in history.transitions()] == ["d1"]

"""The durable outbox against real SQLite files: seqs, order, bounds, TTL, dead
letters, stats, corruption, durability settings, other processes and threads."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.mqtt import outbox as outbox_module
from edge_agent.mqtt.outbox import Durability, Outbox, OutboxStats
from edge_agent.util.logs import RateLimitedLog

PROJECT = Path(__file__).resolve().parents[1]
TOPIC = "edge/dev/p/event"


class FakeClock:
    """Wall-clock stand-in: tests move time by assigning `now`."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def payload(size: int = 10) -> Callable[[int], bytes]:
    """A `build` callback: `size` bytes, starting with the seq so rows are recognisable."""

    def build(seq: int) -> bytes:
        return f"{seq}:".encode().ljust(size, b"x")

    return build


def add(outbox: Outbox, pipeline: str = "p", *, size: int = 10, ttl: float | None = None) -> int:
    return outbox.add(pipeline, TOPIC, payload(size), qos=1, ttl=ttl)


def seqs(outbox: Outbox) -> list[tuple[str, int]]:
    return [(e.pipeline, e.seq) for e in outbox.pending(limit=10_000)]


def run_python(code: str, *args: str, killed: bool = False) -> str:
    """Run `code` in a fresh interpreter (another process), return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == (-9 if killed else 0), done.stderr
    return done.stdout


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "outbox.db"


@pytest.fixture
def outbox(db: Path, clock: FakeClock) -> Outbox:
    return Outbox(db, clock=clock)


# -- seq ----------------------------------------------------------------------


def test_add_allocates_seq_per_pipeline_independently(outbox: Outbox) -> None:
    assert [add(outbox, "a"), add(outbox, "a"), add(outbox, "b"), add(outbox, "a")] == [1, 2, 1, 3]
    assert [add(outbox, "b"), add(outbox, "b")] == [2, 3]
    assert seqs(outbox) == [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2), ("b", 3)]


def test_build_sees_the_seq_it_is_stored_with(outbox: Outbox) -> None:
    for _ in range(3):
        add(outbox)
    assert [(e.seq, e.payload) for e in outbox.pending()] == [
        (1, b"1:xxxxxxxx"),
        (2, b"2:xxxxxxxx"),
        (3, b"3:xxxxxxxx"),
    ]


def test_reserved_seqs_are_skipped_by_stored_events(outbox: Outbox) -> None:
    assert add(outbox) == 1
    assert outbox.reserve_seqs("p", 10) == 2  # 2..11 for events that are not stored
    assert add(outbox) == 12
    assert outbox.stats().depth == 2


def test_a_failing_build_neither_stores_nor_consumes_a_seq(outbox: Outbox) -> None:
    def broken(seq: int) -> bytes:
        raise ValueError("cannot encode")

    add(outbox)
    with pytest.raises(ValueError, match="cannot encode"):
        outbox.add("p", TOPIC, broken, qos=1)
    assert add(outbox) == 2  # no gap
    assert outbox.stats() == OutboxStats(depth=2, bytes=20, dropped=0, expired=0, dead=0)


def test_seq_survives_close_and_reopen(db: Path, clock: FakeClock) -> None:
    first = Outbox(db, clock=clock)
    assert [add(first, "a"), add(first, "a"), add(first, "b")] == [1, 2, 1]
    # Delivered and forgotten: the seq must still not restart.
    first.ack([e.id for e in first.pending()])
    first.close()

    second = Outbox(db, clock=clock)
    assert [add(second, "a"), add(second, "b"), add(second, "c")] == [3, 2, 1]
    second.close()


def test_seq_survives_events_being_dropped(db: Path) -> None:
    outbox = Outbox(db, max_events=1)
    assert [add(outbox) for _ in range(3)] == [1, 2, 3]
    assert seqs(outbox) == [("p", 3)]


# -- pending and ack ----------------------------------------------------------


def test_pending_is_oldest_first_across_pipelines(outbox: Outbox) -> None:
    for pipeline in "abab":
        add(outbox, pipeline)
    events = outbox.pending()
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert [(e.pipeline, e.seq, e.topic, e.qos) for e in events] == [
        ("a", 1, TOPIC, 1),
        ("b", 1, TOPIC, 1),
        ("a", 2, TOPIC, 1),
        ("b", 2, TOPIC, 1),
    ]


def test_pending_after_and_limit_page_through_the_backlog(outbox: Outbox) -> None:
    for _ in range(10):
        add(outbox)
    ids = [e.id for e in outbox.pending()]
    assert [e.id for e in outbox.pending(limit=3)] == ids[:3]
    assert [e.id for e in outbox.pending(after=ids[3], limit=4)] == ids[4:8]
    assert [e.id for e in outbox.pending(after=ids[7], limit=100)] == ids[8:]
    assert outbox.pending(after=ids[-1]) == []
    # Reading does not consume.
    assert [e.id for e in outbox.pending()] == ids


def test_ack_removes_a_batch(outbox: Outbox) -> None:
    for _ in range(5):
        add(outbox, size=7)
    ids = [e.id for e in outbox.pending()]
    outbox.ack([ids[0], ids[2], ids[4]])
    assert [e.id for e in outbox.pending()] == [ids[1], ids[3]]
    assert outbox.stats() == OutboxStats(depth=2, bytes=14, dropped=0, expired=0, dead=0)


def test_ack_of_unknown_or_repeated_ids_changes_nothing(outbox: Outbox) -> None:
    add(outbox)
    add(outbox)
    first = outbox.pending()[0].id
    outbox.ack([first])
    outbox.ack([first, 12345])
    outbox.ack([])
    assert outbox.stats() == OutboxStats(depth=1, bytes=10, dropped=0, expired=0, dead=0)


# -- bounds -------------------------------------------------------------------


def test_bound_by_count_drops_the_oldest(db: Path) -> None:
    outbox = Outbox(db, max_events=3)
    for _ in range(5):
        add(outbox)
    assert seqs(outbox) == [("p", 3), ("p", 4), ("p", 5)]
    assert outbox.stats() == OutboxStats(depth=3, bytes=30, dropped=2, expired=0, dead=0)


def test_drops_are_logged_once_per_interval_with_their_count(
    db: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(outbox_module, "limited", RateLimitedLog(outbox_module.log, 60.0, clock))
    outbox = Outbox(db, max_events=3)
    for _ in range(4):  # the first drop is logged at once
        add(outbox)
    for _ in range(20):  # then every add drops one, within the interval: silent
        add(outbox)
    clock.now += 61
    add(outbox)  # the interval is over: one line counts the 21 since
    for _ in range(5):
        add(outbox)  # silent again; reported at close
    outbox.close()
    lines = [r.getMessage() for r in caplog.records if "outbox full" in r.getMessage()]
    assert len(lines) == 3, lines
    assert "dropped the 1 oldest" in lines[0]
    assert "dropped the 21 oldest" in lines[1]
    assert "dropped the 5 oldest" in lines[2]
    assert outbox.stats().dropped == 27


def test_bound_by_bytes_drops_the_oldest(db: Path) -> None:
    outbox = Outbox(db, max_bytes=250)
    for _ in range(3):
        add(outbox, size=100)
    assert seqs(outbox) == [("p", 2), ("p", 3)]
    assert outbox.stats() == OutboxStats(depth=2, bytes=200, dropped=1, expired=0, dead=0)
    # One big event pushes out as many old ones as it takes.
    add(outbox, size=240)
    assert seqs(outbox) == [("p", 4)]
    assert outbox.stats() == OutboxStats(depth=1, bytes=240, dropped=3, expired=0, dead=0)


def test_bounds_drop_oldest_across_pipelines(db: Path) -> None:
    outbox = Outbox(db, max_events=2)
    add(outbox, "a")
    add(outbox, "b")
    add(outbox, "a")
    assert seqs(outbox) == [("b", 1), ("a", 2)]


# -- TTL ----------------------------------------------------------------------


def test_expired_events_are_not_pending_and_are_counted(outbox: Outbox, clock: FakeClock) -> None:
    add(outbox, ttl=10)
    add(outbox)  # no TTL: waits forever
    add(outbox, ttl=30)
    clock.now += 9.9
    assert seqs(outbox) == [("p", 1), ("p", 2), ("p", 3)]
    clock.now += 0.1  # exactly at the deadline: too late
    assert seqs(outbox) == [("p", 2), ("p", 3)]
    assert outbox.stats() == OutboxStats(depth=2, bytes=20, dropped=0, expired=1, dead=0)
    clock.now += 1_000_000
    assert seqs(outbox) == [("p", 2)]
    assert outbox.stats() == OutboxStats(depth=1, bytes=10, dropped=0, expired=2, dead=0)


def test_expiry_is_stored_with_the_event(outbox: Outbox, clock: FakeClock) -> None:
    add(outbox, ttl=5)
    add(outbox, ttl=None)
    add(outbox, ttl=0)  # settings: 0 means forever
    assert [e.expires for e in outbox.pending()] == [clock.now + 5, None, None]


def test_expired_events_beyond_the_page_are_removed_too(outbox: Outbox, clock: FakeClock) -> None:
    first = add(outbox)
    for _ in range(3):
        add(outbox, ttl=1)
    clock.now += 2
    assert [e.seq for e in outbox.pending(limit=1)] == [first]
    assert outbox.stats().expired == 3


# -- dead letters -------------------------------------------------------------


def test_dead_letter_moves_the_row_with_the_reason(
    db: Path, outbox: Outbox, clock: FakeClock
) -> None:
    add(outbox, "a")
    add(outbox, "b", size=20)
    victim = outbox.pending()[1]
    clock.now += 3
    outbox.dead_letter(victim.id, "Not authorized")
    assert seqs(outbox) == [("a", 1)]
    assert outbox.stats() == OutboxStats(depth=1, bytes=10, dropped=0, expired=0, dead=1)
    outbox.close()

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT id, pipeline, seq, topic, payload, reason, at FROM dead_letters"
        ).fetchall()
    conn.close()
    assert rows == [(victim.id, "b", 1, TOPIC, b"1:".ljust(20, b"x"), "Not authorized", clock.now)]


# -- stats --------------------------------------------------------------------


def test_stats_follow_every_change_and_survive_reopen(db: Path, clock: FakeClock) -> None:
    outbox = Outbox(db, max_events=4, clock=clock)
    assert outbox.stats() == OutboxStats(depth=0, bytes=0, dropped=0, expired=0, dead=0)
    for size in (10, 20, 30, 40):
        add(outbox, size=size)
    assert outbox.stats() == OutboxStats(depth=4, bytes=100, dropped=0, expired=0, dead=0)

    add(outbox, size=50)  # drops the 10-byte one
    assert outbox.stats() == OutboxStats(depth=4, bytes=140, dropped=1, expired=0, dead=0)

    ids = [e.id for e in outbox.pending()]  # sizes 20, 30, 40, 50
    outbox.ack([ids[0]])
    assert outbox.stats() == OutboxStats(depth=3, bytes=120, dropped=1, expired=0, dead=0)

    outbox.dead_letter(ids[1], "Quota exceeded")
    assert outbox.stats() == OutboxStats(depth=2, bytes=90, dropped=1, expired=0, dead=1)

    add(outbox, size=5, ttl=1)
    clock.now += 1
    outbox.pending()
    assert outbox.stats() == OutboxStats(depth=2, bytes=90, dropped=1, expired=1, dead=1)
    outbox.close()

    reopened = Outbox(db, max_events=4, clock=clock)
    assert reopened.stats() == OutboxStats(depth=2, bytes=90, dropped=1, expired=1, dead=1)
    # The in-memory depth is right after reopen: the bound still holds exactly.
    for _ in range(3):
        add(reopened, size=4)  # drops the 40-byte one
    assert reopened.stats() == OutboxStats(depth=4, bytes=62, dropped=2, expired=1, dead=1)
    reopened.close()


# -- corruption ---------------------------------------------------------------


def fill_and_close(db: Path, events: int = 300) -> None:
    outbox = Outbox(db)
    for _ in range(events):
        add(outbox, size=250)
    outbox.close()


def random_bytes(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(bytes(range(256)) * 64)


def truncated(db: Path) -> None:
    fill_and_close(db)
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])


def torn_header(db: Path) -> None:
    fill_and_close(db)
    db.write_bytes(db.read_bytes()[:50])


@pytest.mark.parametrize("corrupt", [random_bytes, truncated, torn_header])
def test_a_corrupt_file_is_moved_aside_and_a_fresh_outbox_works(
    db: Path, corrupt: Callable[[Path], None]
) -> None:
    corrupt(db)
    broken = db.read_bytes()
    # Leftovers of the broken database must not be replayed into the new one.
    db.with_name(db.name + "-wal").write_bytes(b"garbage" * 100)

    outbox = Outbox(db)

    (aside,) = db.parent.glob("outbox.db.corrupt-*")
    assert aside.read_bytes() == broken  # kept for a post-mortem
    assert outbox.stats() == OutboxStats(depth=0, bytes=0, dropped=0, expired=0, dead=0)
    assert [add(outbox), add(outbox)] == [1, 2]
    outbox.ack([outbox.pending()[0].id])
    outbox.close()
    assert seqs(Outbox(db)) == [("p", 2)]


def test_an_empty_file_is_a_fresh_outbox(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.touch()
    outbox = Outbox(db)
    assert add(outbox) == 1
    assert not list(db.parent.glob("outbox.db.corrupt-*"))


def test_a_locked_healthy_outbox_is_not_treated_as_corrupt(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_and_close(db, events=5)
    # Another process (say, the previous agent still shutting down) holds the
    # database in exclusive locking mode.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('PRAGMA locking_mode=EXCLUSIVE')\n"
            "db.execute('BEGIN IMMEDIATE'); db.execute('UPDATE seqs SET seq = seq')\n"
            "db.execute('COMMIT')\n"
            "print('locked', flush=True); time.sleep(60)\n",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        # sqlite3's default busy timeout is 5 s; shorten it, the outcome is the same.
        monkeypatch.setattr(sqlite3, "connect", partial(sqlite3.connect, timeout=0.2))
        # Refusing to start, naming the file, is right; throwing the backlog away is not.
        with pytest.raises(ConfigError, match="cannot open the outbox"):
            Outbox(db).close()
    finally:
        holder.kill()
        holder.wait()
    assert not list(db.parent.glob("outbox.db.corrupt-*"))
    reopened = Outbox(db)
    assert reopened.stats().depth == 5
    reopened.close()


# -- durability ---------------------------------------------------------------


@pytest.mark.parametrize(("durability", "synchronous"), [("power-loss", 2), ("crash", 1)])
def test_durability_sets_synchronous_and_wal(
    db: Path, durability: Durability, synchronous: int
) -> None:
    outbox = Outbox(db, durability=durability)
    # synchronous is per connection: ask the outbox's own.
    assert outbox._db.execute("PRAGMA synchronous").fetchone() == (synchronous,)
    assert add(outbox) == 1
    assert seqs(outbox) == [("p", 1)]
    # journal_mode is stored in the file: any connection sees it.
    other = sqlite3.connect(db)
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert other.execute("SELECT COUNT(*) FROM events").fetchone() == (1,)
    other.close()
    outbox.close()


READ_IN_SUBPROCESS = """
import json, sys
from pathlib import Path
from edge_agent.mqtt.outbox import Outbox
outbox = Outbox(Path(sys.argv[1]))
events = outbox.pending(limit=1000)
seq = outbox.reserve_seqs("p", 1)
print(json.dumps({"seqs": [e.seq for e in events], "payloads": [e.payload.decode() for e in events],
                  "depth": outbox.stats().depth, "next": seq}))
"""


@pytest.mark.parametrize("durability", ["power-loss", "crash"])
def test_committed_events_are_visible_to_another_process_before_close(
    db: Path, durability: Durability
) -> None:
    writer = Outbox(db, durability=durability)
    for _ in range(20):
        add(writer)
    # Not closed: nothing checkpointed, the events live only in the WAL.
    assert db.with_name("outbox.db-wal").stat().st_size > 0

    seen = json.loads(run_python(READ_IN_SUBPROCESS, str(db)))

    assert seen["seqs"] == list(range(1, 21))
    assert seen["payloads"][0] == "1:xxxxxxxx"
    assert seen["depth"] == 20
    assert seen["next"] == 21
    writer.close()


WRITE_AND_DIE = """
import os, signal, sys
from pathlib import Path
from edge_agent.mqtt.outbox import Outbox
outbox = Outbox(Path(sys.argv[1]), durability=sys.argv[2])
for _ in range(50):
    outbox.add("p", "t", lambda seq: b"%d" % seq, qos=1)
os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint, no atexit
"""


@pytest.mark.parametrize("durability", ["power-loss", "crash"])
def test_events_survive_the_writer_being_killed(db: Path, durability: Durability) -> None:
    run_python(WRITE_AND_DIE, str(db), durability, killed=True)
    assert db.with_name("outbox.db-wal").stat().st_size > 0

    outbox = Outbox(db)
    events = outbox.pending(limit=1000)
    assert [e.seq for e in events] == list(range(1, 51))
    assert [e.payload for e in events] == [b"%d" % n for n in range(1, 51)]
    assert outbox.stats().depth == 50
    assert add(outbox) == 51
    outbox.close()


# -- threads ------------------------------------------------------------------


def test_concurrent_adds_get_gapless_unique_seqs(db: Path) -> None:
    outbox = Outbox(db, durability="crash")
    start = threading.Barrier(4)
    returned: dict[str, list[int]] = {"a": [], "b": []}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            start.wait()
            for n in range(250):
                pipeline = "ab"[n % 2]
                seq = outbox.add(pipeline, TOPIC, lambda s: json.dumps({"seq": s}).encode(), qos=1)
                with lock:
                    returned[pipeline].append(seq)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=producer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sorted(returned["a"]) == list(range(1, 501))
    assert sorted(returned["b"]) == list(range(1, 501))

    events = outbox.pending(limit=10_000)
    for pipeline in "ab":
        mine = [e for e in events if e.pipeline == pipeline]
        # Stored in seq order (the seq is allocated in the insert's transaction)...
        assert [e.seq for e in mine] == list(range(1, 501))
        # ...and each payload was built with the seq it is stored under.
        assert all(json.loads(e.payload)["seq"] == e.seq for e in mine)
    assert outbox.stats().depth == 1000
    outbox.close()

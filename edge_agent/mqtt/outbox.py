"""The durable outbox: every QoS 1/2 event is committed here (SQLite, WAL) before
MQTT sees it, and leaves only when the broker has acknowledged it.

It also keeps each pipeline's `seq`, in the same transaction as the event, so a
crash can neither repeat a number nor leave a gap.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_agent.errors import ConfigError

log = logging.getLogger(__name__)

Durability = Literal["power-loss", "crash"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    created REAL NOT NULL,
    expires REAL
);
CREATE INDEX IF NOT EXISTS events_expires ON events (expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS seqs (pipeline TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    pipeline TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

ACK_CHUNK = 500  # ids per DELETE; SQLite allows 32766 parameters
DELETE_ONE = "DELETE FROM events WHERE id = ? RETURNING LENGTH(payload)"
DELETE_EXPIRED = (
    "DELETE FROM events WHERE expires IS NOT NULL AND expires <= ? RETURNING LENGTH(payload)"
)


@dataclass(frozen=True)
class NewEvent:
    """An event to store; `build(seq)` makes its payload once its seq is known."""

    pipeline: str
    topic: str
    build: Callable[[int], bytes]
    qos: int
    ttl: float | None = None


@dataclass(frozen=True)
class StoredEvent:
    id: int
    pipeline: str
    seq: int
    topic: str
    payload: bytes
    qos: int
    expires: float | None


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    bytes: int
    dropped: int  # oldest events removed to stay within the bounds
    expired: int  # events whose TTL ran out before the broker took them
    dead: int  # events the broker refused, kept in dead_letters


class Outbox:
    """Thread-safe: pipelines `add`, the dispatcher reads `pending` and settles
    with `ack` or `dead_letter`. One connection, one lock; every write is one
    transaction."""

    def __init__(
        self,
        path: Path,
        *,
        max_events: int = 10_000,
        max_bytes: int = 10_000_000,
        durability: Durability = "power-loss",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = open_database(path, durability)
        self._durability = durability
        self._closed = False
        self._last_stats = OutboxStats(0, 0, 0, 0, 0)
        # Kept in memory: counting the table on every add would cost O(depth).
        self._depth, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM events"
        ).fetchone()

    def add(
        self,
        pipeline: str,
        topic: str,
        build: Callable[[int], bytes],
        *,
        qos: int,
        ttl: float | None = None,
    ) -> int:
        """Allocate the pipeline's next seq, build the payload with it, store both."""
        return self.add_many([NewEvent(pipeline, topic, build, qos, ttl)])[0]

    def add_many(self, events: Sequence[NewEvent]) -> list[int]:
        """Store several events in one transaction: one disk sync for all of them."""
        now = self._clock()
        seqs = []
        last: dict[str, int] = {}
        with self._lock, self._db:
            for event in events:
                seq = last.get(event.pipeline) or self._last_seq(event.pipeline)
                seq = last[event.pipeline] = seq + 1
                payload = event.build(seq)
                expires = now + event.ttl if event.ttl else None
                self._db.execute(
                    "INSERT INTO events (pipeline, seq, topic, payload, qos, created, expires)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (event.pipeline, seq, event.topic, payload, event.qos, now, expires),
                )
                self._depth += 1
                self._bytes += len(payload)
                seqs.append(seq)
            self._db.executemany("INSERT OR REPLACE INTO seqs VALUES (?, ?)", last.items())
            self._enforce_bounds()
        return seqs

    def next_seq(self, pipeline: str) -> int:
        """Allocate a seq without storing an event (QoS 0 events are not kept)."""
        with self._lock, self._db:
            return self._next_seq(pipeline)

    def _next_seq(self, pipeline: str) -> int:
        seq = self._last_seq(pipeline) + 1
        self._db.execute("INSERT OR REPLACE INTO seqs VALUES (?, ?)", (pipeline, seq))
        return seq

    def _last_seq(self, pipeline: str) -> int:
        row = self._db.execute("SELECT seq FROM seqs WHERE pipeline = ?", (pipeline,))
        return int((row.fetchone() or (0,))[0])

    def _enforce_bounds(self) -> None:
        dropped = 0
        while self._depth > self.max_events or self._bytes > self.max_bytes:
            ((length,),) = self._db.execute(
                "DELETE FROM events WHERE id = (SELECT MIN(id) FROM events)"
                " RETURNING LENGTH(payload)"
            ).fetchall()
            self._depth, self._bytes, dropped = self._depth - 1, self._bytes - length, dropped + 1
        if dropped:
            self._count("dropped", dropped)
            log.warning("outbox full: dropped the %d oldest event(s)", dropped)

    def _delete(self, query: str, params: tuple[object, ...]) -> int:
        """Run one of the DELETE_* queries, keeping the in-memory depth and bytes right."""
        rows = self._db.execute(query, params).fetchall()
        self._depth -= len(rows)
        self._bytes -= sum(length for (length,) in rows)
        return len(rows)

    def _count(self, name: str, amount: int) -> None:
        self._db.execute(
            "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            (name, amount, amount),
        )

    def pending(self, after: int = 0, limit: int = 100) -> list[StoredEvent]:
        """Events after id `after`, oldest first; expired ones are removed and counted."""
        now = self._clock()
        with self._lock, self._db:
            expired = self._sweep(now)
            if expired:
                self._count("expired", expired)
                log.warning("outbox: %d event(s) expired before delivery", expired)
            rows = self._db.execute(
                "SELECT id, pipeline, seq, topic, payload, qos, expires FROM events"
                " WHERE id > ? AND (expires IS NULL OR expires > ?) ORDER BY id LIMIT ?",
                (after, now, limit),
            ).fetchall()
        return [StoredEvent(*row) for row in rows]

    @contextmanager
    def _relaxed_sync(self) -> Iterator[None]:
        """Deleting acknowledged events needs no disk sync of its own: lost in a
        power cut, they are only sent once more (at least once), and the next
        synced commit persists the deletion anyway."""
        if self._durability != "power-loss":
            yield
            return
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def _sweep(self, now: float) -> int:
        """Remove expired events; the partial index on `expires` keeps this cheap
        when there are none, as the dispatcher asks hundreds of times a second."""
        return self._delete(DELETE_EXPIRED, (now,))

    def ack(self, ids: Iterable[int]) -> int:
        """The broker has the events: forget them (one transaction for many).
        Returns how many were still here (an expired one may be gone already)."""
        pending = list(ids)
        deleted = 0
        with self._lock, self._relaxed_sync(), self._db:
            for start in range(0, len(pending), ACK_CHUNK):
                chunk = tuple(pending[start : start + ACK_CHUNK])
                marks = ",".join("?" * len(chunk))
                query = f"DELETE FROM events WHERE id IN ({marks}) RETURNING LENGTH(payload)"  # noqa: S608 - only "?" marks
                deleted += self._delete(query, chunk)
        return deleted

    def dead_letter(self, event_id: int, reason: str) -> None:
        """The broker refused the event: keep it aside with the reason, never retry."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO dead_letters SELECT id, pipeline, seq, topic, payload, ?, ?"
                " FROM events WHERE id = ?",
                (reason, self._clock(), event_id),
            )
            if self._delete(DELETE_ONE, (event_id,)):  # not if it expired meanwhile
                self._count("dead", 1)

    def stats(self) -> OutboxStats:
        """Counts; still answers after `close` (from the last known values)."""
        with self._lock:
            if self._closed:
                return self._last_stats
            counts = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            depth, size = self._depth, self._bytes
        return OutboxStats(
            depth, size, counts.get("dropped", 0), counts.get("expired", 0), counts.get("dead", 0)
        )

    def close(self) -> None:
        stats = self.stats()
        with self._lock:
            self._last_stats, self._closed = stats, True
            self._db.close()


def open_database(path: Path, durability: Durability) -> sqlite3.Connection:
    """Open (creating) the outbox; a file that is not a healthy database is moved
    aside and replaced by a fresh one: losing a corrupt backlog beats not running."""
    try:
        return _open_checked(path, durability)
    except sqlite3.OperationalError as exc:
        # Locked (another agent on the same state_dir?), I/O error, disk full: the
        # file may be healthy, so it must not be touched.
        raise ConfigError(f"state_dir: cannot open the outbox {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(
            f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        )
        log.error(
            "outbox %s is unreadable (%s); moved it to %s and starting a new one", path, exc, aside
        )
        path.replace(aside)
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return _open_checked(path, durability)


def _open_checked(path: Path, durability: Durability) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL syncs the WAL on every commit (survives power loss); NORMAL survives a
        # crash of the process but may lose the last commits on power loss.
        db.execute(f"PRAGMA synchronous={'FULL' if durability == 'power-loss' else 'NORMAL'}")
        (result,) = db.execute("PRAGMA quick_check").fetchone()
        if result != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {result}")
        db.executescript(SCHEMA)
    except sqlite3.DatabaseError:
        db.close()
        raise
    db.isolation_level = "DEFERRED"  # `with db:` now wraps each write in a transaction
    return db

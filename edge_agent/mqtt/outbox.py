"""The durable outbox: every QoS 1/2 event is committed here (SQLite, WAL) before
MQTT sees it, and leaves only when the broker has acknowledged it.

It also keeps each pipeline's `seq`, in the same transaction as the event, so a
crash can neither repeat a number nor leave a gap.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_agent.errors import ConfigError, DiskFullError, OutboxError
from edge_agent.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
limited = RateLimitedLog(log)

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
# SQLite's default (1000 pages, 4 MB) lets the WAL alone fill a small partition,
# and then even a checkpoint cannot run (it must grow the database file). A WAL
# kept small is reused from its start after each checkpoint, so deletes (acks)
# still fit on a full disk.
WAL_AUTOCHECKPOINT = 128  # pages
# New events stop this short of a full disk (at most a quarter of a small one):
# what is left lets acknowledgements and checkpoints run, so the outbox can
# still drain while nothing new fits.
RESERVE_BYTES = 512 * 1024
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


@dataclass
class _Tally:
    """Changes a transaction makes to the in-memory counters; applied only once
    it has committed, so a failed write (disk full) leaves them true."""

    depth: int = 0
    bytes: int = 0
    dropped: int = 0


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
        self._unreported_drops = 0  # dropped since the last log line
        # Kept in memory: counting the table on every add would cost O(depth).
        self._depth, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM events"
        ).fetchone()

    @contextmanager
    def _write(self, doing: str, *, relaxed: bool = False) -> Iterator[_Tally]:
        """One transaction under the lock; sqlite3's errors leave as OutboxError
        (DiskFullError for a full disk) and the counters change only on commit.
        `relaxed`: see `_relaxed_sync`."""
        tally = _Tally()
        with self._lock:
            try:
                with self._relaxed_sync() if relaxed else nullcontext(), self._db:
                    yield tally
            except sqlite3.Error as exc:
                self._recover(exc)
                raise translate(exc, doing) from exc
            self._depth += tally.depth
            self._bytes += tally.bytes
        if tally.dropped:
            self._report_drops(tally.dropped)

    def _recover(self, exc: sqlite3.Error) -> None:
        """After a failed write: make sure the transaction is gone and, if the disk
        is full, checkpoint so the next write can reuse the WAL from its start."""
        try:
            if self._db.in_transaction:
                self._db.rollback()
            if is_full(exc):
                self._db.execute("PRAGMA wal_checkpoint(RESTART)")
        except sqlite3.Error as again:  # still full: the caller retries later
            log.debug("outbox: recovery after %s failed: %s", exc, again)

    def _report_drops(self, dropped: int) -> None:
        """Rate-limited: with a full outbox every new event drops one."""
        self._unreported_drops += dropped
        if limited.warning(
            "dropped",
            "outbox full (max_events %d, max_bytes %d): dropped the %d oldest event(s)",
            self.max_events,
            self.max_bytes,
            self._unreported_drops,
        ):
            self._unreported_drops = 0

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
        self._check_space(len(events))
        now = self._clock()
        seqs = []
        last: dict[str, int] = {}
        with self._write(f"store {len(events)} event(s)") as tally:
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
                tally.depth += 1
                tally.bytes += len(payload)
                seqs.append(seq)
            self._db.executemany("INSERT OR REPLACE INTO seqs VALUES (?, ?)", last.items())
            self._enforce_bounds(tally)
        return seqs

    def _check_space(self, count: int) -> None:
        try:
            usage = shutil.disk_usage(self.path.parent)
        except OSError as exc:
            raise OutboxError(f"outbox: cannot store {count} event(s): {exc}") from exc
        reserve = min(RESERVE_BYTES, usage.total // 4)
        if usage.free < reserve:
            raise DiskFullError(
                f"outbox: cannot store {count} event(s): {usage.free} bytes free on"
                f" {self.path.parent}, {reserve} kept for acknowledgements"
            )

    def reserve_seqs(self, pipeline: str, count: int) -> int:
        """The first of `count` seqs reserved for events that are not stored (QoS 0):
        one write per block, and a restart continues after the block."""
        with self._write(f"reserve seqs for {pipeline}"):
            first = self._last_seq(pipeline) + 1
            last = first + count - 1
            self._db.execute("INSERT OR REPLACE INTO seqs VALUES (?, ?)", (pipeline, last))
            return first

    def _next_seq(self, pipeline: str) -> int:
        seq = self._last_seq(pipeline) + 1
        self._db.execute("INSERT OR REPLACE INTO seqs VALUES (?, ?)", (pipeline, seq))
        return seq

    def _last_seq(self, pipeline: str) -> int:
        row = self._db.execute("SELECT seq FROM seqs WHERE pipeline = ?", (pipeline,))
        return int((row.fetchone() or (0,))[0])

    def _enforce_bounds(self, tally: _Tally) -> None:
        while (
            self._depth + tally.depth > self.max_events
            or self._bytes + tally.bytes > self.max_bytes
        ):
            ((length,),) = self._db.execute(
                "DELETE FROM events WHERE id = (SELECT MIN(id) FROM events)"
                " RETURNING LENGTH(payload)"
            ).fetchall()
            tally.depth, tally.bytes, tally.dropped = (
                tally.depth - 1,
                tally.bytes - length,
                tally.dropped + 1,
            )
        if tally.dropped:
            self._count("dropped", tally.dropped)

    def _delete(self, query: str, params: tuple[object, ...], tally: _Tally) -> int:
        """Run one of the DELETE_* queries, counting what it removed in `tally`."""
        rows = self._db.execute(query, params).fetchall()
        tally.depth -= len(rows)
        tally.bytes -= sum(length for (length,) in rows)
        return len(rows)

    def _count(self, name: str, amount: int) -> None:
        self._db.execute(
            "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            (name, amount, amount),
        )

    def pending(self, after: int = 0, limit: int = 100) -> list[StoredEvent]:
        """Events after id `after`, oldest first; expired ones are removed and counted."""
        now = self._clock()
        with self._write("read pending events") as tally:
            expired = self._sweep(now, tally)
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

    def _sweep(self, now: float, tally: _Tally) -> int:
        """Remove expired events; the partial index on `expires` keeps this cheap
        when there are none, as the dispatcher asks hundreds of times a second."""
        return self._delete(DELETE_EXPIRED, (now,), tally)

    def ack(self, ids: Iterable[int]) -> int:
        """The broker has the events: forget them (one transaction for many).
        Returns how many were still here (an expired one may be gone already)."""
        pending = list(ids)
        deleted = 0
        with self._write(f"acknowledge {len(pending)} event(s)", relaxed=True) as tally:
            for start in range(0, len(pending), ACK_CHUNK):
                chunk = tuple(pending[start : start + ACK_CHUNK])
                marks = ",".join("?" * len(chunk))
                query = f"DELETE FROM events WHERE id IN ({marks}) RETURNING LENGTH(payload)"  # noqa: S608 - only "?" marks
                deleted += self._delete(query, chunk, tally)
        return deleted

    def dead_letter(self, event_id: int, reason: str) -> None:
        """The broker refused the event: keep it aside with the reason, never retry."""
        with self._write(f"dead-letter event {event_id}") as tally:
            self._db.execute(
                "INSERT INTO dead_letters SELECT id, pipeline, seq, topic, payload, ?, ?"
                " FROM events WHERE id = ?",
                (reason, self._clock(), event_id),
            )
            if self._delete(DELETE_ONE, (event_id,), tally):  # not if it expired meanwhile
                self._count("dead", 1)

    def stats(self) -> OutboxStats:
        """Counts; still answers after `close`, or when the database cannot be
        read (from the last known values)."""
        with self._lock:
            if self._closed:
                return self._last_stats
            try:
                counts = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            except sqlite3.Error as exc:
                limited.error("stats", "%s", translate(exc, "read the counters"))
                counts = {"dropped": self._last_stats.dropped, "expired": self._last_stats.expired}
                counts["dead"] = self._last_stats.dead
            self._last_stats = OutboxStats(
                self._depth,
                self._bytes,
                counts.get("dropped", 0),
                counts.get("expired", 0),
                counts.get("dead", 0),
            )
            return self._last_stats

    def close(self) -> None:
        stats = self.stats()
        if self._unreported_drops:
            log.warning("outbox full: dropped the %d oldest event(s)", self._unreported_drops)
            self._unreported_drops = 0
        with self._lock:
            self._last_stats, self._closed = stats, True
            self._db.close()


def is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "is full" in str(exc)


def translate(exc: sqlite3.Error, doing: str) -> OutboxError:
    """sqlite3's exceptions stop here: above the outbox only OutboxError is seen."""
    if is_full(exc):
        return DiskFullError(f"outbox: cannot {doing}: the disk is full ({exc})")
    return OutboxError(f"outbox: cannot {doing}: {exc}")


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
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
        (result,) = db.execute("PRAGMA quick_check").fetchone()
        if result != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {result}")
        db.executescript(SCHEMA)
    except sqlite3.DatabaseError:
        db.close()
        raise
    db.isolation_level = "DEFERRED"  # `with db:` now wraps each write in a transaction
    return db

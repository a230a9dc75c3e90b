"""What `edge-agent fleet` saw, kept in a local SQLite file: each device's models
over time and every status and update transition, so an operator can ask after
the fact "which devices still run version 7" or "what did gate-2 do last night".

Only real transitions are stored: a `fleet status` run re-reads every retained
topic, and a model or status equal to the one recorded already adds nothing.
Changes arrive on paho's thread; they are buffered and written by `flush()`
(one transaction), called by the command's loop and on exit.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError
from edge_agent.fleet.view import Change

SCHEMA = """
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, ts REAL NOT NULL, kind TEXT NOT NULL,
    pipeline TEXT, value TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS transitions_device ON transitions (device, ts);
CREATE TABLE IF NOT EXISTS models (
    device TEXT NOT NULL, pipeline TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
    sha256 TEXT, since REAL NOT NULL, PRIMARY KEY (device, pipeline));
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY, online TEXT, update_state TEXT, first_seen REAL, last_seen REAL);
"""


@dataclass(frozen=True)
class Running:
    device: str
    pipeline: str
    name: str
    version: str
    since: float


@dataclass(frozen=True)
class Transition:
    device: str
    ts: float
    kind: str
    pipeline: str | None
    value: str | None
    detail: dict[str, Any] | None


class History:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # a lost last second is acceptable
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"fleet history {path}: cannot open: {exc}") from exc
        self._lock = threading.Lock()
        self._pending: list[Change] = []

    def add(self, changes: Iterable[Change]) -> None:
        """Buffer changes (any thread); `flush` writes them."""
        with self._lock:
            self._pending.extend(changes)

    def flush(self) -> int:
        """Write the buffered changes; returns the transitions stored."""
        with self._lock:
            pending, self._pending = self._pending, []
        stored = 0
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for change in pending:
                    stored += self._store(change)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return stored

    def _store(self, change: Change) -> int:
        db = self._db
        db.execute(
            "INSERT INTO devices (device, first_seen, last_seen) VALUES (?, ?, ?) "
            "ON CONFLICT (device) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
            (change.device, change.ts, change.ts),
        )
        if change.kind == "model" and not self._model_changed(change):
            return 0
        if change.kind in ("status", "update") and not self._device_changed(change):
            return 0
        db.execute(
            "INSERT INTO transitions (device, ts, kind, pipeline, value, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                change.device,
                change.ts,
                change.kind,
                change.pipeline,
                change.value,
                None if change.detail is None else json.dumps(change.detail, sort_keys=True),
            ),
        )
        return 1

    def _model_changed(self, change: Change) -> bool:
        name, _, version = (change.value or "").partition(":")
        sha = (change.detail or {}).get("sha256")
        row = self._db.execute(
            "SELECT name, version, sha256 FROM models WHERE device = ? AND pipeline = ?",
            (change.device, change.pipeline),
        ).fetchone()
        if row == (name, version, sha):
            return False
        self._db.execute(
            "INSERT OR REPLACE INTO models VALUES (?, ?, ?, ?, ?, ?)",
            (change.device, change.pipeline, name, version, sha, change.ts),
        )
        return True

    def _device_changed(self, change: Change) -> bool:
        column = "online" if change.kind == "status" else "update_state"
        value = change.value if change.kind == "status" else _update_key(change)
        row = self._db.execute(
            f"SELECT {column} FROM devices WHERE device = ?",  # noqa: S608 - fixed names
            (change.device,),
        ).fetchone()
        if row is not None and row[0] == value:
            return False
        self._db.execute(
            f"UPDATE devices SET {column} = ? WHERE device = ?",  # noqa: S608 - fixed names
            (value, change.device),
        )
        return True

    def running(self, version: str, name: str | None = None) -> list[Running]:
        """Devices whose last known model (any pipeline) has this version."""
        query = "SELECT device, pipeline, name, version, since FROM models WHERE version = ?"
        args: tuple[str, ...] = (version,)
        if name is not None:
            query += " AND name = ?"
            args += (name,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY device, pipeline", args).fetchall()
        return [Running(*row) for row in rows]

    def transitions(self, device: str | None = None, limit: int = 1000) -> list[Transition]:
        query = "SELECT device, ts, kind, pipeline, value, detail FROM transitions"
        args: tuple[object, ...] = ()
        if device is not None:
            query += " WHERE device = ?"
            args = (device,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY ts, id LIMIT ?", (*args, limit)).fetchall()
        return [_transition(row) for row in rows]

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()


def _transition(row: tuple[Any, ...]) -> Transition:
    device, ts, kind, pipeline, value, detail = row
    return Transition(
        device, ts, kind, pipeline, value, None if detail is None else json.loads(detail)
    )


def _update_key(change: Change) -> str:
    """An update status, without its timestamp: the same outcome re-read is no transition."""
    detail = {k: v for k, v in (change.detail or {}).items() if k != "ts"}
    return json.dumps(detail, sort_keys=True)

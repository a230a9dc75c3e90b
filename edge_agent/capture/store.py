"""Captured samples on disk: `<stem>.<ext>` (the input) beside `<stem>.json` (the
sidecar), both written atomically, the sidecar last, so a sidecar means a complete
sample. Stems start with the capture time in ms, so name order is age order.

The store keeps within a byte quota and an age limit by evicting the oldest
samples first. An uploader that has sent a sample's input deletes it; a sidecar
without its input is a sample half uploaded.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.util.fs import atomic_write

log = logging.getLogger(__name__)

SIDECAR = ".json"


@dataclass(frozen=True)
class StoreOptions:
    directory: Path
    quota_bytes: int = 200 << 20
    max_age: float = 30 * 86_400.0  # seconds

    def __post_init__(self) -> None:
        if self.quota_bytes < 1 or self.max_age <= 0:
            raise ValueError("quota_bytes and max_age must be positive")


@dataclass(frozen=True)
class Sample:
    """A sample ready for the disk: the input's bytes and file suffix, the sidecar."""

    stem: str
    data: bytes
    suffix: str  # ".jpg", ".csv", ".wav"
    sidecar: dict[str, Any]


@dataclass(frozen=True)
class Entry:
    stem: str
    sidecar: Path
    input: Path | None  # None once uploaded
    size: int


def new_stem(epoch: float, pipeline: str) -> str:
    return f"{int(epoch * 1000):013d}-{pipeline}-{uuid.uuid4().hex[:8]}"


def stem_time(stem: str) -> float:
    """The capture time (epoch seconds) a stem starts with."""
    return int(stem.split("-", 1)[0]) / 1000.0


class SampleStore:
    """Thread-safe: the capture writer saves, the uploader and eviction remove."""

    def __init__(self, options: StoreOptions, *, clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.directory = options.directory
        self._clock = clock
        self._lock = threading.Lock()
        self.evicted = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[str, int] = {e.stem: e.size for e in self.entries()}
        for temp in self.directory.glob(".*.tmp"):  # a write cut short by a crash
            temp.unlink(missing_ok=True)

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._sizes)

    def save(self, sample: Sample) -> None:
        """Write the input, then the sidecar; OSError (a full disk) after removing
        what was half written. Then evict to stay within quota and age."""
        data_path = self.directory / f"{sample.stem}{sample.suffix}"
        side_path = self.directory / f"{sample.stem}{SIDECAR}"
        side = json.dumps(sample.sidecar, separators=(",", ":")).encode()
        try:
            atomic_write(data_path, sample.data)
            atomic_write(side_path, side)
        except OSError:
            for path in (data_path, side_path):
                path.unlink(missing_ok=True)
                path.with_name(f".{path.name}.tmp").unlink(missing_ok=True)
            raise
        with self._lock:
            self._sizes[sample.stem] = len(sample.data) + len(side)
        self.evict()

    def evict(self) -> int:
        """Remove the oldest samples beyond the quota or the age limit; how many."""
        removed = 0
        oldest = self._clock() - self.options.max_age
        while True:
            with self._lock:
                if not self._sizes:
                    return removed
                stem = min(self._sizes)
                over = sum(self._sizes.values()) > self.options.quota_bytes
                if not over and stem_time(stem) >= oldest:
                    return removed
            self.remove(stem)
            removed += 1
            self.evicted += 1
            log.info("samples: evicted %s (%s)", stem, "quota" if over else "age")

    def remove(self, stem: str) -> None:
        for path in self.directory.glob(f"{stem}.*"):
            path.unlink(missing_ok=True)
        with self._lock:
            self._sizes.pop(stem, None)

    def input_sent(self, entry: Entry) -> None:
        """The input reached the server: only the sidecar remains here."""
        if entry.input is not None:
            entry.input.unlink(missing_ok=True)
        with self._lock:
            if entry.stem in self._sizes:
                self._sizes[entry.stem] = entry.sidecar.stat().st_size

    def entries(self) -> list[Entry]:
        """Complete samples, oldest first (read from the disk)."""
        return scan(self.directory)


def scan(directory: Path) -> list[Entry]:
    """The complete samples in `directory`, oldest first; only reads (safe beside a
    running daemon)."""
    found = []
    for side in sorted(directory.glob(f"*{SIDECAR}")):
        stem = side.name[: -len(SIDECAR)]
        inputs = [p for p in directory.glob(f"{stem}.*") if p.suffix != SIDECAR]
        try:
            size = side.stat().st_size + sum(p.stat().st_size for p in inputs)
        except OSError:  # removed meanwhile
            continue
        found.append(Entry(stem, side, inputs[0] if inputs else None, size))
    return found


def read_sidecar(entry: Entry) -> dict[str, Any] | None:
    """The sidecar's JSON, or None (logged) if it cannot be read."""
    try:
        value = json.loads(entry.sidecar.read_bytes())
    except (OSError, ValueError) as exc:
        log.error("samples: cannot read %s: %s", entry.sidecar, exc)
        return None
    return value if isinstance(value, dict) else None

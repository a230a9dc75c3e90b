"""Per-pipeline event sequence numbers that survive restarts and power cuts."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from edge_agent.errors import ConfigError


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename, fsync of the directory:
    after a power cut the file holds the old bytes or the new, never a mix."""
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class SeqCounter:
    """`next` returns 1, 2, 3, ... across restarts; the number is on disk before
    it is used, so a crash can skip a number but never repeat one."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            text = path.read_text(encoding="ascii").strip() if path.exists() else "0"
        except OSError as exc:
            raise ConfigError(f"state_dir: cannot use {path.parent}: {exc.strerror}") from exc
        self._value = int(text) if text.isdigit() else 0

    def next(self) -> int:
        with self._lock:
            self._value += 1
            atomic_write(self._path, str(self._value).encode("ascii"))
            return self._value

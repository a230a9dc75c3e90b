"""The one thread that writes captured samples: pipelines hand samples over with
`offer` (never blocking: a full queue drops the sample and counts it), the writer
encodes the input (JPEG bytes as read, a sensor window as CSV, audio as WAV) and
saves it. A full disk stops capture, says so once, and leaves the pipelines deciding.
"""

from __future__ import annotations

import errno
import io
import logging
import queue
import threading
import wave
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.capture.store import Sample, SampleStore, new_stem
from edge_agent.sources.base import Audio, Frame, Item
from edge_agent.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
limited = RateLimitedLog(log)

DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


@dataclass(frozen=True)
class Pending:
    """What a pipeline hands over: the input as it came, and the sidecar's fields."""

    pipeline: str
    item: Item
    sidecar: dict[str, Any]


@dataclass
class PipelineCounts:
    kept: int = 0  # written to the disk
    dropped: int = 0  # the queue was full, or capture had stopped
    failed: int = 0  # a write failed (other than a full disk)


def encode_input(item: Item) -> tuple[bytes, str]:
    """The input's bytes and file suffix."""
    if isinstance(item, Frame):
        return item.data, _image_suffix(item.data)
    if isinstance(item, Audio):
        out = io.BytesIO()
        with wave.open(out, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(item.rate)
            wav.writeframes(np.asarray(item.values, dtype="<i2").tobytes())
        return out.getvalue(), ".wav"
    values = np.asarray(item.values, dtype=np.float64)
    rows = values.reshape(values.shape[0], -1) if values.ndim else values.reshape(1, 1)
    text = io.StringIO()
    np.savetxt(text, rows, delimiter=",", fmt="%.7g")
    return text.getvalue().encode("ascii"), ".csv"


def _image_suffix(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:2] == b"BM":
        return ".bmp"
    return ".img"


class CaptureWriter:
    """`offer` from any thread; `run` is the writer thread's body."""

    def __init__(self, store: SampleStore, *, capacity: int = 16) -> None:
        self.store = store
        self._queue: queue.Queue[Pending] = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self.counts: dict[str, PipelineCounts] = {}
        self.stopped: str | None = None  # why capture stopped (a full disk)

    def _counts(self, pipeline: str) -> PipelineCounts:
        with self._lock:
            return self.counts.setdefault(pipeline, PipelineCounts())

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def offer(self, pending: Pending) -> bool:
        """Queue a sample for the disk; False (counted as dropped) if it cannot wait."""
        if self.stopped is None:
            try:
                self._queue.put_nowait(pending)
                return True
            except queue.Full:
                pass
        self._counts(pending.pipeline).dropped += 1
        return False

    def run(self, stop: threading.Event) -> None:
        """Write until `stop`, then what is still queued (bounded by the queue's size)."""
        while not stop.is_set():
            try:
                pending = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self.write(pending)
        while True:
            try:
                self.write(self._queue.get_nowait())
            except queue.Empty:
                return

    def write(self, pending: Pending) -> None:
        counts = self._counts(pending.pipeline)
        if self.stopped is not None:
            counts.dropped += 1
            return
        try:
            data, suffix = encode_input(pending.item)
            stem = new_stem(pending.item.captured, pending.pipeline)
            sidecar = {**pending.sidecar, "input": stem + suffix}
            self.store.save(Sample(stem, data, suffix, sidecar))
        except OSError as exc:
            if exc.errno in DISK_FULL:
                self.stopped = f"disk full: {exc.strerror or exc}"
                counts.dropped += 1
                log.error(
                    "samples: capture stopped, %s cannot take more (%s); "
                    "pipelines keep deciding; free space and restart to capture again",
                    self.store.directory,
                    exc,
                )
                return
            counts.failed += 1
            limited.error(
                "samples-write", "samples: cannot write to %s: %s", self.store.directory, exc
            )
            return
        except (ValueError, TypeError) as exc:  # an input that cannot be encoded
            counts.failed += 1
            limited.error(
                "samples-encode", "samples: cannot encode a %s input: %s", pending.pipeline, exc
            )
            return
        counts.kept += 1

"""Samples as text lines, one per line, from a file, a FIFO, stdin or a serial port.

Unpaced lines arrive by the thousand (a replay at `rate = 0`, a fast port), so
each chunk's lines are parsed, windowed and queued together.
"""

from __future__ import annotations

import logging
import os
import select
import stat
import sys
import threading
from dataclasses import dataclass, field
from typing import Literal

from edge_agent.errors import InputError
from edge_agent.sources.base import Window
from edge_agent.sources.pacing import Pacer
from edge_agent.sources.sensor.common import DEFAULT_QUEUE_SIZE, SensorSource, check_channels
from edge_agent.sources.sensor.csvblock import BOM, parse_csv_block
from edge_agent.sources.sensor.parsing import parse_line
from edge_agent.sources.sensor.window import SlidingWindow
from edge_agent.util.backoff import Backoff, BackoffOptions

logger = logging.getLogger(__name__)

_POLL_INTERVAL = 0.1  # seconds between checks for more data, rotation, or close()
_CHUNK = 65536
_PULL_CHUNK = 16384  # a replay's windows per read stay few even with hop 1
_MAX_LINE = 65536  # a serial port at the wrong baud rate can send megabytes without a newline
_BACKOFF_FIRST = 0.5  # seconds before reopening a failed device; doubles up to the cap
_BACKOFF_CAP = 10.0

_Outcome = Literal["reopen", "retry", "end"]  # what to do once an opened input ends


@dataclass
class _Input:
    """One opened file descriptor and what is needed to notice it going stale."""

    fd: int
    regular: bool
    fifo: bool
    ident: tuple[int, int]  # (st_dev, st_ino): a rotated path points at another inode
    pending: bytearray = field(default_factory=bytearray)  # a line not yet ended
    at_start: bool = True  # nothing read yet since the start of the file


class LinesSource(SensorSource):
    """Samples as text lines, CSV (`1.0,2.5,3`) or JSON, one sample per line.

    `path` is a regular file, a FIFO, a serial device (`/dev/ttyUSB0`) or "-" for
    stdin. Serial ports are read as they are: set the baud rate and raw mode
    beforehand, e.g. `stty -F /dev/ttyUSB0 115200 raw -echo`.

    Without `follow`, the source ends (SourceExhausted) at end of file, when a
    FIFO's writer closes, or when the device fails. With `follow`, a regular file
    is read to its end and then watched like `tail -F`: reopened when the path is
    rotated, reread from the start when it gets shorter than the read position
    (so, as with `tail`, a truncate-and-refill past that position between two
    polls goes unnoticed). A followed FIFO is reopened for the next writer, a
    failing device is reopened with backoff.

    `rate` paces lines per second, to replay a recording at its nominal rate;
    0 reads as fast as possible, each chunk's complete lines parsed, windowed and
    queued together (`parse_csv_block`, `SlidingWindow.push_many`): the same
    windows and errors as line by line, at a small fraction of the cost. A regular
    file at rate 0 without `follow` has no reader thread: `read` parses the next
    chunk on the caller's thread whenever the queue is empty.
    """

    def __init__(
        self,
        name: str,
        *,
        path: str,
        window: SlidingWindow,
        channels: int,
        fields: list[str] | None = None,
        follow: bool = False,
        rate: float = 0.0,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        check_channels(channels, window)
        if fields is not None and len(fields) != channels:
            raise ValueError(f"fields: {len(fields)} names for {channels} channels")
        super().__init__(
            name, window=window, origin="stdin" if path == "-" else path, queue_size=queue_size
        )
        self._path = path
        self._channels = channels
        self._fields = fields
        self._follow = follow
        self._pacer = Pacer(rate)
        self._batched = rate == 0  # nothing to pace: a chunk's lines can go through together
        self._replay = False  # a regular file without follow: wait for the pipeline, never drop
        self._pull_lock = threading.Lock()
        self._pulled = self._open_for_pull()
        if self._pulled is None:
            self._start()
        else:  # read() fills the queue one chunk at a time, only when it is empty
            self._queue_size = sys.maxsize

    def read(self, timeout: float) -> Window | None:
        if self._pulled is not None and not self._queue:  # only this thread fills it
            self._pull()
        return super().read(timeout)

    def close(self) -> None:
        super().close()
        with self._pull_lock:
            self._end_pull()

    def _open_for_pull(self) -> _Input | None:
        """A regular file replayed at full speed (no `rate`, no `follow`) needs no
        thread of its own: the pipeline's thread reads the next chunk once it has
        used up the last. A hand-over between two threads per window, and their
        fight for the GIL, cost more than a small model's whole window."""
        if not self._batched or self._follow or self._path == "-":
            return None
        try:
            fd = self._open_path()
        except OSError:
            return None  # the reader thread tries again and reports why it cannot
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        return _Input(fd=fd, regular=True, fifo=False, ident=(info.st_dev, info.st_ino))

    def _pull(self) -> None:
        """Read and parse chunks until a window is queued or the file has ended."""
        with self._pull_lock:
            while self._pulled is not None and not self._queue and not self._stop.is_set():
                source = self._pulled
                try:
                    chunk = os.read(source.fd, _PULL_CHUNK)
                except OSError as exc:
                    self._reject("read failed", str(exc))
                    chunk = b""
                if chunk:
                    self._bytes(source, chunk)
                    continue
                self._flush(source)
                self._end_pull()

    def _end_pull(self) -> None:
        if self._pulled is not None:
            os.close(self._pulled.fd)
            self._pulled = None
            self._finish()

    def _run(self) -> None:
        backoff = Backoff(BackoffOptions(_BACKOFF_FIRST, _BACKOFF_CAP, jitter="none"))
        while not self._stop.is_set():
            source = self._open()
            if source is None:
                outcome: _Outcome = "retry" if self._follow else "end"
            else:
                try:
                    outcome = self._consume(source)
                finally:
                    if source.fd != 0:
                        os.close(source.fd)
            if outcome == "end" or (outcome == "retry" and not backoff.wait(self._stop)):
                return
            if outcome == "reopen":
                backoff.reset()

    def _open(self) -> _Input | None:
        """O_NONBLOCK so a FIFO without a writer, or a tty without carrier, opens at once."""
        try:
            fd = 0 if self._path == "-" else self._open_path()
            info = os.fstat(fd)
        except OSError as exc:
            self._reject("open failed", str(exc))
            return None
        regular = stat.S_ISREG(info.st_mode)
        self._replay = regular and not self._follow
        return _Input(
            fd=fd,
            regular=regular,
            fifo=stat.S_ISFIFO(info.st_mode),
            ident=(info.st_dev, info.st_ino),
        )

    def _open_path(self) -> int:
        return os.open(self._path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)

    def _consume(self, source: _Input) -> _Outcome:
        """Read until the input ends, fails, or the source is closed."""
        poller = select.poll()
        poller.register(source.fd, select.POLLIN)
        while not self._stop.is_set():
            if not source.regular and not poller.poll(_POLL_INTERVAL * 1000):
                continue
            try:
                chunk = os.read(source.fd, _CHUNK)
            except BlockingIOError:
                continue
            except OSError as exc:
                self._reject("read failed", str(exc))
                return self._again("retry")
            if chunk:
                self._bytes(source, chunk)
            elif not self._at_end(source):
                # Linux reports a FIFO's end only after a writer came and went, so
                # reopening at once cannot spin; a device's end might repeat.
                return self._again("reopen" if source.regular or source.fifo else "retry")
        return "end"

    def _again(self, outcome: _Outcome) -> _Outcome:
        """Only a followed path is opened again; stdin cannot be."""
        return outcome if self._follow and self._path != "-" else "end"

    def _at_end(self, source: _Input) -> bool:
        """At end of input: True to keep reading this descriptor (a followed file)."""
        if not (source.regular and self._follow):
            self._flush(source)
            return False
        if self._rotated(source):
            self._flush(source)
            return False
        position = os.lseek(source.fd, 0, os.SEEK_CUR)
        if os.fstat(source.fd).st_size < position:
            logger.info("%s: %s was truncated, reading it from the start", self.name, self._path)
            self._flush(source)
            os.lseek(source.fd, 0, os.SEEK_SET)
            source.at_start = True
            return True
        self._stop.wait(_POLL_INTERVAL)
        return True

    def _rotated(self, source: _Input) -> bool:
        """The path now names another file (logrotate, `mv` + recreate)."""
        if self._path == "-":
            return False
        try:
            info = os.stat(self._path)
        except OSError:
            return False  # renamed away, not recreated yet: keep the old one
        if (info.st_dev, info.st_ino) == source.ident:
            return False
        logger.info("%s: %s was replaced, reopening it", self.name, self._path)
        return True

    def _bytes(self, source: _Input, chunk: bytes) -> None:
        self.stats.add(bytes_in=len(chunk))
        source.pending += chunk
        if source.at_start and not _skip_bom(source.pending):
            return  # a few bytes that may yet be a byte order mark
        source.at_start = False
        if self._batched:
            self._block(source)
        else:
            self._each_line(source)
        if len(source.pending) > _MAX_LINE:
            self._reject("bad line", f"no newline within {_MAX_LINE} bytes, discarded")
            source.pending.clear()

    def _each_line(self, source: _Input) -> None:
        start = 0
        while (end := source.pending.find(b"\n", start)) >= 0 and not self._stop.is_set():
            self._line(source.pending[start:end])
            start = end + 1
        del source.pending[:start]

    def _block(self, source: _Input) -> None:
        """Every complete line pending at once: one parse, one push, one hand-over."""
        end = source.pending.rfind(b"\n") + 1
        if not end or self._stop.is_set():
            return
        block = bytes(source.pending[:end])
        del source.pending[:end]
        samples, errors = parse_csv_block(block, self._channels, self._fields)
        for _, reason in errors:
            self._reject("bad line", reason)
        self._samples(samples, wait=self._replay)

    def _flush(self, source: _Input) -> None:
        """A last line without a newline is still a line once its input has ended."""
        if source.pending.strip():
            self._line(source.pending)
        source.pending.clear()

    def _line(self, raw: bytes | bytearray) -> None:
        if not raw.strip() or not self._pacer.wait(self._stop):
            return
        try:
            sample = parse_line(raw.decode("utf-8", "replace"), self._channels, self._fields)
        except InputError as exc:
            self._reject("bad line", str(exc))
            return
        self._sample(sample, wait=self._replay)


def _skip_bom(pending: bytearray) -> bool:
    """Drop a UTF-8 byte order mark (Excel's and Notepad's CSV exports start with
    one) from the start of an input; False while too few bytes came to tell."""
    if len(pending) < len(BOM) and BOM.startswith(pending):
        return False
    if pending.startswith(BOM):
        del pending[: len(BOM)]
    return True

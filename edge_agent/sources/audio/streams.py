"""Audio sources: WAV files for replay and tests, raw PCM from a command (arecord).

Both hand the pipeline `Audio` chunks of mono int16 samples, a multiple of 10 ms
long (the frontend's step), each tagged with a stream id: a new file or a new run
of the command is a new stream, so streaming models start from a clean state.
Audio is not latest-wins like a camera: every chunk is a stretch of signal the
wake word may span. A live command that outruns a stalled pipeline drops its
oldest chunk (counted), so memory stays bounded.
"""

from __future__ import annotations

import glob
import itertools
import logging
import shlex
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

from edge_agent.errors import ConfigError, InputError, SourceError
from edge_agent.sources.audio.wav import read_wav
from edge_agent.sources.base import Audio, SourceExhausted, SourceStats
from edge_agent.sources.camera.common import describe
from edge_agent.sources.process import StderrTail, spawn, stop_process
from edge_agent.util.backoff import Backoff, BackoffOptions
from edge_agent.util.logs import RateLimitedLog

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT = 1.0
# A failed camera or command is retried from 0.5 s, doubling to 30 s, never at once
# (a command that exits immediately is not restarted in a tight loop).
RESTART_BACKOFF = BackoffOptions(0.5, 30.0, jitter="equal")
_READ_BYTES = 4096
DEFAULT_CHUNK_MS = 100
DEFAULT_QUEUE_CHUNKS = 50  # 5 s of 100 ms chunks waiting for a slow pipeline at most


def _chunk_samples(rate: int, chunk_ms: int) -> int:
    if rate <= 0 or chunk_ms <= 0 or chunk_ms % 10:
        raise ConfigError(f"audio: rate must be > 0 and chunk_ms a multiple of 10, not {chunk_ms}")
    return rate * chunk_ms // 1000


_streams = itertools.count(1)  # ids unique within the process, across sources


class WavFilesSource:
    """The WAV files a glob matches, in name order, each file its own stream. Pull-based
    like the image FilesSource: a slow pipeline still hears every sample. `realtime`
    paces chunks at the rate they were recorded (a demo that behaves like a microphone)."""

    def __init__(
        self,
        name: str,
        *,
        pattern: str,
        rate: int = 16000,
        loop: bool = False,
        realtime: bool = False,
        chunk_ms: int = DEFAULT_CHUNK_MS,
    ) -> None:
        self.name = name
        self.stats = SourceStats()
        self._pattern = pattern
        self._rate = rate
        self._chunk = _chunk_samples(rate, chunk_ms)
        self._loop = loop
        self._realtime = realtime
        self._parts: Iterator[_Part] = iter(())
        self._held: _Part | None = None
        self._passes = 0
        self._bad: set[str] = set()  # refused for good, so a loop does not spin on them
        self._closed = threading.Event()
        self._log = RateLimitedLog(logger)

    def read(self, timeout: float) -> Audio | None:
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            part = self._held or next(self._parts, None)
            self._held = None
            if part is None:
                if not self._next_pass():
                    if not self._loop:
                        raise SourceExhausted
                    self._closed.wait(max(0.0, deadline - time.monotonic()))
                    return None
                continue
            if self._realtime and not self._wait_until(part.due, deadline):
                self._held = part  # not due yet: the next read hands it over
                return None
            self.stats.add(read=1)
            return Audio(part.values, self._rate, part.stream, part.offset, part.path, time.time())
        raise SourceExhausted

    def close(self) -> None:
        self._closed.set()

    def _next_pass(self) -> bool:
        """Start the next pass over the glob, which a loop re-evaluates each time."""
        if self._passes and not self._loop:
            return False
        self._passes += 1
        paths = [p for p in sorted(glob.glob(self._pattern, recursive=True)) if p not in self._bad]
        if not paths:
            self._log.warning("empty", "%s: no readable files match %r", self.name, self._pattern)
        self._parts = itertools.chain.from_iterable(self._file_parts(p) for p in paths)
        return bool(paths)

    def _file_parts(self, path: str) -> Iterator[_Part]:
        try:
            self.stats.add(bytes_in=_file_size(path))
            samples, _ = read_wav(path, self._rate)
        except InputError as exc:
            self._bad.add(path)
            self.stats.add(errors=1)
            self._log.warning("skip", "%s: skipped %s", self.name, exc)
            return
        stream, start = next(_streams), time.monotonic()
        for offset in range(0, samples.size, self._chunk):
            values = samples[offset : offset + self._chunk]
            # due: when the chunk's last sample would have been heard live
            yield _Part(values, stream, offset, path, start + (offset + values.size) / self._rate)

    def _wait_until(self, due: float, deadline: float) -> bool:
        """Sleep until `due` (live pacing); False if the read's timeout comes first."""
        if due > deadline:
            self._closed.wait(max(0.0, deadline - time.monotonic()))
            return False
        self._closed.wait(max(0.0, due - time.monotonic()))
        return not self._closed.is_set()


@dataclass(frozen=True)
class _Part:
    values: np.ndarray
    stream: int
    offset: int
    path: str
    due: float  # time.monotonic() at which realtime pacing hands it over


def _file_size(path: str) -> int:
    try:
        with open(path, "rb") as file:
            return file.seek(0, 2)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc


class CommandPcmSource:
    """Raw S16_LE mono PCM from a command's stdout, e.g.
    `arecord -D plughw:1,0 -f S16_LE -r 16000 -c 1 -t raw`. A command that exits is
    restarted with backoff (jittered, like the camera command source), as a new stream."""

    def __init__(
        self,
        name: str,
        *,
        command: list[str],
        rate: int = 16000,
        chunk_ms: int = DEFAULT_CHUNK_MS,
        queue_chunks: int = DEFAULT_QUEUE_CHUNKS,
    ) -> None:
        if not command:
            raise ConfigError(f"{name}: empty command")
        if queue_chunks < 1:
            raise ConfigError(f"{name}: queue_chunks must be >= 1, not {queue_chunks}")
        self.name = name
        self.stats = SourceStats()
        self._command = list(command)
        self._origin = shlex.join(command)
        self._rate = rate
        self._chunk_bytes = 2 * _chunk_samples(rate, chunk_ms)
        self._queue: deque[Audio] = deque(maxlen=queue_chunks)
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._heard = False  # the current run delivered audio
        self._log = RateLimitedLog(logger)
        self._thread = threading.Thread(target=self._run, name=f"source-{name}", daemon=True)
        self._thread.start()

    def read(self, timeout: float) -> Audio | None:
        with self._ready:
            if not self._queue and not self._stop.is_set():
                self._ready.wait(timeout)
            if self._queue:
                self.stats.add(read=1)
                return self._queue.popleft()
        if self._stop.is_set():
            raise SourceExhausted
        return None

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        with self._ready:
            proc = self._proc
            self._ready.notify_all()
        if proc is not None:
            stop_process(proc, terminate=True)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT)

    def _run(self) -> None:
        backoff = Backoff(RESTART_BACKOFF)
        while not self._stop.is_set():
            self._heard = False
            try:
                self._session()
                continue  # only close() ends a session without an error
            except SourceError as exc:
                reason = str(exc)
            except Exception as exc:  # a bug must not silently kill the microphone
                logger.debug("%s: session failed", self.name, exc_info=exc)
                reason = f"unexpected {describe(exc)}"
            if self._stop.is_set():  # close() ended it: not a failure
                break
            if self._heard:  # it worked for a while: restart soon
                backoff.reset()
            delay = backoff.next_delay()
            key = f"failed:{reason.partition(':')[0]}"
            self._log.warning(key, "%s: %s; restarting in %.1f s", self.name, reason, delay)
            self.stats.add(errors=1)
            self._stop.wait(delay)

    def _session(self) -> None:
        """One run of the command; raises SourceError saying how it ended."""
        proc = self._spawn()
        assert proc.stdout is not None
        assert proc.stderr is not None
        stderr = StderrTail(proc.stderr)
        try:
            self._pump(proc.stdout, next(_streams))
        finally:
            code = stop_process(proc, terminate=False)
            with self._ready:
                self._proc = None
            last = stderr.last_line(_JOIN_TIMEOUT)
            proc.stdout.close()
            proc.stderr.close()
        if not self._stop.is_set():
            raise SourceError(f"{self._command[0]} exited with {code}: last stderr line {last!r}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = spawn(self._command)
        with self._ready:
            self._proc = proc
        if self._stop.is_set():  # close() ran while it started
            stop_process(proc, terminate=True)
        return proc

    def _pump(self, stdout: IO[bytes], stream: int) -> None:
        """Cut stdout into whole chunks, whatever sizes the reads return; the tail at exit
        goes out as a last short chunk, an odd byte (half a sample) is dropped."""
        pending = bytearray()
        offset = 0
        while chunk := stdout.read(_READ_BYTES):
            self.stats.add(bytes_in=len(chunk))
            pending += chunk
            while len(pending) >= self._chunk_bytes:
                offset = self._put(bytes(pending[: self._chunk_bytes]), stream, offset)
                del pending[: self._chunk_bytes]
        whole = len(pending) - len(pending) % 2
        if whole:
            offset = self._put(bytes(pending[:whole]), stream, offset)
        if len(pending) % 2:
            self._log.warning("odd", "%s: dropped half a sample at the end of a run", self.name)

    def _put(self, data: bytes, stream: int, offset: int) -> int:
        values = np.frombuffer(data, dtype="<i2").astype(np.int16)
        item = Audio(values, self._rate, stream, offset, self._origin, time.time())
        with self._ready:
            if len(self._queue) == self._queue.maxlen:
                self.stats.add(dropped=1)  # the deque drops the oldest chunk
            self._queue.append(item)
            self._ready.notify()
        self._heard = True
        return offset + values.size

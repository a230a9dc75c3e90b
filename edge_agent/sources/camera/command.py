"""JPEGs a command writes to stdout back to back: `rpicam-vid --codec mjpeg -o -`,
`ffmpeg ... -f image2pipe -`, `libcamera-vid`, gstreamer's fdsink."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from contextlib import suppress
from typing import IO

from edge_agent.errors import ConfigError, SourceError
from edge_agent.sources.camera.common import CHUNK, describe
from edge_agent.sources.camera.live import JOIN_TIMEOUT, LiveSource
from edge_agent.sources.camera.multipart import JpegSplitter

_TERM_GRACE = 1.0  # seconds a command gets to exit on SIGTERM before SIGKILL


class _StderrTail:
    """Drains a command's stderr, so it never blocks on a full pipe, and keeps the
    end of it for the log line when the command exits."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._tail = b""
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        while chunk := stream.read(CHUNK):
            self._tail = (self._tail + chunk)[-4096:]

    def last_line(self, timeout: float) -> str:
        self._thread.join(timeout)
        lines = self._tail.decode(errors="replace").splitlines()
        return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the command's whole process group: a shell wrapper's children would
    otherwise survive it and keep the pipe open."""
    if proc.returncode is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def _stop_process(proc: subprocess.Popen[bytes], *, terminate: bool) -> int:
    """The exit code, escalating to SIGTERM, then to SIGKILL, a grace period apart."""
    steps = (signal.SIGTERM, signal.SIGKILL) if terminate else (0, signal.SIGTERM, signal.SIGKILL)
    for sig in steps:
        if sig:
            _signal_group(proc, sig)
        with suppress(subprocess.TimeoutExpired):
            return proc.wait(_TERM_GRACE)
    return proc.wait()


class CommandSource(LiveSource):
    """JPEGs a command writes to stdout back to back: `rpicam-vid --codec mjpeg -o -`,
    `ffmpeg ... -f image2pipe -`, `libcamera-vid`, gstreamer's fdsink. A command
    that exits is restarted with backoff."""

    def __init__(
        self, name: str, *, command: list[str], fps: float = 0, max_frame_bytes: int = 10_000_000
    ) -> None:
        if not command:
            raise ConfigError(f"{name}: empty command")
        super().__init__(name, origin=shlex.join(command), fps=fps)
        self._command = list(command)
        self._max_frame_bytes = max_frame_bytes
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread.start()

    def _session(self) -> None:
        proc = self._spawn()
        assert proc.stdout is not None
        assert proc.stderr is not None
        stderr = _StderrTail(proc.stderr)
        try:
            self._pump(proc.stdout)
        finally:
            code = _stop_process(proc, terminate=False)
            with self._lock:
                self._proc = None
            last = stderr.last_line(JOIN_TIMEOUT)
            proc.stdout.close()
            proc.stderr.close()
        raise SourceError(f"{self._command[0]} exited with {code}: last stderr line {last!r}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        try:
            proc = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                start_new_session=True,
            )
        except OSError as exc:
            raise SourceError(f"cannot start {self._command[0]}: {describe(exc)}") from exc
        with self._lock:
            self._proc = proc
        if self._stop.is_set():  # close() ran while it started
            _signal_group(proc, signal.SIGKILL)
        return proc

    def _pump(self, stdout: IO[bytes]) -> None:
        splitter = JpegSplitter(self._max_frame_bytes)
        while chunk := stdout.read(CHUNK):
            self.stats.add(bytes_in=len(chunk))
            for frame in splitter.feed(chunk):
                self._offer(frame)
            for reason in splitter.pop_errors():
                self._reject("stdout bytes", reason)

    def _interrupt(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None:
            _stop_process(proc, terminate=True)

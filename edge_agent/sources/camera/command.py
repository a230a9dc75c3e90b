"""JPEGs a command writes to stdout back to back: `rpicam-vid --codec mjpeg -o -`,
`ffmpeg ... -f image2pipe -`, `libcamera-vid`, gstreamer's fdsink."""

from __future__ import annotations

import shlex
import signal
import subprocess
import threading
from typing import IO

from edge_agent.errors import ConfigError, SourceError
from edge_agent.sources.camera.common import CHUNK
from edge_agent.sources.camera.live import JOIN_TIMEOUT, LiveSource
from edge_agent.sources.camera.multipart import JpegSplitter
from edge_agent.sources.process import StderrTail, signal_group, spawn, stop_process


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
        stderr = StderrTail(proc.stderr)
        try:
            self._pump(proc.stdout)
        finally:
            code = stop_process(proc, terminate=False)
            with self._lock:
                self._proc = None
            last = stderr.last_line(JOIN_TIMEOUT)
            proc.stdout.close()
            proc.stderr.close()
        raise SourceError(f"{self._command[0]} exited with {code}: last stderr line {last!r}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = spawn(self._command)
        with self._lock:
            self._proc = proc
        if self._stop.is_set():  # close() ran while it started
            signal_group(proc, signal.SIGKILL)
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
            stop_process(proc, terminate=True)

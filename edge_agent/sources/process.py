"""Commands that feed a source (a camera's MJPEG on stdout, arecord's PCM): their
stderr drained and remembered, their whole process group stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from contextlib import suppress
from typing import IO

from edge_agent.errors import SourceError

CHUNK = 65536

TERM_GRACE = 1.0  # seconds a command gets to exit on SIGTERM before SIGKILL


class StderrTail:
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


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the command's whole process group: a shell wrapper's children would
    otherwise survive it and keep the pipe open."""
    if proc.returncode is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def stop_process(proc: subprocess.Popen[bytes], *, terminate: bool) -> int:
    """The exit code, escalating to SIGTERM, then to SIGKILL, a grace period apart."""
    steps = (signal.SIGTERM, signal.SIGKILL) if terminate else (0, signal.SIGTERM, signal.SIGKILL)
    for sig in steps:
        if sig:
            signal_group(proc, sig)
        with suppress(subprocess.TimeoutExpired):
            return proc.wait(TERM_GRACE)
    return proc.wait()


def spawn(command: list[str]) -> subprocess.Popen[bytes]:
    """Start a source's command: its stdout a pipe, its stderr drained by the caller
    (StderrTail), in a session of its own so that its whole group can be stopped."""
    try:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
        )
    except OSError as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise SourceError(f"cannot start {command[0]}: {reason}") from exc

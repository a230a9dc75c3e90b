"""One agent per state directory.

Two agents on one `state_dir` (systemd plus a manual run) would share the outbox
and the sequence numbers: each would publish the same `seq` with a different
event, and kick the other off the broker under the same client id. An exclusive
`flock` on `state_dir/agent.lock`, held for the life of the process, refuses the
second one; the kernel drops it when the holder dies, even by SIGKILL, so a stale
lock file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edge_agent.errors import ConfigError, StateDirInUseError

LOCK_NAME = "agent.lock"


class StateDirLock:
    """`acquire` is the verb; `release` (or process exit) gives the directory up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateDirLock:
        path = state_dir / LOCK_NAME
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"state_dir: cannot use {state_dir}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            raise StateDirInUseError(
                f"state_dir: {state_dir} is in use by another edge-agent ({holder}); "
                "stop it first (systemctl stop edge-agent), or give this one its own state_dir"
            ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _holder(fd: int) -> str:
    """The holder's pid and command line, as far as they can be read."""
    try:
        pid = int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return "pid unknown"
    if not pid:
        return "pid unknown"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
    except OSError:
        return f"pid {pid}"
    return f"pid {pid}: {cmdline.decode(errors='replace')[:120]}"

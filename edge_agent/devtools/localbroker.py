"""A throwaway mosquitto on a free local port, for the demo and the tests.

The tests kill, freeze and restart it to inject faults; the demo only starts
and stops it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(found, os.X_OK):
        raise RuntimeError(
            "mosquitto is not installed: apt-get install mosquitto "
            "(./dev demo and ./dev test do it)"
        )
    return found


class Mosquitto:
    """One broker process on 127.0.0.1:`port`, configured by `extra_config` lines."""

    def __init__(self, workdir: Path, extra_config: str = "", persistence: bool = True) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        # Started as root, mosquitto drops to the "mosquitto" user, which cannot
        # write to our temporary directory; stay the user we are.
        lines.append(f"user {getpass.getuser()}")
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/"]
        self.config.write_text("\n".join([*lines, extra_config, ""]), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 10.0) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {wait}s")

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def freeze(self) -> None:
        if self.process:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

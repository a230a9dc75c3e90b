"""The agent under a systemd watchdog, on a real notify socket: READY once running,
WATCHDOG=1 while its pipelines make progress, none while one is wedged."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.app.agent import Agent
from edge_agent.app.sdnotify import Notifier
from edge_agent.config.settings import load_settings

from .broker import Mosquitto
from .conftest import DEMO_MODELS

pytestmark = pytest.mark.integration


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def datagrams(sock: socket.socket, seconds: float) -> list[str]:
    received, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            received.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return received


def config(broker: Mosquitto, tmp_path: Path) -> dict[str, Any]:
    return {
        "device_id": "dev1",
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "pipelines": [
            {
                "name": "cam",
                "model": str(DEMO_MODELS / "shapes_int8.tflite"),
                "labels": str(DEMO_MODELS / "shapes_labels.txt"),
                "source": {
                    "kind": "files",
                    "pattern": str(DEMO_MODELS / "samples/camera/*.jpg"),
                    "loop": True,
                    "fps": 20,
                },
                "policy": {"kind": "classification"},
            }
        ],
    }


def test_watchdog_pings_stop_while_a_pipeline_is_wedged(
    broker: Mosquitto, tmp_path: Path, notify_socket: socket.socket
) -> None:
    notifier = Notifier(notify_socket.getsockname(), watchdog_usec=1_000_000)
    agent = Agent(load_settings(None, config(broker, tmp_path)), notifier=notifier)
    pipeline = agent.pipelines[0]
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,))
    runner.start()
    release = threading.Event()
    real_infer = pipeline.model.infer

    def wedged(*inputs: np.ndarray) -> list[np.ndarray]:  # an invoke() that hangs
        release.wait(30)
        return real_infer(*inputs)

    try:
        first = datagrams(notify_socket, 2.0)
        assert any("READY=1" in d for d in first)
        assert sum("WATCHDOG=1" in d for d in first) >= 2
        pipeline.model.infer = wedged  # type: ignore[method-assign]
        datagrams(notify_socket, 1.5)  # the silence has to outlast max_silence (1 s) first
        assert not any("WATCHDOG=1" in d for d in datagrams(notify_socket, 2.0))
        pipeline.model.infer = real_infer  # type: ignore[method-assign]
        release.set()
        assert any("WATCHDOG=1" in d for d in datagrams(notify_socket, 2.0))
    finally:
        release.set()
        stop.set()
        runner.join(30)
    assert any("STOPPING=1" in d for d in datagrams(notify_socket, 0.5))

"""Every source kind, configured as a user would, through the whole daemon to a
real subscriber: a local HTTP server for http/mjpeg, a shell command, a watched
directory, a FIFO, a fake sysfs tree, and MQTT messages."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.app.agent import Agent
from edge_agent.config.settings import load_settings

from .broker import Mosquitto
from .conftest import DEMO_MODELS
from .subscriber import Subscriber

pytestmark = pytest.mark.integration

CIRCLE = (DEMO_MODELS / "samples/camera/frame_015.jpg").read_bytes()
VIBRATION = (DEMO_MODELS / "samples/vibration.csv").read_text().splitlines()
WINDOW = {"size": 64, "hop": 32, "channels": 3, "mean": [0.0, 0.0, 1.0], "std": [0.5, 0.5, 0.5]}


def camera(broker: Mosquitto, tmp_path: Path, source: dict[str, Any]) -> dict[str, Any]:
    return {
        "device_id": "dev1",
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "pipelines": [
            {
                "name": "p",
                "model": str(DEMO_MODELS / "shapes_int8.tflite"),
                "labels": str(DEMO_MODELS / "shapes_labels.txt"),
                "source": source,
                "policy": {"kind": "classification", "threshold": 0.6},
            }
        ],
    }


def sensor(broker: Mosquitto, tmp_path: Path, source: dict[str, Any]) -> dict[str, Any]:
    config = camera(broker, tmp_path, {**source, "window": WINDOW})
    config["pipelines"][0].update(
        model=str(DEMO_MODELS / "vibration_int8.tflite"),
        labels=None,
        policy={"kind": "threshold", "index": 1, "on_state": "anomaly", "off_state": "normal"},
    )
    return config


def first_event(
    broker: Mosquitto, config: dict[str, Any], feed: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Run the agent until one decision event reaches a subscriber."""
    sub = Subscriber(broker.port, "edge/dev1/p/event")
    agent = Agent(load_settings(None, config))
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,))
    runner.start()
    try:
        if feed:
            feed()
        sub.wait_for(lambda s: bool(s.messages), timeout=20)
        return dict(sub.messages[0].json())
    finally:
        stop.set()
        runner.join(20)
        sub.close()
        assert not runner.is_alive()


class Camera(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/snapshot.jpg":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(CIRCLE)))
            self.end_headers()
            self.wfile.write(CIRCLE)
        elif self.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            for _ in range(30):
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n" + CIRCLE + b"\r\n")
                time.sleep(0.05)
        else:
            self.send_error(404)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def camera_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("kind", ["http", "mjpeg"])
def test_network_cameras(broker: Mosquitto, tmp_path: Path, camera_url: str, kind: str) -> None:
    url = f"{camera_url}/snapshot.jpg" if kind == "http" else f"{camera_url}/stream"
    event = first_event(broker, camera(broker, tmp_path, {"kind": kind, "url": url, "fps": 5}))
    assert event["decision"] == "circle"


def test_command_camera(broker: Mosquitto, tmp_path: Path) -> None:
    frame = tmp_path / "circle.jpg"
    frame.write_bytes(CIRCLE)
    command = ["sh", "-c", f"cat {frame} {frame} {frame}; sleep 30"]
    event = first_event(broker, camera(broker, tmp_path, {"kind": "command", "command": command}))
    assert event["decision"] == "circle"


def test_watched_directory(broker: Mosquitto, tmp_path: Path) -> None:
    watched = tmp_path / "incoming"
    watched.mkdir()

    def drop_frames() -> None:
        time.sleep(0.5)
        for i in range(3):
            (watched / f".tmp{i}").write_bytes(CIRCLE)
            (watched / f".tmp{i}").rename(watched / f"{i}.jpg")
            time.sleep(0.3)

    source = {"kind": "dir", "path": str(watched), "poll_interval": 0.1, "delete_after": True}
    event = first_event(broker, camera(broker, tmp_path, source), drop_frames)
    assert event["decision"] == "circle"


def test_lines_from_a_fifo(broker: Mosquitto, tmp_path: Path) -> None:
    fifo = tmp_path / "accel"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("w") as pipe:
            pipe.write("\n".join(VIBRATION[640:1024]) + "\n")

    writer = threading.Thread(target=write)
    source = {"kind": "lines", "path": str(fifo), "follow": True}
    event = first_event(broker, sensor(broker, tmp_path, source), writer.start)
    writer.join(5)
    assert event["decision"] == "anomaly"


def test_iio_sysfs(broker: Mosquitto, tmp_path: Path) -> None:
    device = tmp_path / "iio" / "iio:device0"
    device.mkdir(parents=True)
    (device / "in_accel_scale").write_text("0.001\n")  # milli-g per count
    for axis, raw in zip("xyz", (0, 0, 1000), strict=True):  # at rest: 1 g on z
        (device / f"in_accel_{axis}_raw").write_text(f"{raw}\n")
    source = {
        "kind": "iio",
        "device": "iio:device0",
        "rate": 400,
        "root": str(tmp_path / "iio"),
        "channels": ["in_accel_x", "in_accel_y", "in_accel_z"],
    }
    event = first_event(broker, sensor(broker, tmp_path, source))
    assert event["decision"] == "normal"


def test_mqtt_sensor(broker: Mosquitto, tmp_path: Path) -> None:
    samples = np.loadtxt(VIBRATION[640:1024], delimiter=",")

    def publish() -> None:
        time.sleep(1.0)  # let the source subscribe
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="zigbee2mqtt")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        sent = [
            client.publish("zigbee2mqtt/pump", json.dumps({"x": x, "y": y, "z": z}), qos=1)
            for x, y, z in samples
        ]
        for info in sent:
            info.wait_for_publish(5)
        client.disconnect()
        client.loop_stop()

    source = {"kind": "mqtt", "topic": "zigbee2mqtt/pump", "fields": ["x", "y", "z"]}
    event = first_event(broker, sensor(broker, tmp_path, source), publish)
    assert event["decision"] == "anomaly"

"""`edge-agent demo`: a throwaway broker, camera, sensor, detection and audio pipelines
on the bundled models and samples, a subscriber printing what arrives, a summary."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.app.agent import Agent
from edge_agent.config import settings as cfg
from edge_agent.devtools.localbroker import Mosquitto
from edge_agent.errors import ConfigError, EdgeAgentError

DEVICE = "demo"


def find_models(explicit: Path | None) -> Path:
    """`--models`, else the checkout's models/, else the copy a wheel installs."""
    installed = Path(sys.prefix) / "share" / "edge-agent" / "models"
    checkout = Path(__file__).parents[2] / "models"
    candidates = [explicit] if explicit else [checkout, installed, Path("models")]
    for folder in candidates:
        if folder and (folder / "shapes_int8.tflite").is_file():
            return folder.resolve()
    raise ConfigError("demo: the bundled models/ directory was not found; pass --models DIR")


DETECTOR = "shapes_yolov8_int8.tflite"
WAKE_WORD = Path("audio") / "okay_nabu.json"


def demo_config(models: Path, port: int, state_dir: Path) -> dict[str, Any]:
    """The demo's settings, as a config file would give them (see config.example.toml)."""
    pipelines = [*classic_pipelines(models), *detection_pipelines(models), *audio_pipelines(models)]
    return {
        "device_id": DEVICE,
        "state_dir": str(state_dir),
        "mqtt": {"host": "127.0.0.1", "port": port},
        "pipelines": pipelines,
    }


def detection_pipelines(models: Path) -> list[dict[str, Any]]:
    """The shapes detector on its clip: a square walks into the lower-left zone and out
    again, a circle crosses the middle line left to right (models/README.md)."""
    if not (models / DETECTOR).is_file():  # a models/ directory from before the detector
        return []
    return [
        {
            "name": "shapes",
            "model": str(models / DETECTOR),
            "labels": str(models / "shapes_detect_labels.txt"),
            "source": {"kind": "files", "pattern": str(models / "detect_demo/*.jpg"), "fps": 10},
            "policy": {
                "kind": "detection",
                "min_score": 0.5,
                "debounce": 2,
                "absent_frames": 3,
                "zones": {"lower_left": [[0.1, 0.55], [0.5, 0.55], [0.5, 1.0], [0.1, 1.0]]},
                # Drawn bottom to top: its right-hand side is the frame's right.
                "lines": {
                    "middle": {
                        "points": [[0.5, 1.0], [0.5, 0.0]],
                        "directions": ["left_to_right", "right_to_left"],
                    }
                },
            },
        }
    ]


def audio_pipelines(models: Path) -> list[dict[str, Any]]:
    """The "okay nabu" wake word on two recordings: "computer" (nothing), "okay nabu"."""
    if importlib.util.find_spec("pymicro_features") is None:
        print("(no audio pipeline: the audio frontend needs pip install 'edge-agent[audio]')")
        return []
    return [
        {
            "name": "voice",
            "model": str(models / WAKE_WORD),
            "source": {"kind": "audio", "pattern": str(models / "audio/*.wav")},
            "policy": {"kind": "wakeword"},
        }
    ]


def classic_pipelines(models: Path) -> list[dict[str, Any]]:
    """The camera classifier and the vibration sensor."""
    window = {"size": 64, "hop": 32, "channels": 3, "mean": [0.0, 0.0, 1.0], "std": [0.5, 0.5, 0.5]}
    return [
        {
            "name": "camera",
            "model": str(models / "shapes_int8.tflite"),
            "labels": str(models / "shapes_labels.txt"),
            "source": {
                "kind": "files",
                "pattern": str(models / "samples/camera/*.jpg"),
                "fps": 10,
            },
            "policy": {
                "kind": "classification",
                "threshold": 0.6,
                "off_threshold": 0.4,
                "debounce": 2,
                "default_state": "empty",
            },
        },
        {
            "name": "vibration",
            "model": str(models / "vibration_int8.tflite"),
            "source": {
                "kind": "lines",
                "path": str(models / "samples/vibration.csv"),
                "rate": 400,
                "window": window,
            },
            "policy": {
                "kind": "threshold",
                "index": 1,
                "on_threshold": 0.6,
                "off_threshold": 0.4,
                "on_state": "anomaly",
                "off_state": "normal",
                "debounce": 2,
            },
        },
    ]


class Watcher:
    """A separate MQTT client, as Home Assistant or mosquitto_sub would be: it
    prints each decision event as it arrives."""

    def __init__(self, port: int) -> None:
        self.events: list[dict[str, Any]] = []
        self.retained_states: dict[str, dict[str, Any]] = {}
        self.subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-watcher")
        self._client.on_connect = lambda c, *_: c.subscribe(f"edge/{DEVICE}/#", qos=1)
        self._client.on_subscribe = lambda *_: self.subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            if message.topic.endswith("/event"):
                event = json.loads(message.payload)
                self.events.append(event)
                print(
                    f"  {message.topic}  seq={event['seq']:<3} {event['previous']} -> "
                    f"{event['decision']}  (score {event['score']:.2f}, at {event['ts']})",
                    flush=True,
                )
                for line in details(event):
                    print(f"      {line}", flush=True)
            elif message.topic.endswith("/state"):
                self.retained_states[message.topic] = json.loads(message.payload)
            elif message.topic.endswith("/status"):
                print(f"  {message.topic}  {message.payload.decode()}", flush=True)
        except Exception as exc:  # a watcher that dies would hide the demo's output
            print(f"  (could not read {message.topic}: {exc})")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def details(event: dict[str, Any]) -> list[str]:
    """What a detection event says happened, or where in the audio a word was heard."""
    if "word" in event:
        return [f"heard {event['word']!r} at {event['offset_s']:.2f} s into the recording"]
    found = event.get("detection")
    if not found:
        return []
    lines = [f"entered {e['zone']}: {e['label']} #{e['id']}" for e in found["entered"]]
    lines += [f"left {e['zone']}: {e['label']} #{e['id']}" for e in found["left"]]
    lines += [
        f"crossed {c['line']} {c['direction']}: {c['label']} #{c['id']} (total {c['total']})"
        for c in found["crossed"]
    ]
    return lines


def run_demo(models_dir: Path | None, *, keep: bool, verbose: bool) -> int:
    """The demo: 0 when every expected decision arrived over MQTT."""
    models = find_models(models_dir)
    workdir = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    if not verbose:
        logging.getLogger("edge_agent").setLevel(logging.WARNING)
    broker = Mosquitto(workdir, persistence=False)
    try:
        broker.start()
    except RuntimeError as exc:
        raise EdgeAgentError(f"demo: cannot start mosquitto: {exc}") from exc
    try:
        return _run(models, broker, workdir)
    finally:
        broker.stop()
        if keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(models: Path, broker: Mosquitto, workdir: Path) -> int:
    print(f"edge-agent demo: mosquitto on 127.0.0.1:{broker.port}, models from {models}")
    watcher = Watcher(broker.port)
    watcher.subscribed.wait(5)
    settings = cfg.load_settings(None, demo_config(models, broker.port, workdir / "state"))
    agent = Agent(settings)
    print("decisions arriving over MQTT:")
    started = time.monotonic()
    agent.run(threading.Event(), until_done=True)
    expected = sum(p.stats.events for p in agent.pipelines)
    deadline = time.monotonic() + 5
    while len(watcher.events) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    watcher.close()
    _summary(agent, watcher, time.monotonic() - started)
    return 0 if len(watcher.events) == expected and expected > 0 else 1


def _summary(agent: Agent, watcher: Watcher, seconds: float) -> None:
    print(f"\nsummary ({seconds:.1f} s):")
    header = f"  {'pipeline':10} {'inputs':>7} {'inferences':>10} {'events':>7} "
    print(header + f"{'bytes in':>10} {'bytes out':>10} {'in/out':>8}")
    for p in agent.pipelines:
        src, st, out = p.source.stats, p.stats, p.emitter.bytes_out
        ratio = f"{src.bytes_in / out:.0f}x" if out else "-"
        print(
            f"  {p.name:10} {src.read:>7} {st.inferences:>10} {st.events:>7} "
            f"{src.bytes_in:>10} {out:>10} {ratio:>8}"
        )
    print(f"  events received by the subscriber: {len(watcher.events)}")
    box = agent.outbox.stats()
    print(
        f"  outbox: {box.depth} waiting, {box.dropped} dropped, {box.expired} expired, "
        f"{box.dead} refused"
    )

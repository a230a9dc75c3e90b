"""The devices of benchmarks/fleet.py: real `edge-agent run` processes, one
simulated-fleet process, and an MQTT recorder watching both."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from fleet_parts import MODELS, PROJECT, PYTHON, Broker, Site
from paho.mqtt.enums import CallbackAPIVersion

AGENT = """
device_id = "{device}"
state_dir = "{state}"
log_level = "warning"
[mqtt]
host = "127.0.0.1"
port = {port}
[telemetry]
interval = 60
[update]
enabled = true
manifest_url = "{url}"
allow_http = true
keys = ["{key}"]
interval = 10
probation_inferences = 5
[[pipelines]]
name = "vibration"
model = "{model}"
model_name = "vibration"
model_version = "1"
[pipelines.source]
kind = "lines"
path = "{csv}"
rate = 64
[pipelines.source.window]
size = 64
hop = 64
channels = 3
mean = [0.0, 0.0, 1.0]
std = [0.5, 0.5, 0.5]
[pipelines.policy]
kind = "threshold"
index = 1
on_threshold = 0.6
off_threshold = 0.4
on_state = "anomaly"
off_state = "normal"
"""
SIM_MODES = {"window10": ["--first-window", "10"], "jitter": [], "legacy": ["--legacy-backoff"]}


class Recorder:
    """Every status message (time, device, payload) and agent-00's bytes by kind."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.status: dict[str, list[tuple[float, bytes]]] = {}
        self.agent_bytes: dict[str, int] = {}
        self.agent_messages: dict[str, int] = {}
        self.started = time.time()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-recorder")
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *_: c.subscribe(
            [("edge/+/status", 0), ("edge/agent-00/#", 0)]
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        with self.lock:
            if parts[-1] == "status":
                self.status.setdefault(parts[1], []).append((time.time(), bytes(msg.payload)))
            if parts[1] == "agent-00" and not msg.retain:
                kind = parts[-1]
                size = len(msg.topic) + len(msg.payload)
                self.agent_bytes[kind] = self.agent_bytes.get(kind, 0) + size
                self.agent_messages[kind] = self.agent_messages.get(kind, 0) + 1

    def online(self) -> int:
        with self.lock:
            return sum(1 for seen in self.status.values() if seen[-1][1] == b"online")

    def online_since(self, device: str, moment: float) -> float | None:
        with self.lock:
            times = [t for t, p in self.status.get(device, []) if p == b"online" and t >= moment]
        return min(times) if times else None

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Fleet:
    def __init__(self, site: Site, broker: Broker, url: str, args: argparse.Namespace) -> None:
        self.site, self.broker, self.url, self.args = site, broker, url, args
        self.total = args.agents + args.sims
        self.agents: list[subprocess.Popen[bytes]] = []
        self.sim: subprocess.Popen[bytes] | None = None
        self.stats_file = site.work / "sims.json"
        self.recorder: Recorder | None = None
        self.agents_started = 0.0

    def start(self) -> None:
        self.recorder = Recorder(self.broker.port)
        csv = self.site.work / "vibration.csv"
        csv.write_text((MODELS / "samples" / "vibration.csv").read_text() * 20)
        for n in range(self.args.agents):
            self.agents.append(self._agent(f"agent-{n:02d}", csv))
            time.sleep(0.3)  # start-up imports are the expensive part of an agent
        self.agents_started = time.time()
        self.restart_sims("window10", poll=self.args.poll_interval)

    def _agent(self, device: str, csv: Path) -> subprocess.Popen[bytes]:
        folder = self.site.work / device
        folder.mkdir()
        config = folder / "config.toml"
        config.write_text(AGENT.format(
            device=device, state=folder / "state", port=self.broker.port, url=self.url,
            key=self.site.public, model=MODELS / "vibration_int8.tflite", csv=csv,
        ))  # fmt: skip
        log = (folder / "agent.log").open("wb")
        return subprocess.Popen(
            [PYTHON, "-m", "edge_agent", "run", "--config", str(config)],
            cwd=PROJECT, stdout=log, stderr=log,
        )  # fmt: skip

    def restart_sims(self, mode: str, poll: float = 3600.0) -> None:
        self._stop_sims()
        self.stats_file.unlink(missing_ok=True)
        self.sim = subprocess.Popen(
            [PYTHON, "-m", "edge_agent.devtools.fleetsim_cli", "--port", str(self.broker.port),
             "--count", str(self.args.sims), "--manifest-url", self.url,
             "--key", str(self.site.public), "--model-sha256", self.site.sha[1],
             "--poll-interval", str(poll), "--nudge-jitter", "5", "--probation", "1",
             "--ramp", "8", "--fail-fraction", "0.1", "--fail-mode", "rollback",
             "--fail-sha256", self.site.sha[3], "--stats", str(self.stats_file),
             "--duration", "600", *SIM_MODES[mode]],
            cwd=PROJECT,
        )  # fmt: skip

    def sim_stats(self) -> dict[str, Any]:
        try:
            stats: dict[str, Any] = json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return {"connected": 0, "connected_at": [], "connect_failures": 0}
        return stats

    def wait_sims_connected(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.sim_stats()["connected"] < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} simulated devices not connected in {timeout} s")
            time.sleep(0.5)

    def wait_online(self, count: int, timeout: float, what: str) -> None:
        assert self.recorder is not None
        deadline = time.monotonic() + timeout
        while self.recorder.online() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: {self.recorder.online()} of {count} in {timeout} s")
            time.sleep(0.5)

    def agents_back_after(self, moment: float, timeout: float) -> float | None:
        """Seconds until the last real agent said online again (None: not all did)."""
        assert self.recorder is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            times = [self.recorder.online_since(f"agent-{n:02d}", moment)
                     for n in range(self.args.agents)]  # fmt: skip
            if all(t is not None for t in times):
                return round(max(t for t in times if t is not None) - moment, 1)
            time.sleep(0.2)
        return None

    def bytes_per_day(self, decision_scale: float, day: float) -> dict[str, Any]:
        """agent-00's MQTT bytes (topic + payload) per day: decisions (events and the
        state sent with each) scaled to the demo's rate, telemetry as measured, the
        keepalive; update and info traffic is per rollout, reported apart."""
        assert self.recorder is not None
        elapsed = time.time() - self.agents_started
        with self.recorder.lock:
            size, count = dict(self.recorder.agent_bytes), dict(self.recorder.agent_messages)
        decisions = size.get("event", 0) + size.get("state", 0)
        events_per_s = count.get("event", 0) * decision_scale / elapsed
        per_day = {
            "decisions": round(decisions * decision_scale * day / elapsed),
            "telemetry": round(size.get("telemetry", 0) * day / elapsed),
            "keepalive": round(4 * day / 30),  # PINGREQ + PINGRESP, 2 bytes each, every 30 s
        }
        return {
            **per_day,
            "total": sum(per_day.values()),
            "demo_events_per_s": round(events_per_s, 2),
            "bytes_per_event_with_state": round(decisions / max(1, count.get("event", 0))),
            "measured_s": round(elapsed),
            "measured_bytes": size,
            "measured_messages": count,
        }

    def _stop_sims(self) -> None:
        if self.sim is not None and self.sim.poll() is None:
            self.sim.send_signal(signal.SIGTERM)
            try:
                self.sim.wait(30)
            except subprocess.TimeoutExpired:
                self.sim.kill()
                self.sim.wait(10)

    def stop(self) -> None:
        self._stop_sims()
        for agent in self.agents:
            agent.terminate()
        for agent in self.agents:
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
        if self.recorder is not None:
            self.recorder.stop()

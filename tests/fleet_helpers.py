"""An operator's update site for the fleet tests: keys, the model the fleet runs
(version 1, published and signed with the real CLI) and a new one (version 2,
the same network with other bytes) described in an unsigned manifest."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.cli import main as edge_agent
from tests.conftest import DEMO_MODELS

VIBRATION = DEMO_MODELS / "vibration_int8.tflite"
NAME = "vibration"


def cli(args: list[str]) -> None:
    assert edge_agent(args) == 0, args


class FleetSite:
    """`root` is what the HTTP server serves: manifest.json(.sig) for version 1."""

    def __init__(self, base: Path) -> None:
        self.root, self.keys, self.work = base / "site", base / "keys", base / "work"
        for folder in (self.root, self.keys, self.work):
            folder.mkdir(parents=True)
        self.private, self.public = self.keys / "key.pem", self.keys / "key.pub"
        cli(["manifest", "keygen", "--private", str(self.private), "--public", str(self.public)])
        self.v1 = self._model(1, VIBRATION.read_bytes())
        self.v2 = self._model(2, VIBRATION.read_bytes() + b"\0" * 64)
        self.manifest = self.root / "manifest.json"
        cli(self._create(1, self.manifest))
        cli(["manifest", "sign", str(self.manifest), "--key", str(self.private)])
        self.new = self.work / "new.json"  # the rollout's input: unsigned, version 2
        cli(self._create(2, self.new))

    def _model(self, version: int, data: bytes) -> str:
        (self.root / f"{NAME}-{version}.tflite").write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def _create(self, version: int, output: Path) -> list[str]:
        model = self.root / f"{NAME}-{version}.tflite"
        return [
            "manifest", "create", str(model), "--name", f"{NAME}={model}",
            "--version", str(version), "-o", str(output),
        ]  # fmt: skip

    def published(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.manifest.read_bytes())
        return document


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout} s")


AGENT_CONFIG = """
device_id = "{device}"
state_dir = "{state}"

[mqtt]
host = "127.0.0.1"
port = {port}

[telemetry]
interval = 0

[update]
enabled = true
manifest_url = "{manifest_url}"
allow_http = true
keys = ["{key}"]
interval = 3600
probation_inferences = 5

[[pipelines]]
name = "vibration"
model = "{model}"
model_name = "vibration"
model_version = "1"

[pipelines.source]
kind = "lines"
path = "{csv}"
rate = {rate}

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


def agent_config(
    directory: Path, device: str, port: int, manifest_url: str, key: Path, rate: int = 320
) -> Path:
    """A real agent's config: the bundled vibration model on the sample CSV, replayed
    ten times at `rate` samples/s, with updates from `manifest_url`."""
    directory.mkdir(parents=True, exist_ok=True)
    csv = directory / "vibration.csv"
    csv.write_text((DEMO_MODELS / "samples" / "vibration.csv").read_text() * 10)
    path = directory / "config.toml"
    path.write_text(
        AGENT_CONFIG.format(
            device=device, state=directory / "state", port=port, manifest_url=manifest_url,
            key=key, model=VIBRATION, csv=csv, rate=rate,
        ),
        encoding="utf-8",
    )  # fmt: skip
    return path

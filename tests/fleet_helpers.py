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

"""The retained `{prefix}/{device}/info` payload: what a fleet view needs to know
about a device, in one small message re-published on every (re)connect.

Schema `v` 1 (field names are a public contract, like the event's):

    {"v": 1, "device": "gate-2", "agent": "0.4.0", "runtime": "litert",
     "arch": "aarch64", "board": "Raspberry Pi 4 Model B Rev 1.4",
     "models": {"porch": {"name": "shapes", "version": "3", "sha256": "<12 hex>"}},
     "manifest": 7, "bucket": 42.17, "tags": {"site": "lab"},
     "ts": "2026-11-28T08:50:38.123Z"}

- `models`: per pipeline, the model serving now (sha256 prefix as in events).
- `manifest`: the manifest version the device trusts (null: none yet).
- `bucket`: the device's rollout bucket (0.00 to 99.99) for the trusted
  manifest's salt (null: that manifest had no rollout, or none yet).
- `board`: the device-tree model string when the board has one (null on x86).
- `tags`: the operator's `fleet.tags` from the config, for targeting.

About 250 bytes for one pipeline; nothing here changes between connects unless
a model, the trusted manifest or the config changed.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.mqtt.payloads import ModelInfo, utc_timestamp

INFO_SCHEMA = 1
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
MAX_BOARD = 64


@dataclass(frozen=True)
class Board:
    arch: str  # platform.machine(): aarch64, armv7l, x86_64
    model: str | None  # /proc/device-tree/model, when there is a device tree


def read_board(model_file: Path = DEVICE_TREE_MODEL) -> Board:
    """The machine's architecture and, on boards with a device tree, its model."""
    try:
        raw = model_file.read_bytes()
    except OSError:  # x86, containers: no device tree
        model = None
    else:
        text = raw.rstrip(b"\0\n ").decode("utf-8", "replace").strip()
        model = text[:MAX_BOARD] or None
    return Board(arch=platform.machine() or "unknown", model=model)


def info_payload(
    *,
    device: str,
    agent_version: str,
    runtime: str,
    board: Board,
    models: Mapping[str, ModelInfo],
    manifest_version: int | None,
    bucket: float | None,
    tags: Mapping[str, str],
    epoch: float,
) -> dict[str, Any]:
    """The info message, as documented above; encode it with payloads.encode."""
    return {
        "v": INFO_SCHEMA,
        "device": device,
        "agent": agent_version,
        "runtime": runtime,
        "arch": board.arch,
        "board": board.model,
        "models": {pipeline: info.as_dict() for pipeline, info in sorted(models.items())},
        "manifest": manifest_version,
        "bucket": None if bucket is None else round(bucket, 2),
        "tags": dict(sorted(tags.items())),
        "ts": utc_timestamp(epoch),
    }


def info_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{device}/info"

"""The MQTT contract: topic names and payloads. Field names are public; a change
of meaning or a removal needs a new SCHEMA_VERSION and a note in the README."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from edge_agent.pipeline.policy import Decision

SCHEMA_VERSION = 1
SHA256_PREFIX = 12
STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"


@dataclass(frozen=True)
class Topics:
    prefix: str
    device: str

    @property
    def status(self) -> str:
        return f"{self.prefix}/{self.device}/status"

    @property
    def telemetry(self) -> str:
        return f"{self.prefix}/{self.device}/telemetry"

    @property
    def update(self) -> str:
        return f"{self.prefix}/{self.device}/update"

    def command(self, name: str) -> str:
        return f"{self.prefix}/{self.device}/cmd/{name}"

    def event(self, pipeline: str) -> str:
        return f"{self.prefix}/{self.device}/{pipeline}/event"

    def state(self, pipeline: str) -> str:
        return f"{self.prefix}/{self.device}/{pipeline}/state"

    def alert(self, pipeline: str) -> str:
        return f"{self.prefix}/{self.device}/{pipeline}/alert"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256[:SHA256_PREFIX]}


def utc_timestamp(epoch: float) -> str:
    """UTC ISO 8601 with milliseconds: 2026-11-28T08:50:38.123Z."""
    moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def new_event_id() -> str:
    return uuid.uuid4().hex


def event_payload(
    *,
    device: str,
    pipeline: str,
    seq: int,
    event_id: str,
    epoch: float,
    decision: Decision,
    model: ModelInfo,
) -> dict[str, Any]:
    """A decision event, as documented in the README ("Decision events")."""
    return {
        "v": SCHEMA_VERSION,
        "device": device,
        "pipeline": pipeline,
        "seq": seq,
        "id": event_id,
        "ts": utc_timestamp(epoch),
        "decision": decision.state,
        "score": round(decision.score, 4),
        "previous": decision.previous,
        "reason": decision.reason,
        "label": decision.label,
        "model": model.as_dict(),
    }


def encode(payload: dict[str, Any]) -> bytes:
    """Compact JSON: every byte counts on a metered link."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

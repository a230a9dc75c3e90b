"""The MQTT contract: topic names and payloads. Field names are public; a change
of meaning or a removal needs a new SCHEMA_VERSION and a note in the README."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

SCHEMA_VERSION = 1
SHA256_PREFIX = 12
STATUS_ONLINE = b"online"
STATUS_OFFLINE = b"offline"


@dataclass(frozen=True)
class Decision:
    """One event to publish: the state, the evidence for it and why it is sent now."""

    state: str
    """The decision: a state name."""
    score: float
    """The smoothed score that supports ``state``."""
    previous: str | None
    """The state published before (None for the first decision; ``state`` for a heartbeat)."""
    reason: str
    """``"change"`` or ``"heartbeat"``."""
    label: str | None
    """The top-1 raw label of the smoothed scores (classification), else None."""

    def extra(self) -> dict[str, Any]:
        """Fields a kind of decision adds to its event (detection details, ...)."""
        return {}


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

    def shadow(self, pipeline: str) -> str:
        return f"{self.prefix}/{self.device}/{pipeline}/shadow"

    def feedback(self, pipeline: str) -> str:
        return f"{self.prefix}/{self.device}/{pipeline}/feedback"


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
        **decision.extra(),
    }


def state_payload(
    *,
    device: str,
    pipeline: str,
    state: str | None,
    since: float | None,
    model: ModelInfo,
    counters: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pipeline's retained state: the current decision plus counters and bandwidth."""
    return {
        "v": SCHEMA_VERSION,
        "device": device,
        "pipeline": pipeline,
        "state": state,
        "since": utc_timestamp(since) if since else None,
        "model": model.as_dict(),
        **counters,
        **(extra or {}),
    }


def alert_payload(
    *,
    device: str,
    pipeline: str,
    epoch: float,
    state: str,
    measure: str,
    score: float,
    worst: str | None,
    details: dict[str, float],
    model: ModelInfo,
) -> dict[str, Any]:
    """A drift or confidence alert, or its all-clear (README "Drift and confidence")."""
    return {
        "v": SCHEMA_VERSION,
        "device": device,
        "pipeline": pipeline,
        "ts": utc_timestamp(epoch),
        "state": state,
        "measure": measure,
        "score": round(score, 4),
        "worst": worst,
        "details": {k: round(v, 4) for k, v in details.items()},
        "model": model.as_dict(),
    }


def shadow_payload(
    *,
    device: str,
    pipeline: str,
    epoch: float,
    serving: ModelInfo,
    shadow: ModelInfo,
    report: dict[str, Any],
) -> dict[str, Any]:
    """The periodic shadow comparison (README "Shadow models"): `report` holds
    `state`, `compared`, `agreement`, `confidence`, `latency_ms`, `errors`, ..."""
    return {
        "v": SCHEMA_VERSION,
        "device": device,
        "pipeline": pipeline,
        "ts": utc_timestamp(epoch),
        "serving": serving.as_dict(),
        "shadow": shadow.as_dict(),
        **report,
    }


def sample_sidecar(
    *,
    device: str,
    pipeline: str,
    epoch: float,
    model: ModelInfo,
    outputs: dict[str, Any],
    decision: Decision | None,
    state: str | None,
    why: list[str],
    input_name: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON kept beside a captured input (README "Sample capture")."""
    return {
        "v": SCHEMA_VERSION,
        "device": device,
        "pipeline": pipeline,
        "ts": utc_timestamp(epoch),
        "model": model.as_dict(),
        "outputs": outputs,
        "decision": None
        if decision is None
        else {
            "state": decision.state,
            "score": round(decision.score, 4),
            "previous": decision.previous,
            "reason": decision.reason,
            "label": decision.label,
        },
        "state": state,
        "why": why,
        "input": input_name,
        **(extra or {}),
    }


def encode(payload: dict[str, Any]) -> bytes:
    """Compact JSON: every byte counts on a metered link."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

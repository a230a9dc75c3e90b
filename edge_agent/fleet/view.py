"""The fleet as its devices' MQTT topics describe it: pure, messages in, a view out.

`FleetView.apply(topic, payload, now)` reads one message from the device contract
(status, info, update, per-pipeline state, alert and shadow report), updates that device's
`DeviceView` and returns what changed, for the history file and for a rollout to
react to. A payload that is not what the contract says is counted and skipped:
one broken device must not blind the operator to the others.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MAX_PAYLOAD = 131_072  # AWS IoT Core's limit; the contract's messages are far smaller


@dataclass(frozen=True)
class Model:
    name: str
    version: str
    sha256: str  # the 12-hex prefix the contract publishes

    def label(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ShadowReport:
    """The last periodic shadow comparison of one pipeline (cumulative on the device)."""

    sha256: str  # the shadow model's 12-hex prefix
    serving: str  # the serving model's 12-hex prefix
    compared: int
    agreement: float | None  # None until something was compared
    state: str  # running or dropped
    seen: float  # when it arrived, as observed here


@dataclass
class DeviceView:
    device: str
    online: bool | None = None
    changed: float | None = None  # when `online` last changed, as observed here
    seen: float = 0.0  # the last message of any kind
    agent: str | None = None
    runtime: str | None = None
    arch: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    manifest: int | None = None  # trusted manifest version (info)
    bucket: float | None = None
    models: dict[str, Model] = field(default_factory=dict)  # pipeline -> serving model
    update: dict[str, Any] = field(default_factory=dict)  # the last update status payload
    errors: dict[str, int] = field(default_factory=dict)  # pipeline -> state.errors counter
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # pipeline -> open alert
    shadows: dict[str, ShadowReport] = field(default_factory=dict)  # pipeline -> last report
    has_info: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "online": self.online,
            "changed": self.changed,
            "seen": self.seen,
            "agent": self.agent,
            "runtime": self.runtime,
            "arch": self.arch,
            "tags": self.tags,
            "manifest": self.manifest,
            "bucket": self.bucket,
            "models": {p: vars(m) for p, m in sorted(self.models.items())},
            "update": self.update,
            "errors": self.errors,
            "alerts": self.alerts,
            "shadows": {p: vars(r) for p, r in sorted(self.shadows.items())},
        }


@dataclass(frozen=True)
class Change:
    """One observed transition: kind is status, model, update, errors or alert."""

    device: str
    kind: str
    ts: float
    pipeline: str | None = None
    value: str | None = None  # online/offline, name:version, update state, alert state
    detail: dict[str, Any] | None = None


class FleetView:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.devices: dict[str, DeviceView] = {}
        self.bad_messages = 0

    def apply(self, topic: str, payload: bytes, now: float) -> list[Change]:
        parts = topic.split("/")
        head = self.prefix.split("/")
        if parts[: len(head)] != head or len(parts) - len(head) not in (2, 3):
            return []
        device, *rest = parts[len(head) :]
        if device == "fleet":
            return []
        try:
            return self._apply(device, rest, payload, now)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self.bad_messages += 1
            log.warning("fleet: skipping a bad message on %s: %s", topic, exc)
            return []

    def _device(self, device: str, now: float) -> DeviceView:
        view = self.devices.get(device)
        if view is None:
            view = self.devices[device] = DeviceView(device)
        view.seen = now
        return view

    def _apply(self, device: str, rest: list[str], payload: bytes, now: float) -> list[Change]:
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"{len(payload)} bytes")
        kind = rest[-1]
        if len(rest) == 1 and kind == "status":
            return self._status(self._device(device, now), payload, now)
        if not payload or kind not in ("info", "update", "state", "alert", "shadow"):
            return []  # an empty payload: a cleared retained topic
        view, data = self._device(device, now), _json(payload)
        if len(rest) == 1:
            if kind == "info":
                return self._info(view, data, now)
            return self._update(view, data, now) if kind == "update" else []
        return self._pipeline(view, rest[0], kind, data, now)

    def _pipeline(
        self, view: DeviceView, pipeline: str, kind: str, data: dict[str, Any], now: float
    ) -> list[Change]:
        if kind == "state":
            return self._state(view, pipeline, data, now)
        if kind == "shadow":
            view.shadows[pipeline] = _shadow(data, now)
            return []  # periodic: what a rollout's gate reads, no transition to record
        return self._alert(view, pipeline, data, now) if kind == "alert" else []

    @staticmethod
    def _status(view: DeviceView, payload: bytes, now: float) -> list[Change]:
        text = payload.decode("ascii")
        if text not in ("online", "offline", ""):
            raise ValueError(f"status {text!r}")
        online = text == "online" if text else None
        if online == view.online:
            return []
        view.online, view.changed = online, now
        return [Change(view.device, "status", now, value=text or None)]

    def _info(self, view: DeviceView, info: dict[str, Any], now: float) -> list[Change]:
        view.has_info = True
        view.agent, view.runtime, view.arch = info.get("agent"), info.get("runtime"), info["arch"]
        view.tags = {str(k): str(v) for k, v in (info.get("tags") or {}).items()}
        view.manifest, view.bucket = info.get("manifest"), info.get("bucket")
        changes = []
        for pipeline, model in (info.get("models") or {}).items():
            changes += self._model(view, pipeline, model, now)
        return changes

    @staticmethod
    def _model(view: DeviceView, pipeline: str, model: dict[str, Any], now: float) -> list[Change]:
        new = Model(str(model["name"]), str(model["version"]), str(model["sha256"]))
        if view.models.get(pipeline) == new:
            return []
        view.models[pipeline] = new
        return [Change(view.device, "model", now, pipeline, new.label(), {"sha256": new.sha256})]

    @staticmethod
    def _update(view: DeviceView, status: dict[str, Any], now: float) -> list[Change]:
        state = str(status["state"])
        if status == view.update:
            return []
        view.update = status
        return [Change(view.device, "update", now, value=state, detail=status)]

    def _state(
        self, view: DeviceView, pipeline: str, state: dict[str, Any], now: float
    ) -> list[Change]:
        changes = self._model(view, pipeline, state["model"], now)
        errors = int(state.get("errors") or 0)
        if view.errors.get(pipeline) != errors:
            before = view.errors.get(pipeline)
            view.errors[pipeline] = errors
            if before is not None:
                changes.append(Change(view.device, "errors", now, pipeline, str(errors)))
        return changes

    @staticmethod
    def _alert(view: DeviceView, pipeline: str, alert: dict[str, Any], now: float) -> list[Change]:
        state = str(alert["state"])
        if state == "clear":
            view.alerts.pop(pipeline, None)
        else:
            view.alerts[pipeline] = {
                "state": state,
                "measure": alert.get("measure"),
                "score": alert.get("score"),
                "ts": alert.get("ts"),
            }
        return [Change(view.device, "alert", now, pipeline, state, alert)]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per model name:version, how many devices serve it and how many are online."""
        counts: dict[str, dict[str, int]] = {}
        for view in self.devices.values():
            for label in sorted({m.label() for m in view.models.values()}):
                entry = counts.setdefault(label, {"devices": 0, "online": 0})
                entry["devices"] += 1
                entry["online"] += 1 if view.online else 0
        return dict(sorted(counts.items()))


def _shadow(report: dict[str, Any], now: float) -> ShadowReport:
    compared, agreement = int(report["compared"]), report.get("agreement")
    if compared < 0:
        raise ValueError(f"compared {compared}")
    if agreement is not None and not 0.0 <= float(agreement) <= 1.0:
        raise ValueError(f"agreement {agreement}")
    sha, serving = str(report["shadow"]["sha256"]), str(report["serving"]["sha256"])
    rate = None if agreement is None else float(agreement)
    return ShadowReport(sha, serving, compared, rate, str(report.get("state") or "running"), now)


def _json(payload: bytes) -> dict[str, Any]:
    value = json.loads(payload)
    if not isinstance(value, dict):
        raise TypeError("not a JSON object")
    return value

"""What `edge-agent fleet` prints: the status table, the per-model summary, the
rollout's per-device report, and their JSON forms. Pure: values in, text out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from edge_agent.fleet.history import Running, Transition
from edge_agent.fleet.stage import Outcome
from edge_agent.fleet.view import DeviceView

STATUS_COLUMNS = ("device", "online", "last change", "agent", "models", "update", "alerts")


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def online_text(view: DeviceView) -> str:
    return {True: "online", False: "OFFLINE", None: "?"}[view.online]


def update_text(view: DeviceView) -> str:
    if not view.update:
        return "-"
    state = str(view.update.get("state"))
    reason = view.update.get("reason")
    return f"{state}: {reason}" if reason else state


def models_text(view: DeviceView) -> str:
    return " ".join(f"{p}={m.label()}" for p, m in sorted(view.models.items())) or "-"


def alerts_text(view: DeviceView) -> str:
    return " ".join(f"{p}:{a.get('measure')}" for p, a in sorted(view.alerts.items())) or "-"


def table(rows: Sequence[Sequence[str]], header: Sequence[str], width: int = 48) -> str:
    """Left-aligned columns, each cut at `width` characters."""
    cells = [[str(c)[:width] for c in row] for row in [header, *rows]]
    sizes = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(s) for c, s in zip(row, sizes, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def status_text(devices: Mapping[str, DeviceView], summary: Mapping[str, Mapping[str, int]]) -> str:
    rows = [
        (
            v.device,
            online_text(v),
            when(v.changed),
            v.agent or "-",
            models_text(v),
            update_text(v),
            alerts_text(v),
        )
        for v in sorted(devices.values(), key=lambda v: v.device)
    ]
    online = sum(1 for v in devices.values() if v.online)
    parts = [table(rows, STATUS_COLUMNS), "", f"{len(devices)} device(s), {online} online"]
    for label, counts in summary.items():
        parts.append(f"  {label}: {counts['devices']} device(s), {counts['online']} online")
    return "\n".join(parts)


def status_json(devices: Mapping[str, DeviceView], summary: Mapping[str, Mapping[str, int]]) -> str:
    document = {
        "devices": [devices[name].as_dict() for name in sorted(devices)],
        "summary": summary,
    }
    return json.dumps(document, indent=2, sort_keys=True)


def progress_line(number: int, stages: int, percent: float, counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    done = counts["committed"] + counts["failed"] + counts["skipped"]
    filled = round(20 * done / total) if total else 20
    bar = "#" * filled + "-" * (20 - filled)
    label = f"stage {number}/{stages} ({percent:g}%)" if number else "return to previous"
    return (
        f"{label} [{bar}] {done}/{total}: {counts['committed']} committed, "
        f"{counts['failed']} failed, {counts['offline']} offline, {counts['pending']} pending"
    )


def rollout_rows(outcomes: Iterable[tuple[int, Outcome]]) -> list[dict[str, Any]]:
    return [
        {
            "device": o.device,
            "stage": stage,
            "state": o.state,
            "reason": o.reason,
            "ts": when(o.ts) if o.ts else None,
        }
        for stage, o in sorted(outcomes, key=lambda item: item[1].device)
    ]


def rollout_text(rows: Sequence[Mapping[str, Any]]) -> str:
    header = ("device", "stage", "outcome", "when", "reason")
    body = [
        (r["device"], str(r["stage"]), r["state"], r["ts"] or "-", r["reason"] or "") for r in rows
    ]
    return table(body, header, width=72)


def running_text(rows: Sequence[Running]) -> str:
    body = [(r.device, r.pipeline, f"{r.name}:{r.version}", when(r.since)) for r in rows]
    return table(body, ("device", "pipeline", "model", "since")) + f"\n{len(rows)} device(s)"


def transitions_text(rows: Sequence[Transition]) -> str:
    body = [(when(t.ts), t.device, t.kind, t.pipeline or "", t.value or "") for t in rows]
    return table(body, ("when", "device", "kind", "pipeline", "value"))

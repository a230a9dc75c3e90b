"""Home Assistant discovery for detection pipelines: occupancy, counts and line counters.

Pure config builders, in the conventions of ``edge_agent.mqtt.homeassistant`` (same
device block, availability from the device's status topic, object ids
``<node>_<pipeline>_<what>``). Every entity reads the pipeline's retained
state topic, whose ``detection`` member is ``DetectionPolicy.snapshot()``:

- ``binary_sensor`` ``<pipeline>_<zone>_<label>_occupancy`` per watched
  (zone, label): ON while the count is > 0 (device class ``occupancy``);
- ``sensor`` ``<pipeline>_<zone>_<label>_count``: the count;
- ``sensor`` ``<pipeline>_<line>_<direction>_crossings`` per line and
  direction: the total since the agent started (``total_increasing``, so Home
  Assistant's statistics survive the agent's restarts).

Entities exist only for labels the policy lists (``labels = [...]``): with
every label watched there is no fixed set to announce. Before the first state
(or if a key is missing) the templates render ``None``: Home Assistant's
"unknown".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.mqtt.homeassistant import DEFAULT_DISCOVERY_PREFIX, device_fields, node_id
from edge_agent.mqtt.payloads import Topics, encode
from edge_agent.pipeline.detection.policy import DetectionPolicy


@dataclass(frozen=True)
class DetectionSpec:
    """What one detection pipeline announces."""

    pipeline: str
    zones: tuple[str, ...]
    labels: tuple[str, ...]
    lines: tuple[tuple[str, tuple[str, str]], ...] = ()
    """(line, (direction, direction))."""


def detection_spec(pipeline: str, policy: DetectionPolicy) -> DetectionSpec:
    """The entities of ``policy``'s zones (``frame`` without zones), labels and lines."""
    return DetectionSpec(
        pipeline,
        tuple(zone.name for zone in policy.zones),
        policy.labels or (),
        tuple((line.name, line.directions) for line in policy.lines),
    )


def _literal(text: str) -> str:
    """A Jinja string literal (JSON escapes are Jinja escapes)."""
    return json.dumps(text, ensure_ascii=False)


def _lookup(*path: str) -> str:
    """``value_json.detection`` followed by ``.get()`` per key: None where one is missing."""
    gets = "".join(f".get({_literal(key)}, {{}})" for key in path[:-1])
    return f"value_json.get('detection', {{}}){gets}.get({_literal(path[-1])})"


def detection_discovery_configs(
    *,
    device_id: str,
    prefix: str,
    specs: Sequence[DetectionSpec],
    sw_version: str,
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
) -> dict[str, bytes]:
    """Config topic -> compact JSON payload for every detection entity of ``specs``."""
    node = node_id(device_id)
    common = device_fields(device_id, prefix, sw_version)
    configs: dict[str, bytes] = {}

    def add(component: str, pipeline: str, parts: Sequence[str], **fields: Any) -> None:
        what = "_".join(node_id(part) for part in parts)
        local = f"{node_id(pipeline)}_{what}"
        topic = f"{discovery_prefix}/{component}/{node}/{local}/config"
        if topic in configs:
            raise ValueError(f"two entities on {topic}: zone, label or line names clash")
        object_id = f"{node}_{local}"
        configs[topic] = encode(
            {
                "unique_id": f"edge_agent_{device_id}_{pipeline}_{'_'.join(parts)}",
                "object_id": object_id,  # HA < 2025.10
                "default_entity_id": f"{component}.{object_id}",  # HA >= 2025.10
                "state_topic": Topics(prefix, device_id).state(pipeline),
                **fields,
                **common,
            }
        )

    for spec in specs:
        for zone in spec.zones:
            for label in spec.labels:
                count = _lookup("counts", zone, label)
                add(
                    "binary_sensor",
                    spec.pipeline,
                    (zone, label, "occupancy"),
                    name=f"{spec.pipeline} {zone} {label}",
                    value_template=(
                        f"{{% set n = {count} %}}"
                        "{{ 'None' if n is none else ('ON' if n > 0 else 'OFF') }}"
                    ),
                    payload_on="ON",
                    payload_off="OFF",
                    device_class="occupancy",
                )
                add(
                    "sensor",
                    spec.pipeline,
                    (zone, label, "count"),
                    name=f"{spec.pipeline} {zone} {label} count",
                    value_template=f"{{{{ {count} }}}}",
                    state_class="measurement",
                )
        for line, directions in spec.lines:
            for direction in directions:
                add(
                    "sensor",
                    spec.pipeline,
                    (line, direction, "crossings"),
                    name=f"{spec.pipeline} {line} {direction}",
                    value_template=f"{{{{ {_lookup('crossings', line, direction)} }}}}",
                    state_class="total_increasing",
                )
    return configs

"""Home Assistant discovery for wake-word pipelines: an `event` entity per pipeline.

Each wake-word event on ``<prefix>/<device>/<pipeline>/event`` fires the entity
(event type: the word; attributes: score and offset in the stream). An event
entity, not a binary sensor: a wake word has no duration, and an automation
triggers on each one, even twice in a row. The pipeline's retained state (the
last word heard) stays a plain sensor from ``edge_agent.mqtt.homeassistant``.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_agent.mqtt.homeassistant import DEFAULT_DISCOVERY_PREFIX, device_fields, node_id
from edge_agent.mqtt.payloads import Topics, encode

# Jinja: the event payload -> the JSON Home Assistant's MQTT event entity wants.
VALUE_TEMPLATE = (
    '{{ {"event_type": value_json.word, "score": value_json.score, '
    '"offset_s": value_json.offset_s} | to_json }}'
)


def wakeword_discovery_configs(
    *,
    device_id: str,
    prefix: str,
    words: Sequence[tuple[str, str]],
    sw_version: str,
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
) -> dict[str, bytes]:
    """Config topic -> payload of an `event` entity per (pipeline, word)."""
    node = node_id(device_id)
    common = device_fields(device_id, prefix, sw_version)
    configs: dict[str, bytes] = {}
    for pipeline, word in words:
        local = f"{node_id(pipeline)}_wakeword"
        object_id = f"{node}_{local}"
        configs[f"{discovery_prefix}/event/{node}/{local}/config"] = encode(
            {
                "unique_id": f"edge_agent_{device_id}_{pipeline}_wakeword",
                "object_id": object_id,  # HA < 2025.10
                "default_entity_id": f"event.{object_id}",  # HA >= 2025.10
                "name": f"{pipeline} wake word",
                "state_topic": Topics(prefix, device_id).event(pipeline),
                "event_types": [word],
                "value_template": VALUE_TEMPLATE,
                **common,
            }
        )
    return configs

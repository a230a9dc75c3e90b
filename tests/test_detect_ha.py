"""Home Assistant discovery configs of detection pipelines (pure)."""

import json

import pytest

from edge_agent.config.zones import make_line, make_zone
from edge_agent.pipeline.detection.ha import (
    DetectionSpec,
    detection_discovery_configs,
    detection_spec,
)
from edge_agent.pipeline.detection.policy import DetectionPolicy

DRIVE = make_zone("drive", [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]])
GATE = make_line("gate", [[0.0, 0.6], [1.0, 0.6]], directions=["in", "out"])


def configs(*specs: DetectionSpec, device: str = "dev 1") -> dict[str, dict[str, object]]:
    raw = detection_discovery_configs(
        device_id=device, prefix="edge", specs=specs, sw_version="9.9"
    )
    return {topic: json.loads(payload) for topic, payload in raw.items()}


def test_one_occupancy_and_one_count_per_zone_and_label_and_a_counter_per_direction() -> None:
    spec = DetectionSpec("cam", ("drive", "porch"), ("person",), (("gate", ("in", "out")),))
    assert set(configs(spec)) == {
        "homeassistant/binary_sensor/dev_1/cam_drive_person_occupancy/config",
        "homeassistant/sensor/dev_1/cam_drive_person_count/config",
        "homeassistant/binary_sensor/dev_1/cam_porch_person_occupancy/config",
        "homeassistant/sensor/dev_1/cam_porch_person_count/config",
        "homeassistant/sensor/dev_1/cam_gate_in_crossings/config",
        "homeassistant/sensor/dev_1/cam_gate_out_crossings/config",
    }


def test_occupancy_reads_the_count_from_the_retained_state() -> None:
    found = configs(DetectionSpec("cam", ("drive",), ("person",)))
    occupancy = found["homeassistant/binary_sensor/dev_1/cam_drive_person_occupancy/config"]
    assert occupancy["value_template"] == (
        '{% set n = value_json.get(\'detection\', {}).get("counts", {}).get("drive", {})'
        '.get("person") %}'
        "{{ 'None' if n is none else ('ON' if n > 0 else 'OFF') }}"
    )
    assert (occupancy["payload_on"], occupancy["payload_off"]) == ("ON", "OFF")
    assert occupancy["device_class"] == "occupancy"
    assert occupancy["state_topic"] == "edge/dev 1/cam/state"
    assert occupancy["name"] == "cam drive person"
    assert occupancy["unique_id"] == "edge_agent_dev 1_cam_drive_person_occupancy"
    assert occupancy["object_id"] == "dev_1_cam_drive_person_occupancy"
    assert occupancy["default_entity_id"] == "binary_sensor.dev_1_cam_drive_person_occupancy"
    count = found["homeassistant/sensor/dev_1/cam_drive_person_count/config"]
    assert count["value_template"] == (
        '{{ value_json.get(\'detection\', {}).get("counts", {}).get("drive", {}).get("person") }}'
    )
    assert count["state_class"] == "measurement"


def test_crossing_counters_are_total_increasing() -> None:
    found = configs(DetectionSpec("cam", ("frame",), (), (("gate", ("in", "out")),)))
    assert set(found) == {
        "homeassistant/sensor/dev_1/cam_gate_in_crossings/config",
        "homeassistant/sensor/dev_1/cam_gate_out_crossings/config",
    }
    out = found["homeassistant/sensor/dev_1/cam_gate_out_crossings/config"]
    assert out["value_template"] == (
        '{{ value_json.get(\'detection\', {}).get("crossings", {}).get("gate", {}).get("out") }}'
    )
    assert out["state_class"] == "total_increasing"
    assert out["name"] == "cam gate out"


def test_device_block_and_availability_match_the_other_entities() -> None:
    for config in configs(DetectionSpec("cam", ("drive",), ("car",))).values():
        assert config["availability_topic"] == "edge/dev 1/status"
        assert (config["payload_available"], config["payload_not_available"]) == (
            "online",
            "offline",
        )
        assert config["dev"] == {
            "identifiers": ["edge_agent_dev 1"],
            "name": "dev 1",
            "manufacturer": "edge-agent",
            "model": "edge-agent",
            "sw_version": "9.9",
        }
        assert config["origin"] == {"name": "edge-agent", "sw_version": "9.9"}


def test_labels_with_spaces_are_sanitised_in_ids_but_kept_in_templates() -> None:
    found = configs(DetectionSpec("cam", ("street",), ("traffic light",)), device="dev1")
    config = found["homeassistant/sensor/dev1/cam_street_traffic_light_count/config"]
    assert config["name"] == "cam street traffic light count"
    assert '.get("traffic light")' in str(config["value_template"])


def test_clashing_names_are_refused() -> None:
    spec = DetectionSpec("cam", ("drive",), ("traffic light", "traffic_light"))
    with pytest.raises(ValueError, match="names clash"):
        configs(spec)


def test_spec_from_a_policy() -> None:
    policy = DetectionPolicy(labels=["person", "car"], zones=[DRIVE], lines=[GATE])
    assert detection_spec("cam", policy) == DetectionSpec(
        "cam", ("drive",), ("person", "car"), (("gate", ("in", "out")),)
    )
    implicit = detection_spec("cam", DetectionPolicy(labels=["dog"]))
    assert implicit.zones == ("frame",)
    # Every label watched: nothing fixed to announce per label.
    assert detection_spec("cam", DetectionPolicy()).labels == ()

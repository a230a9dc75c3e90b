"""Settings of detection and audio pipelines: what is accepted, what is refused and
how the refusal names the key."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

from edge_agent.app import model_kinds as kinds
from edge_agent.app import wiring
from edge_agent.config import settings as cfg
from edge_agent.errors import ConfigError
from edge_agent.model.detection.layouts import KINDS
from edge_agent.pipeline.detection.policy import DetectionPolicy

from .conftest import FIXTURES


def detection(**policy: Any) -> dict[str, Any]:
    return {
        "name": "yard",
        "model": "/models/ssd.tflite",
        "source": {"kind": "files", "pattern": "/frames/*.jpg"},
        "policy": {"kind": "detection", **policy},
    }


def audio(source: dict[str, Any] | None = None, **policy: Any) -> dict[str, Any]:
    return {
        "name": "voice",
        "model": str(FIXTURES / "audio" / "okay_nabu.json"),
        "source": source or {"kind": "audio", "pattern": "/rec/*.wav"},
        "policy": {"kind": "wakeword", **policy},
    }


def load(*pipelines: dict[str, Any], **top: Any) -> cfg.Settings:
    return cfg.load_settings(None, {"pipelines": list(pipelines), **top})


def refused(*pipelines: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load(*pipelines)
    return str(caught.value)


def test_a_detection_policy_with_zones_and_lines_builds() -> None:
    settings = load(
        detection(
            labels=["person", "car"],
            min_score_by_label={"car": 0.6},
            zones={"drive": [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]]},
            lines={"gate": {"points": [[0.0, 0.7], [1.0, 0.7]], "directions": ["arrive", "go"]}},
        )
    )
    (p,) = settings.pipelines
    policy = wiring.build_policy(p, 91)
    assert isinstance(policy, DetectionPolicy)
    assert [zone.name for zone in policy.zones] == ["drive"]
    assert [(line.name, line.directions) for line in policy.lines] == [("gate", ("arrive", "go"))]
    assert policy.snapshot() == {
        "counts": {"drive": {"car": 0, "person": 0}},
        "crossings": {"gate": {"arrive": 0, "go": 0}},
    }


@pytest.mark.parametrize(
    ("policy", "key", "reason"),
    [
        ({"zones": {"bow": [[0, 0], [1, 1], [1, 0], [0, 1]]}}, "policy.zones", "edges 0 and 2"),
        ({"zones": {"flat": [[0, 0], [0.5, 0.5], [1, 1]]}}, "policy.zones", "no area"),
        ({"zones": {"out": [[0, 0], [1.5, 0], [1, 1]]}}, "policy.zones.out.1.0", "less than or"),
        ({"zones": {"bad name": [[0, 0], [1, 0], [1, 1]]}}, "policy.zones", "must be letters"),
        ({"lines": {"l": {"points": [[0.2, 0.2], [0.2, 0.2]]}}}, "policy.lines", "the same"),
        ({"lines": {"l": {"points": [[0, 0]]}}}, "policy.lines.l.points", "at least 2"),
        (
            {"lines": {"l": {"points": [[0, 0], [1, 1]], "margin": 0.7}}},
            "policy.lines.l.margin",
            "0.5",
        ),
        ({"min_score": 1.2}, "policy.min_score", "less than or equal to 1"),
        ({"debounce": 0}, "policy.debounce", "greater than or equal to 1"),
        ({"heartbeat": float("inf")}, "policy.heartbeat", "finite"),
        ({"min_area": 0.5, "max_area": 0.2}, "policy", "min_area must not exceed"),
        ({"labels": ["dog"], "min_score_by_label": {"cat": 0.3}}, "policy", "not in labels"),
        ({"iou": 2}, "policy.iou", "less than or equal to 1"),
        ({"max_detections": 0}, "policy.max_detections", "greater than or equal to 1"),
        ({"colour": "red"}, "policy.colour", "unknown key"),
    ],
)
def test_bad_detection_settings_name_their_key(
    policy: dict[str, Any], key: str, reason: str
) -> None:
    message = refused(detection(**policy))
    assert f": pipelines.0.{key}:" in message, message
    assert reason in message


@pytest.mark.parametrize(
    ("pipeline", "reason"),
    [
        ({**detection(), "model_kind": "classifier"}, "needs a detector"),
        (
            {**detection(), "policy": {"kind": "classification"}, "model_kind": "yolov8"},
            "needs policy.kind = 'detection'",
        ),
        ({**audio(), "source": {"kind": "files", "pattern": "*.jpg"}}, "needs an audio source"),
        ({**audio(), "policy": {"kind": "detection"}}, "takes policy.kind 'wakeword' or"),
        ({**detection(), "audio": {}}, "audio sources only"),
        (audio({"kind": "audio"}), "exactly one of pattern"),
        (audio({"kind": "audio", "pattern": "a", "command": ["arecord"]}), "exactly one"),
        (audio({"kind": "audio", "command": ["arecord"], "loop": True}), "not a command"),
        (audio({"kind": "audio", "pattern": "a", "chunk_ms": 15}), "multiple of 10"),
        (audio(probability_cutoff=0), "greater than 0"),
        ({**audio(), "audio": {"lower_hz": 8000, "upper_hz": 100}}, "lower_hz must be below"),
    ],
)
def test_parts_that_do_not_fit_are_refused(pipeline: dict[str, Any], reason: str) -> None:
    assert reason in refused(pipeline)


def test_the_model_kinds_are_the_detectors() -> None:
    assert typing.get_args(cfg.ModelKind) == ("auto", *KINDS)


def test_every_union_tag_is_left_out_of_key_paths() -> None:
    fields = cfg.PipelineSettings.model_fields
    tags = set()
    for name in ("source", "policy"):
        union = typing.get_args(fields[name].annotation)
        for member in union:
            tags |= set(typing.get_args(member.model_fields["kind"].annotation))
    assert tags <= cfg._UNION_TAGS
    assert {"audio", "detection", "wakeword"} <= tags


def test_a_wake_word_takes_unset_values_from_its_manifest() -> None:
    manifest = json.loads((FIXTURES / "audio" / "okay_nabu.json").read_text())
    (p,) = load(audio(refractory=3.0)).pipelines
    policy = kinds.wake_policy(p)
    assert policy.wake.options.word == manifest["wake_word"].lower()
    assert policy.wake.options.probability_cutoff == manifest["micro"]["probability_cutoff"]
    assert policy.wake.options.refractory == 3.0
    (p,) = load(audio(word="Hey Edge", probability_cutoff=0.5)).pipelines
    assert (
        kinds.wake_policy(p).wake.options.word,
        kinds.wake_policy(p).wake.options.probability_cutoff,
    ) == ("hey edge", 0.5)


def test_home_assistant_entities_of_detection_and_wake_word_pipelines(tmp_path: Path) -> None:
    settings = load(
        detection(
            labels=["person"],
            zones={"drive": [[0, 0], [1, 0], [1, 1]]},
            lines={"gate": {"points": [[0, 0.5], [1, 0.5]]}},
        ),
        audio(),
        device_id="cam1",
        state_dir=str(tmp_path),
    )
    configs = kinds.discovery_configs(settings, "1.0")
    assert sorted(configs) == [
        "homeassistant/binary_sensor/cam1/yard_drive_person_occupancy/config",
        "homeassistant/event/cam1/voice_wakeword/config",
        "homeassistant/sensor/cam1/yard_drive_person_count/config",
        "homeassistant/sensor/cam1/yard_gate_in_crossings/config",
        "homeassistant/sensor/cam1/yard_gate_out_crossings/config",
    ]
    event = json.loads(configs["homeassistant/event/cam1/voice_wakeword/config"])
    assert event["state_topic"] == "edge/cam1/voice/event"
    assert event["event_types"] == ["okay nabu"]
    assert "value_json.word" in event["value_template"]
    assert event["availability_topic"] == "edge/cam1/status"

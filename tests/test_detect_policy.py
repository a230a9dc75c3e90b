"""DetectionPolicy: whole scenes replayed frame by frame, events checked by hand."""

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from edge_agent.config.zones import make_line, make_zone
from edge_agent.model.detection.labels import DetectionLabels
from edge_agent.model.detection.types import Detections
from edge_agent.mqtt.payloads import Decision, ModelInfo, encode, event_payload
from edge_agent.pipeline.detection.counting import CountLevel
from edge_agent.pipeline.detection.payload import TRACK, DetectionDecision
from edge_agent.pipeline.detection.policy import DetectionPolicy

Obj = tuple[str, float, float, float]  # label, x, y (bottom-centre), score

DRIVE = make_zone("drive", [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]])
STREET = make_zone("street", [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]])
GATE = make_line("gate", [[0.0, 0.5], [1.0, 0.5]])  # "in" = moving down the image


def frame(*objects: Obj, width: float = 0.2, height: float = 0.3) -> Detections:
    """Objects given by where they stand (bottom-centre) and their score."""
    boxes = [[x - width / 2, y - height, x + width / 2, y] for _, x, y, _ in objects]
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array([s for *_, s in objects], np.float32),
        np.zeros(len(objects), int),
        tuple(label for label, *_ in objects),
    )


def person(x: float = 0.3, y: float = 0.8, score: float = 0.9) -> Obj:
    return ("person", x, y, score)


def run(
    policy: DetectionPolicy, frames: Sequence[Detections], step: float = 1.0
) -> list[tuple[float, DetectionDecision]]:
    """(time, event) of every event, frames ``step`` seconds apart from t = 0."""
    out = []
    for i, detections in enumerate(frames):
        decision = policy.decide(detections, i * step)
        if decision is not None:
            out.append((i * step, decision))
    return out


def states(events: Sequence[tuple[float, DetectionDecision]]) -> list[tuple[float, str, str]]:
    return [(t, d.state, d.reason) for t, d in events]


def quick(**kwargs: Any) -> DetectionPolicy:
    """A policy without hysteresis unless asked for."""
    options: dict[str, Any] = {"debounce": 1, "absent_frames": 1, **kwargs}
    return DetectionPolicy(**options)


EMPTY = Detections.empty()


# --- events and hysteresis ------------------------------------------------------------------


def test_the_first_frame_publishes_the_initial_state() -> None:
    policy = DetectionPolicy(labels=["person", "car"])
    first = policy.decide(EMPTY, 0.0)
    assert first is not None
    assert (first.state, first.previous, first.reason, first.score) == ("none", None, "change", 0.0)
    assert first.detection["counts"] == {"frame": {"car": 0, "person": 0}}
    assert policy.state == "none"
    assert policy.decide(EMPTY, 1.0) is None


def test_a_count_change_produces_one_event() -> None:
    policy = DetectionPolicy(labels=["person"], debounce=2)
    events = run(policy, [EMPTY, *[frame(person())] * 10])
    assert states(events) == [(0.0, "none", "change"), (2.0, "person:1", "change")]
    change = events[1][1]
    assert change.previous == "none"
    assert change.detection["changed"] == [
        {"zone": "frame", "label": "person", "count": 1, "previous": 0}
    ]
    # No zones: entries into the whole frame would only repeat the count.
    assert change.detection["entered"] == []
    assert change.detection["objects"] == [
        {"id": 1, "label": "person", "score": 0.9, "box": [0.2, 0.5, 0.4, 0.8]}
    ]


def test_a_flickering_box_does_not_flap() -> None:
    policy = DetectionPolicy(labels=["person"], debounce=2, absent_frames=3)
    steady = [frame(person())] * 3
    flicker = [EMPTY, frame(person()), EMPTY, frame(person()), EMPTY, EMPTY, frame(person())]
    events = run(policy, [*steady, *flicker])
    assert states(events) == [(0.0, "none", "change"), (1.0, "person:1", "change")]


def test_a_one_frame_ghost_never_counts() -> None:
    policy = DetectionPolicy(labels=["person"], debounce=2, absent_frames=3)
    ghosts = [frame(person(x=0.1 + 0.2 * (i % 2))) if i % 2 else EMPTY for i in range(12)]
    assert states(run(policy, ghosts)) == [(0.0, "none", "change")]


def test_count_goes_up_and_down_with_previous_counts() -> None:
    policy = quick(labels=["person"])
    one, two = frame(person(0.2)), frame(person(0.2), person(0.7))
    events = run(policy, [one, two, two, one])
    assert states(events)[1:] == [(1.0, "person:2", "change"), (3.0, "person:1", "change")]
    assert events[2][1].detection["changed"] == [
        {"zone": "frame", "label": "person", "count": 1, "previous": 2}
    ]


def test_presence_clears_after_absent_frames_and_seconds() -> None:
    policy = DetectionPolicy(labels=["person"], debounce=1, absent_frames=2, absent_seconds=5)
    frames = [frame(person())] * 3 + [EMPTY] * 8  # gone from t = 3
    events = run(policy, frames)
    # Two empty frames by t = 4, but 5 s of absence only at t = 8.
    assert states(events) == [(0.0, "person:1", "change"), (8.0, "none", "change")]


def test_count_level_hand_computed() -> None:
    level = CountLevel(debounce=2, absent_frames=3, absent_seconds=0)
    raws = [1, 2, 2, 3, 2, 0, 0, 1, 0, 0, 0]
    settled = [level.update(raw, float(t)) for t, raw in enumerate(raws)]
    # Up needs 2 frames (at the lower of them); down needs 3 (at the highest of them).
    assert settled == [0, 1, 1, 2, 2, 2, 2, 1, 1, 1, 0]


def test_presence_only_mode_ignores_count_changes() -> None:
    policy = quick(labels=["person"], count_events=False)
    one, two = frame(person(0.2)), frame(person(0.2), person(0.7))
    events = run(policy, [EMPTY, one, two, two, one, EMPTY])
    assert states(events) == [
        (0.0, "none", "change"),
        (1.0, "person:1", "change"),
        (5.0, "none", "change"),
    ]


# --- filters --------------------------------------------------------------------------------


def counts(policy: DetectionPolicy, detections: Detections) -> dict[str, dict[str, int]]:
    policy.decide(detections, 0.0)
    result: dict[str, dict[str, int]] = policy.snapshot()["counts"]
    return result


def test_label_filter() -> None:
    scene = frame(person(0.2), ("dog", 0.7, 0.8, 0.9))
    assert counts(quick(labels=["person"]), scene) == {"frame": {"person": 1}}
    assert counts(quick(), scene) == {"frame": {"dog": 1, "person": 1}}


def test_global_and_per_label_min_score() -> None:
    scene = frame(person(0.2, score=0.55), ("car", 0.7, 0.8, 0.55), ("car", 0.5, 0.6, 0.75))
    policy = quick(labels=["person", "car"], min_score=0.5, min_score_by_label={"car": 0.7})
    assert counts(policy, scene) == {"frame": {"car": 1, "person": 1}}
    assert counts(quick(min_score=0.6), scene) == {"frame": {"car": 1}}


def test_area_filter_in_fractions_of_the_frame() -> None:
    small = frame(person(0.2), width=0.05, height=0.1)  # 0.005 of the frame
    big = frame(person(0.5), width=0.9, height=0.9)  # 0.81
    normal = frame(person(0.7))  # 0.06
    for scene, expected in ((small, 0), (big, 0), (normal, 1)):
        policy = quick(labels=["person"], min_area=0.01, max_area=0.5)
        assert counts(policy, scene) == {"frame": {"person": expected}}


def test_score_hysteresis_keeps_a_tracked_object_but_starts_none() -> None:
    policy = quick(labels=["person"], min_score=0.5, score_hysteresis=0.1)
    scenes = [
        frame(person(0.2, score=0.6)),
        frame(person(0.21, score=0.45), person(0.7, score=0.45)),
    ]
    events = run(policy, scenes)
    assert states(events) == [(0.0, "person:1", "change")]
    assert policy.snapshot()["counts"] == {"frame": {"person": 1}}


# --- zones and lines ------------------------------------------------------------------------


def test_counts_per_zone_and_entered_left() -> None:
    policy = quick(labels=["person"], zones=[DRIVE, STREET])
    xs = [0.3, 0.35, 0.4, 0.45, 0.55, 0.6]
    events = run(policy, [frame(person(x)) for x in xs])
    assert states(events) == [
        (0.0, "person:1@drive", "change"),
        (4.0, "person:1@street", "change"),
    ]
    moved = events[1][1].detection
    assert moved["counts"] == {"drive": {"person": 0}, "street": {"person": 1}}
    assert moved["entered"] == [{"id": 1, "label": "person", "zone": "street"}]
    assert moved["left"] == [{"id": 1, "label": "person", "zone": "drive"}]
    assert [o["id"] for o in moved["objects"]] == [1]


def test_arrival_and_departure_come_with_their_count_change_in_one_event() -> None:
    # Defaults: debounce 2 and absent_frames 5 pace the counts, the zone entries and the
    # end of a lost track alike.
    policy = DetectionPolicy(labels=["person"], zones=[DRIVE])
    xs = [0.72, 0.67, 0.62, 0.57, 0.52, 0.47, 0.42, 0.37, 0.37, 0.37]
    events = run(policy, [EMPTY, *[frame(person(x)) for x in xs], *[EMPTY] * 7])
    assert states(events) == [
        (0.0, "none", "change"),
        (7.0, "person:1@drive", "change"),  # inside from t = 6, for 2 frames
        (15.0, "none", "change"),  # gone from t = 11, for 5 frames
    ]
    arrival, departure = events[1][1].detection, events[2][1].detection
    assert arrival["entered"] == [{"id": 1, "label": "person", "zone": "drive"}]
    assert departure["left"] == [{"id": 1, "label": "person", "zone": "drive"}]
    assert departure["objects"] == [
        {"id": 1, "label": "person", "score": 0.9, "box": [0.27, 0.5, 0.47, 0.8]}
    ]


def test_zone_events_off_reports_counts_only() -> None:
    policy = quick(labels=["person"], zones=[DRIVE, STREET], zone_events=False)
    events = run(policy, [frame(person(x)) for x in [0.4, 0.45, 0.55, 0.6]])
    assert states(events) == [(0.0, "person:1@drive", "change"), (2.0, "person:1@street", "change")]
    assert all(not d.detection["entered"] and not d.detection["left"] for _, d in events)


def test_an_object_outside_every_zone_is_not_counted() -> None:
    policy = quick(labels=["person"], zones=[DRIVE])
    assert counts(policy, frame(person(0.3, y=0.3))) == {"drive": {"person": 0}}


def test_line_crossings_are_events_with_totals() -> None:
    policy = quick(labels=["person"], lines=[GATE])
    down = [0.3, 0.4, 0.45, 0.55, 0.65]
    events = run(policy, [frame(person(0.5, y)) for y in [*down, *down[::-1], *down]])
    crossed = [(t, d.reason, d.detection["crossed"]) for t, d in events if d.detection["crossed"]]
    assert crossed == [
        (3.0, TRACK, [{"id": 1, "label": "person", "line": "gate", "direction": "in", "total": 1}]),
        (
            7.0,
            TRACK,
            [{"id": 1, "label": "person", "line": "gate", "direction": "out", "total": 1}],
        ),
        (
            13.0,
            TRACK,
            [{"id": 1, "label": "person", "line": "gate", "direction": "in", "total": 2}],
        ),
    ]
    assert all(d.state == d.previous == "person:1" for t, d in events if t > 0)
    assert policy.snapshot()["crossings"] == {"gate": {"in": 2, "out": 1}}


# --- timing ---------------------------------------------------------------------------------


def test_min_interval_delays_a_change_and_keeps_crossings() -> None:
    policy = quick(labels=["person"], lines=[GATE], min_interval=5)
    ys = [0.3, 0.4, 0.45, 0.55, 0.65, 0.7, 0.7]  # crosses "in" at t = 3
    events = run(policy, [frame(person(0.5, y)) for y in ys])
    assert states(events) == [(0.0, "person:1", "change"), (5.0, "person:1", TRACK)]
    assert events[1][1].detection["crossed"][0]["direction"] == "in"


def test_a_change_that_reverts_within_min_interval_is_never_published() -> None:
    policy = quick(labels=["person"], min_interval=5)
    one, two = frame(person(0.2)), frame(person(0.2), person(0.7))
    events = run(policy, [one, two, two, one, one, one, one])
    assert states(events) == [(0.0, "person:1", "change")]


def test_heartbeat_repeats_the_state() -> None:
    policy = quick(labels=["person"], heartbeat=3)
    events = run(policy, [frame(person())] * 7)
    assert states(events) == [
        (0.0, "person:1", "change"),
        (3.0, "person:1", "heartbeat"),
        (6.0, "person:1", "heartbeat"),
    ]


# --- payload --------------------------------------------------------------------------------


def test_objects_are_rounded_ranked_and_capped() -> None:
    policy = quick(max_objects=2)
    scene = frame(("cat", 0.2, 0.8, 0.61234), ("dog", 0.5, 0.8, 0.9), ("cow", 0.8, 0.8, 0.7))
    decision = policy.decide(scene, 0.0)
    assert decision is not None
    assert decision.detection["objects"] == [
        {"id": 2, "label": "dog", "score": 0.9, "box": [0.4, 0.5, 0.6, 0.8]},
        {"id": 3, "label": "cow", "score": 0.7, "box": [0.7, 0.5, 0.9, 0.8]},
    ]
    assert decision.score == pytest.approx(0.9)
    assert decision.label == "dog"
    assert decision.state == "cat:1,cow:1,dog:1"


def test_summary_names_zones_and_stays_short() -> None:
    many = [make_zone(f"z{i}", [[0, 0], [1, 0], [1, 1], [0, 1]]) for i in range(5)]
    policy = quick(labels=["person", "car"], zones=many)
    decision = policy.decide(frame(person(), ("car", 0.7, 0.8, 0.9)), 0.0)
    assert decision is not None
    assert decision.state == (
        "car:1@z0,person:1@z0,car:1@z1,person:1@z1,car:1@z2,person:1@z2,car:1@z3,person:1@z3,+2"
    )


def test_the_event_is_a_decision_with_the_usual_envelope_and_plain_json() -> None:
    policy = quick(labels=["person"], zones=[DRIVE], lines=[GATE])
    decision = policy.decide(frame(person(0.3, 0.8)), 0.0)
    assert isinstance(decision, Decision)
    model = ModelInfo("det", "1", "ab" * 32)
    envelope = event_payload(
        device="cam", pipeline="p", seq=1, event_id="x", epoch=0.0, decision=decision, model=model
    )
    assert (envelope["decision"], envelope["score"], envelope["label"]) == (
        "person:1@drive",
        0.9,
        "person",
    )
    body = encode({**envelope, "detection": decision.detection})  # no numpy types left
    assert json.loads(body)["detection"]["objects"][0]["id"] == 1
    assert len(body) < 600


# --- bad configuration and input ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_area": 0.5, "max_area": 0.1}, r"min_area \(0.5\) must be <= max_area \(0.1\)"),
        ({"min_score": 1.5}, r"min_score must be a number in \[0, 1\]"),
        ({"labels": ["person"], "min_score_by_label": {"car": 0.5}}, r"not in labels: \['car'\]"),
        ({"min_score_by_label": {"car": -1}}, r"min_score_by_label\['car'\]"),
        ({"labels": []}, "labels must be a non-empty list"),
        ({"labels": "person"}, "labels must be a non-empty list"),
        ({"debounce": 0}, "debounce must be an integer >= 1"),
        ({"absent_frames": 1.5}, "absent_frames must be an integer >= 1"),
        ({"absent_seconds": -1}, "absent_seconds must be a finite number"),
        ({"max_missed": -1}, "max_missed must be an integer >= 0"),
        ({"min_interval": float("nan")}, "min_interval"),
        ({"zones": [DRIVE, DRIVE]}, "two zones are named 'drive'"),
        ({"lines": [GATE, GATE]}, "two lines are named 'gate'"),
        ({"unknown": 1}, "unexpected keyword argument 'unknown'"),
    ],
)
def test_bad_configuration_is_refused_with_the_reason(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        DetectionPolicy(**kwargs)


def test_bad_input_is_refused_and_leaves_the_policy_untouched() -> None:
    policy = quick(labels=["person"])
    assert policy.decide(frame(person()), 0.0) is not None
    with pytest.raises(ValueError, match="expected Detections"):
        policy.decide(np.zeros((1, 4)), 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="now must be a finite time"):
        policy.decide(frame(person()), float("nan"))
    with pytest.raises(ValueError, match="NaN or infinity"):
        frame(person(score=float("nan")))
    assert policy.decide(frame(person()), 2.0) is None  # nothing changed in between
    assert policy.snapshot()["counts"] == {"frame": {"person": 1}}


def test_boxes_out_of_the_frame_are_clipped_and_degenerate_ones_dropped() -> None:
    policy = quick(labels=["person"])
    boxes = np.array([[-0.1, 0.5, 0.2, 1.2], [0.5, 0.5, 0.5, 0.9]], np.float32)
    scene = Detections(boxes, np.array([0.9, 0.9]), np.zeros(2, int), ("person", "person"))
    decision = policy.decide(scene, 0.0)
    assert decision is not None
    assert decision.detection["objects"] == [
        {"id": 1, "label": "person", "score": 0.9, "box": [0.0, 0.5, 0.2, 1.0]}
    ]


# --- the Detections type --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("boxes", "scores", "classes", "labels", "message"),
    [
        ([[0, 0, 1, 1]], [0.5, 0.6], [0, 1], ("a", "b"), r"boxes must have shape \[2, 4\]"),
        ([[0, 0, 1]], [0.5], [0], ("a",), r"boxes must have shape \[1, 4\]"),
        ([[0, 0, 1, 1]], [0.5], [0.5], ("a",), "classes must be 1 integers"),
        ([[0, 0, 1, 1]], [0.5], [0], ("a", "b"), "labels must name each of the 1"),
        ([[0, 0, float("inf"), 1]], [0.5], [0], ("a",), "NaN or infinity"),
    ],
)
def test_detections_refuse_arrays_that_do_not_fit(
    boxes: object, scores: object, classes: object, labels: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Detections(np.array(boxes), np.array(scores), np.array(classes), labels)


def test_detections_convert_dtypes_and_select() -> None:
    d = Detections(
        np.array([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]], np.float64),
        np.array([0.9, 0.4]),
        np.array([3, 7], np.int32),
        ("dog", "cat"),
    )
    assert [str(a.dtype) for a in (d.boxes, d.scores, d.classes)] == ["float32", "float32", "int64"]
    picked = d.select(np.array([False, True]))
    assert len(picked) == 1
    assert picked.labels == ("cat",)
    assert picked.classes.tolist() == [7]
    assert len(Detections.empty()) == 0


def test_detections_default_to_class_ids_and_take_names() -> None:
    d = Detections(
        np.array([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]]), np.array([0.9, 0.4]), np.array([17, 2])
    )
    assert d.labels == ("17", "2")
    named = d.named(DetectionLabels(["???", "person", "bicycle", "car"]))
    # "???" first: id k is line k + 1; an id past the end stays a number
    assert named.labels == ("17", "car")
    assert named.records(2)[1] == {
        "label": "car",
        "class": 2,
        "score": 0.4,
        "box": [0.5] * 2 + [1.0] * 2,
    }

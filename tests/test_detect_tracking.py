"""The tracker, frame by frame: ids, missed frames, zone entries/exits and line crossings."""

from collections.abc import Sequence

import numpy as np
import pytest

from edge_agent.config.zones import make_line, make_zone
from edge_agent.model.detection.types import Detections
from edge_agent.pipeline.detection.tracking import (
    Tracker,
    TrackerOptions,
    TrackReport,
    bottom_centres,
    greedy_pairs,
    iou_matrix,
)

Box = Sequence[float]


def dets(*objects: tuple[str, Box], score: float = 0.9) -> Detections:
    """Detections of (label, box) pairs, all with ``score``."""
    boxes = np.array([box for _, box in objects], np.float32).reshape(-1, 4)
    labels = tuple(label for label, _ in objects)
    return Detections(boxes, np.full(len(objects), score), np.zeros(len(objects), int), labels)


def person_at(x: float, y: float, width: float = 0.2, height: float = 0.3) -> tuple[str, Box]:
    """A person whose bottom-centre (where it stands) is at (x, y)."""
    return ("person", [x - width / 2, y - height, x + width / 2, y])


def run(tracker: Tracker, frames: Sequence[Detections]) -> list[TrackReport]:
    return [tracker.update(frame) for frame in frames]


# --- pure helpers -------------------------------------------------------------


def test_iou_matrix_hand_computed() -> None:
    a = [[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.6, 0.6]]
    b = [[0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 0.2, 0.2], [0.3, 0.3, 0.3, 0.3]]
    # a0/b0 overlap 0.1 x 0.1 = 0.01 over 0.04 + 0.04 - 0.01; b2 has no area.
    expected = [[0.01 / 0.07, 1.0, 0.0], [0.0, 0.0, 0.0]]
    np.testing.assert_allclose(iou_matrix(np.array(a), np.array(b)), expected)
    assert iou_matrix(np.zeros((0, 4)), np.array(b)).shape == (0, 3)


def test_greedy_pairs_take_the_best_pair_first_and_respect_the_floor() -> None:
    score = np.array([[0.9, 0.8], [0.85, 0.1]])
    # Greedy, not optimal: row 0 takes column 0, row 1's last option is under the floor.
    assert greedy_pairs(score, 0.3) == [(0, 0)]
    assert greedy_pairs(score, 0.05) == [(0, 0), (1, 1)]
    assert greedy_pairs(np.zeros((0, 3)), 0.3) == []


def test_bottom_centres() -> None:
    centres = bottom_centres(np.array([[0.2, 0.1, 0.4, 0.9]]))
    np.testing.assert_allclose(centres, [[0.3, 0.9]])


# --- ids ----------------------------------------------------------------------


def test_a_moving_object_keeps_its_id() -> None:
    tracker = Tracker()
    reports = run(tracker, [dets(person_at(0.3 + 0.02 * i, 0.8)) for i in range(10)])
    assert {int(r.ids[0]) for r in reports} == {1}


def test_two_objects_keep_their_own_ids_whatever_the_detection_order() -> None:
    tracker = Tracker()
    left, right = person_at(0.2, 0.8), person_at(0.7, 0.8)
    first = tracker.update(dets(left, right))
    swapped = tracker.update(dets(right, left))
    assert first.ids.tolist() == [1, 2]
    assert swapped.ids.tolist() == [2, 1]


def test_missed_frames_within_max_missed_keep_the_id() -> None:
    tracker = Tracker(options=TrackerOptions(max_missed=2))
    here = dets(person_at(0.5, 0.8))
    reports = run(tracker, [here, Detections.empty(), Detections.empty(), here])
    assert int(reports[0].ids[0]) == int(reports[3].ids[0]) == 1


def test_missed_longer_than_max_missed_gets_a_new_id() -> None:
    tracker = Tracker(options=TrackerOptions(max_missed=2))
    here = dets(person_at(0.5, 0.8))
    reports = run(tracker, [here, *[Detections.empty()] * 3, here])
    assert int(reports[0].ids[0]) == 1
    assert int(reports[4].ids[0]) == 2
    assert tracker.active == 1


def test_matching_is_per_label() -> None:
    tracker = Tracker()
    box = [0.4, 0.4, 0.6, 0.8]
    tracker.update(dets(("dog", box)))
    report = tracker.update(dets(("cat", box), ("dog", box)))
    assert report.ids.tolist() == [2, 1]


def test_centre_distance_continues_a_fast_small_object() -> None:
    small = [("ball", [0.10, 0.10, 0.13, 0.13]), ("ball", [0.16, 0.10, 0.19, 0.13])]
    near = Tracker(options=TrackerOptions(max_distance=0.1))
    off = Tracker(options=TrackerOptions(max_distance=0.0))
    # No overlap at all between the two boxes; their centres are 0.06 apart.
    assert [int(r.ids[0]) for r in run(near, [dets(d) for d in small])] == [1, 1]
    assert [int(r.ids[0]) for r in run(off, [dets(d) for d in small])] == [1, 2]


def test_a_weak_detection_continues_a_track_but_never_starts_one() -> None:
    tracker = Tracker()
    strong = tracker.update(dets(person_at(0.3, 0.8)), strong=[True])
    weak = tracker.update(dets(person_at(0.31, 0.8), person_at(0.8, 0.8)), strong=[False, False])
    assert strong.ids.tolist() == [1]
    assert weak.ids.tolist() == [1, -1]
    assert tracker.active == 1


# --- zones --------------------------------------------------------------------

DRIVE = make_zone("drive", [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]])


def zone_events(reports: Sequence[TrackReport]) -> list[tuple[int, str, int, str]]:
    """(frame, 'entered'/'left', track id, zone) in order."""
    out = []
    for i, r in enumerate(reports):
        out += [(i, "entered", e.track_id, e.zone) for e in r.entered]
        out += [(i, "left", e.track_id, e.zone) for e in r.left]
    return out


def test_walking_in_and_out_of_a_zone_enters_once_and_leaves_once() -> None:
    tracker = Tracker([DRIVE])
    xs = [0.72, 0.67, 0.62, 0.57, 0.52, 0.47, 0.42, 0.47, 0.52, 0.57]
    reports = run(tracker, [dets(person_at(x, 0.8)) for x in xs])
    assert zone_events(reports) == [(5, "entered", 1, "drive"), (8, "left", 1, "drive")]
    assert [r.inside.tolist() for r in reports[4:7]] == [[[False]], [[True]], [[True]]]


def test_zone_leave_ignores_a_one_frame_step_across_the_edge() -> None:
    tracker = Tracker([DRIVE], options=TrackerOptions(zone_leave=2))
    xs = [0.45, 0.45, 0.52, 0.45, 0.52, 0.55, 0.6]
    reports = run(tracker, [dets(person_at(x, 0.8)) for x in xs])
    assert zone_events(reports) == [(0, "entered", 1, "drive"), (5, "left", 1, "drive")]


def test_zone_enter_needs_that_many_sightings_inside() -> None:
    tracker = Tracker([DRIVE], options=TrackerOptions(zone_enter=3))
    xs = [0.55, 0.45, 0.55, 0.45, 0.45, 0.45, 0.45]
    reports = run(tracker, [dets(person_at(x, 0.8)) for x in xs])
    assert zone_events(reports) == [(5, "entered", 1, "drive")]


def test_a_lost_track_leaves_after_max_missed() -> None:
    tracker = Tracker([DRIVE], options=TrackerOptions(max_missed=2))
    reports = run(tracker, [dets(person_at(0.3, 0.8)), *[Detections.empty()] * 3])
    assert zone_events(reports) == [(0, "entered", 1, "drive"), (3, "left", 1, "drive")]
    assert reports[3].left[0].box == pytest.approx((0.2, 0.5, 0.4, 0.8))


def test_min_hits_hides_a_one_frame_false_positive() -> None:
    tracker = Tracker([DRIVE], options=TrackerOptions(min_hits=2))
    ghost = [dets(person_at(0.3, 0.8)), Detections.empty(), Detections.empty()]
    assert zone_events(run(tracker, ghost)) == []
    real = run(tracker, [dets(person_at(0.3, 0.8))] * 2)
    assert zone_events(real) == [(1, "entered", 2, "drive")]


# --- lines --------------------------------------------------------------------

GATE = make_line("gate", [[0.2, 0.5], [0.8, 0.5]])  # left to right: "in" is moving down


def crossings(reports: Sequence[TrackReport]) -> list[tuple[int, int, str, str]]:
    return [(i, c.track_id, c.line, c.direction) for i, r in enumerate(reports) for c in r.crossed]


def test_crossing_each_way_counts_once_per_crossing() -> None:
    tracker = Tracker(lines=[GATE])
    ys = [0.3, 0.4, 0.45, 0.55, 0.6, 0.7, 0.6, 0.45, 0.35]
    reports = run(tracker, [dets(person_at(0.5, y)) for y in ys])
    assert crossings(reports) == [(3, 1, "gate", "in"), (7, 1, "gate", "out")]


def test_standing_on_the_line_does_not_count() -> None:
    tracker = Tracker(lines=[GATE])
    ys = [0.3, 0.49, 0.51, 0.495, 0.515, 0.49, 0.3]  # all within the 0.02 margin, then back
    assert crossings(run(tracker, [dets(person_at(0.5, y)) for y in ys])) == []


def test_a_missed_frame_on_the_line_still_counts_the_crossing() -> None:
    tracker = Tracker(lines=[GATE])
    frames = [dets(person_at(0.5, 0.45)), Detections.empty(), dets(person_at(0.5, 0.55))]
    assert crossings(run(tracker, frames)) == [(2, 1, "gate", "in")]


def test_going_round_the_end_of_the_line_is_not_a_crossing() -> None:
    tracker = Tracker(lines=[GATE])
    ys = [(0.9, 0.3), (0.9, 0.5), (0.9, 0.7), (0.5, 0.7)]
    assert crossings(run(tracker, [dets(person_at(x, y)) for x, y in ys])) == []


def test_a_crossing_while_tentative_is_reported_on_confirmation() -> None:
    tracker = Tracker(lines=[GATE], options=TrackerOptions(min_hits=2))
    reports = run(tracker, [dets(person_at(0.5, 0.45)), dets(person_at(0.5, 0.55))])
    assert crossings(reports) == [(1, 1, "gate", "in")]


def test_two_objects_crossing_opposite_ways() -> None:
    tracker = Tracker(lines=[GATE])
    frames = [dets(person_at(0.3, 0.3 + 0.1 * i), person_at(0.7, 0.7 - 0.1 * i)) for i in range(5)]
    # At i = 2 both stand on the line (within its margin): they cross at i = 3.
    got = sorted(crossings(run(tracker, frames)))
    assert got == [(3, 1, "gate", "in"), (3, 2, "gate", "out")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_iou": 0.0}, "min_iou"),
        ({"max_distance": -0.1}, "max_distance"),
        ({"max_missed": -1}, "max_missed"),
        ({"min_hits": 0}, "min_hits"),
        ({"zone_enter": 1.5}, "zone_enter"),
        ({"zone_leave": 0}, "zone_leave"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrackerOptions(**kwargs)  # type: ignore[arg-type]

"""Zones and lines in normalized coordinates: hand-computed geometry, and config errors."""

import numpy as np
import pytest

from edge_agent.config.zones import (
    FRAME,
    make_line,
    make_zone,
    parse_lines,
    parse_zones,
    segments_intersect,
    whole_frame,
)

SQUARE = [[0.2, 0.2], [0.6, 0.2], [0.6, 0.6], [0.2, 0.6]]
# An L: the top-right quarter is cut out.
ELL = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]


def test_square_inside_outside_edges_and_corners() -> None:
    zone = make_zone("square", SQUARE)
    points = [[0.4, 0.4], [0.1, 0.4], [0.6, 0.4], [0.2, 0.2], [0.7, 0.7], [0.4, 0.61]]
    assert zone.contains(points).tolist() == [True, False, True, True, False, False]


def test_concave_polygon_excludes_its_notch() -> None:
    zone = make_zone("ell", ELL)
    points = [[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.5, 0.25], [0.51, 0.49]]
    assert zone.contains(points).tolist() == [True, False, True, True, False]


def test_points_order_does_not_matter_clockwise_or_not() -> None:
    points = np.array([[0.3, 0.3], [0.65, 0.3], [0.59, 0.59]])
    forward = make_zone("a", SQUARE).contains(points)
    backward = make_zone("b", SQUARE[::-1]).contains(points)
    assert forward.tolist() == backward.tolist() == [True, False, True]


def test_zone_down_to_the_frame_bottom_holds_objects_cut_by_the_frame() -> None:
    # A box clipped by the frame's bottom edge stands at y = 1.0 exactly.
    zone = make_zone("drive", [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]])
    assert zone.contains([[0.5, 1.0], [0.0, 1.0], [0.5, 0.49]]).tolist() == [True, True, False]


def test_whole_frame_contains_every_point_of_the_frame() -> None:
    frame = whole_frame()
    assert frame.name == FRAME
    corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]])
    assert frame.contains(corners).all()


def test_contains_of_no_points_is_empty() -> None:
    assert make_zone("s", SQUARE).contains(np.zeros((0, 2))).shape == (0,)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([[0.1, 0.1], [0.5, 0.5]], "needs at least 3"),
        ([[0.1, 0.1], [0.5, 0.1], [1.2, 0.5]], r"in \[0, 1\]"),
        ([[0.1, 0.1], [0.5, 0.1], [float("nan"), 0.5]], r"in \[0, 1\]"),
        ([[0.1, 0.1], [0.3, 0.3], [0.5, 0.5]], "no area"),
        ([[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]], "edges 0 and 2 cross"),
        ([["a", "b"], [0.5, 0.1], [0.5, 0.5]], r"\[x, y\] pairs of numbers"),
        ([0.1, 0.2, 0.3], "needs at least 3"),
    ],
)
def test_bad_polygons_are_refused_naming_the_zone(points: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        make_zone("porch", points)
    assert "zone 'porch'" in str(caught.value)


def test_collinear_edges_that_do_not_touch_are_not_a_crossing() -> None:
    # A U: its two bottom edges lie on y = 0 but are apart.
    u = [[0, 0], [0.3, 0], [0.3, 0.7], [0.6, 0.7], [0.6, 0], [1, 0], [1, 1], [0, 1]]
    zone = make_zone("u", u)
    assert zone.contains([[0.45, 0.3], [0.45, 0.8], [0.1, 0.1]]).tolist() == [False, True, True]


@pytest.mark.parametrize("name", ["", "drive way", "-x", "a/b", 3])
def test_zone_names_must_be_plain(name: object) -> None:
    with pytest.raises(ValueError, match="zone name"):
        make_zone(name, SQUARE)  # type: ignore[arg-type]


def test_line_sides_with_margin() -> None:
    line = make_line("gate", [[0.0, 0.5], [1.0, 0.5]], margin=0.02)
    # y grows downwards: below a left-to-right line is its right-hand side.
    sides = line.sides([[0.5, 0.8], [0.5, 0.2], [0.5, 0.51], [0.5, 0.49], [0.5, 0.53]])
    assert sides.tolist() == [1, -1, 0, 0, 1]
    assert line.direction(-1, 1) == "in"
    assert line.direction(1, -1) == "out"


def test_reversed_line_swaps_the_sides() -> None:
    line = make_line("gate", [[1.0, 0.5], [0.0, 0.5]], directions=["down", "up"])
    assert line.sides([[0.5, 0.8], [0.5, 0.2]]).tolist() == [-1, 1]
    assert line.direction(1, -1) == "up"


def test_crossed_only_through_the_segment_not_round_its_ends() -> None:
    line = make_line("gate", [[0.2, 0.5], [0.8, 0.5]])
    starts = [[0.5, 0.2], [0.9, 0.2], [0.5, 0.8], [0.8, 0.4]]
    ends = [[0.5, 0.8], [0.9, 0.8], [0.5, 0.6], [0.8, 0.6]]
    assert line.crossed(starts, ends).tolist() == [True, False, False, True]


def test_segments_intersect_collinear_cases() -> None:
    a, b = np.array([0.0, 0.0]), np.array([0.5, 0.0])
    p = np.array([[0.6, 0.0], [0.4, 0.0], [0.1, 0.1]])
    q = np.array([[0.9, 0.0], [0.8, 0.0], [0.1, -0.1]])
    assert segments_intersect(p, q, a, b).tolist() == [False, True, True]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": [[0.1, 0.5], [0.1, 0.5]]}, "the same"),
        ({"points": [[0.1, 0.5], [0.2, 0.5], [0.3, 0.5]]}, "exactly 2 points"),
        ({"points": [[0.1, 0.5]]}, "at least 2"),
        ({"points": [[0.1, 0.5], [0.9, 0.5]], "directions": ["in", "in"]}, "must differ"),
        ({"points": [[0.1, 0.5], [0.9, 0.5]], "directions": "in"}, "two names"),
        ({"points": [[0.1, 0.5], [0.9, 0.5]], "directions": ["in", "o u t"]}, "direction name"),
        ({"points": [[0.1, 0.5], [0.9, 0.5]], "margin": -0.1}, "margin"),
    ],
)
def test_bad_lines_are_refused_naming_the_line(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_lines({"gate": kwargs})
    assert "line 'gate'" in str(caught.value)


def test_parse_lines_rejects_unknown_keys_and_missing_points() -> None:
    with pytest.raises(ValueError, match=r"line 'gate': unknown keys \['colour'\]"):
        parse_lines({"gate": {"points": [[0.1, 0.5], [0.9, 0.5]], "colour": "red"}})
    with pytest.raises(ValueError, match="line 'gate': 'points' is required"):
        parse_lines({"gate": {"directions": ["a", "b"]}})
    with pytest.raises(ValueError, match="expected a table"):
        parse_lines({"gate": [[0.1, 0.5], [0.9, 0.5]]})  # type: ignore[dict-item]


def test_parse_builds_named_zones_and_lines_in_order() -> None:
    zones = parse_zones({"drive": SQUARE, "porch": ELL})
    lines = parse_lines(
        {"gate": {"points": [[0.1, 0.5], [0.9, 0.5]], "directions": ["enter", "exit"]}}
    )
    assert [z.name for z in zones] == ["drive", "porch"]
    assert lines[0].name == "gate"
    assert lines[0].directions == ("enter", "exit")
    assert lines[0].margin == 0.02
    assert parse_zones(None) == ()
    assert parse_lines({}) == ()

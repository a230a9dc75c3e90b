"""Zones (named polygons) and lines (named segments) in normalized frame coordinates.

Coordinates are fractions of the frame: x from 0 (left edge) to 1 (right edge),
y from 0 (top edge) to 1 (bottom edge), so a zone keeps its place whatever the
camera's resolution. An object is in a zone when the bottom-centre of its box
(where a person stands, where a car touches the ground) is inside the polygon
or on its edge: a zone drawn down to ``y = 1`` holds objects cut by the frame's
bottom edge.

A line A->B splits the frame in two sides. Seen on the image, "right of A->B"
is the side on your right when you walk from A to B; the first direction name
(default ``"in"``) is a crossing from the left side to the right side, the
second (``"out"``) the other way. For a line drawn left to right across the
frame, ``"in"`` is moving down the image (usually towards the camera).

Pure functions of arrays; bad configuration raises ValueError naming the zone
or line and the reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FRAME = "frame"
"""The name of the implicit whole-frame zone (when no zones are configured)."""
DEFAULT_DIRECTIONS = ("in", "out")
DEFAULT_MARGIN = 0.02
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_EPS = 1e-9
_Points = npt.NDArray[np.float64]


def _name(kind: str, name: object) -> str:
    """Names go into topics, JSON keys and Home Assistant ids: keep them plain."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"{kind} name {name!r} must be letters, digits, '_' or '-' (not starting with '-')"
        )
    return name


def _points(where: str, raw: object, *, least: int) -> _Points:
    """At least ``least`` finite [x, y] pairs, each within the frame [0, 1]."""
    try:
        points = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: points must be [x, y] pairs of numbers ({exc})") from None
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < least:
        raise ValueError(f"{where}: needs at least {least} [x, y] points, got {raw!r}")
    if not np.isfinite(points).all() or points.min() < 0 or points.max() > 1:
        raise ValueError(f"{where}: points must be normalized coordinates in [0, 1], got {raw!r}")
    return points


def _cross(o: _Points, a: _Points, b: _Points) -> _Points:
    """The z of (a - o) x (b - o), broadcast: > 0 when b is right of o->a on the image."""
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (
        b[..., 0] - o[..., 0]
    )


def _orientation(o: _Points, a: _Points, b: _Points) -> _Points:
    """-1, 0 or +1: the side of b relative to o->a, with near-collinear snapped to 0."""
    cross = _cross(o, a, b)
    return np.where(np.abs(cross) <= _EPS, 0.0, np.sign(cross))


def segments_intersect(p: _Points, q: _Points, a: _Points, b: _Points) -> npt.NDArray[np.bool_]:
    """Whether each segment p[i]->q[i] meets the segment a->b (touching counts)."""
    o1, o2 = _orientation(a, b, p), _orientation(a, b, q)
    o3, o4 = _orientation(p, q, a), _orientation(p, q, b)
    general = (o1 * o2 <= 0) & (o3 * o4 <= 0)
    # All four on one line: they meet only if their extents overlap.
    lo_pq, hi_pq = np.minimum(p, q), np.maximum(p, q)
    lo_ab, hi_ab = np.minimum(a, b), np.maximum(a, b)
    overlap = ((lo_pq <= hi_ab + _EPS) & (lo_ab <= hi_pq + _EPS)).all(axis=-1)
    collinear = (o1 == 0) & (o2 == 0)
    return np.asarray(np.where(collinear, overlap, general), dtype=np.bool_)


def _simple(where: str, poly: _Points) -> None:
    """Refuse a polygon whose non-adjacent edges cross (a bow tie): its inside is ambiguous."""
    n = len(poly)
    starts, ends = poly, np.roll(poly, -1, axis=0)
    for i in range(n):
        later = [j for j in range(i + 2, n) if not (i == 0 and j == n - 1)]
        if not later:
            continue
        hit = segments_intersect(starts[later], ends[later], starts[i], ends[i])
        if hit.any():
            j = later[int(np.argmax(hit))]
            raise ValueError(f"{where}: edges {i} and {j} cross; list the points in order")


@dataclass(frozen=True, eq=False)
class Zone:
    """A named polygon; build with :func:`make_zone` (which validates)."""

    name: str
    points: _Points
    _edges: tuple[_Points, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Per-edge arrays, computed once: contains() runs for every zone on every frame.
        a = self.points[None, :, :]
        b = np.roll(self.points, -1, axis=0)[None, :, :]
        dx, dy = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
        lo, hi = np.minimum(a, b) - _EPS, np.maximum(a, b) + _EPS
        object.__setattr__(self, "_edges", (a, b, dx, dy, lo, hi))

    def contains(self, points: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Whether each of the ``[M, 2]`` points is inside the polygon or on its edge."""
        a, b, dx, dy, lo, hi = self._edges
        p = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
        px, py = p[..., 0], p[..., 1]
        # Even-odd rule: count edges that a ray going right from p crosses.
        spans = (a[..., 1] > py) != (b[..., 1] > py)
        x_at = a[..., 0] + (py - a[..., 1]) * dx / np.where(dy == 0, 1.0, dy)
        inside = (np.count_nonzero(spans & (px < x_at), axis=1) % 2) == 1
        on_line = np.abs(dx * (py - a[..., 1]) - dy * (px - a[..., 0])) <= _EPS
        within = ((p >= lo) & (p <= hi)).all(axis=2)
        return np.asarray(inside | (on_line & within).any(axis=1))


def make_zone(name: str, points: object) -> Zone:
    """A validated zone: >= 3 points in [0, 1], a non-zero area, no crossing edges."""
    where = f"zone {_name('zone', name)!r}"
    poly = _points(where, points, least=3)
    _simple(where, poly)  # first: a symmetric bow tie also has a signed area of 0
    area = 0.5 * abs(float(_cross(np.zeros(2), poly, np.roll(poly, -1, axis=0)).sum()))
    if area <= _EPS:
        raise ValueError(f"{where}: the polygon has no area (points on one line?)")
    return Zone(name, poly)


def whole_frame() -> Zone:
    """The implicit zone used when none are configured: every object is in it."""
    return Zone(FRAME, np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))


@dataclass(frozen=True, eq=False)
class Line:
    """A named segment A->B; build with :func:`make_line` (which validates)."""

    name: str
    a: _Points
    b: _Points
    directions: tuple[str, str] = DEFAULT_DIRECTIONS
    """Names of a crossing left->right and right->left of A->B (as seen on the image)."""
    margin: float = DEFAULT_MARGIN
    """A point closer than this to the line (normalized) is on neither side: jitter
    of a box standing on the line does not count as crossings."""

    def sides(self, points: npt.ArrayLike) -> npt.NDArray[np.int8]:
        """+1 right of A->B, -1 left, 0 within ``margin`` of the (infinite) line."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        distance = _cross(self.a, self.b, pts) / float(np.hypot(*(self.b - self.a)))
        side = np.sign(distance).astype(np.int8)
        side[np.abs(distance) <= self.margin] = 0
        return side

    def crossed(self, starts: npt.ArrayLike, ends: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Whether each path starts[i] -> ends[i] passes through the segment A-B
        (not around its ends)."""
        p = np.asarray(starts, dtype=np.float64).reshape(-1, 2)
        q = np.asarray(ends, dtype=np.float64).reshape(-1, 2)
        return segments_intersect(p, q, self.a, self.b)

    def direction(self, before: int, after: int) -> str:
        """The direction name of a move from side ``before`` to side ``after``."""
        return self.directions[0] if before < after else self.directions[1]


def make_line(
    name: str,
    points: object,
    *,
    directions: Sequence[str] = DEFAULT_DIRECTIONS,
    margin: float = DEFAULT_MARGIN,
) -> Line:
    """A validated line: two distinct points in [0, 1], two distinct direction names."""
    where = f"line {_name('line', name)!r}"
    pts = _points(where, points, least=2)
    if len(pts) != 2:
        raise ValueError(f"{where}: needs exactly 2 points [[x1, y1], [x2, y2]], got {len(pts)}")
    if np.hypot(*(pts[1] - pts[0])) <= 1e-6:
        raise ValueError(f"{where}: its two points are the same")
    if isinstance(directions, str) or len(directions) != 2:
        raise ValueError(f"{where}: directions must be two names, got {directions!r}")
    first, second = (_name(f"{where} direction", d) for d in directions)
    if first == second:
        raise ValueError(f"{where}: the two directions must differ, both are {first!r}")
    if not (isinstance(margin, int | float) and math.isfinite(margin) and 0 <= margin < 0.5):
        raise ValueError(f"{where}: margin must be a number in [0, 0.5), got {margin!r}")
    return Line(name, pts[0], pts[1], (first, second), float(margin))


_LINE_KEYS = frozenset({"points", "directions", "margin"})


def parse_zones(config: Mapping[str, object] | None) -> tuple[Zone, ...]:
    """Zones from configuration ``{name: [[x, y], ...]}``; an empty one is ()."""
    return tuple(make_zone(name, points) for name, points in (config or {}).items())


def parse_lines(config: Mapping[str, Mapping[str, Any]] | None) -> tuple[Line, ...]:
    """Lines from ``{name: {points = [[x, y], [x, y]], directions = [..], margin = ..}}``."""
    lines = []
    for name, spec in (config or {}).items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"line {name!r}: expected a table with 'points', got {spec!r}")
        unknown = sorted(set(spec) - _LINE_KEYS)
        if unknown:
            raise ValueError(f"line {name!r}: unknown keys {unknown} (known: {sorted(_LINE_KEYS)})")
        if "points" not in spec:
            raise ValueError(f"line {name!r}: 'points' is required")
        lines.append(
            make_line(
                name,
                spec["points"],
                directions=spec.get("directions", DEFAULT_DIRECTIONS),
                margin=spec.get("margin", DEFAULT_MARGIN),
            )
        )
    return tuple(lines)

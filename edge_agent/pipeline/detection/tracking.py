"""A light multi-object tracker: stable ids across frames, zone entries/exits, line crossings.

Each frame's detections are matched to the live tracks of the same label,
greedily by IoU (best pair first), then, for what is left, by centre distance
(a small object moving fast overlaps nothing of its last box). A track survives
``max_missed`` frames without a match (a missed detection keeps its id) and
counts as real ("confirmed") once it has been matched ``min_hits`` frames in a
row; only confirmed tracks report ``entered``, ``left`` and crossings, so a
one-frame false positive reports nothing.

Zone membership and line sides use the bottom-centre of the track's box. A
membership change must hold ``zone_enter`` (or ``zone_leave``) sightings; a crossing counts when
the path from the last point clearly on one side of a line to the first point
clearly on the other goes through the segment (see ``Line.margin``), so an
object standing on a line does not count again and again.

Pure: no clock, no I/O. The caller feeds every frame, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge_agent.config.zones import Line, Zone
from edge_agent.model.detection.types import Detections

_Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class TrackerOptions:
    min_iou: float = 0.3
    """A detection continues a track when their boxes overlap at least this much."""
    max_distance: float = 0.1
    """Else when their centres are this close (normalized); 0 turns the fallback off."""
    max_missed: int = 5
    """Frames a track survives without a match before it is dropped (and has left)."""
    min_hits: int = 1
    """Consecutive matched frames before a new track is reported."""
    zone_enter: int = 1
    """Sightings inside a zone before the entry is reported."""
    zone_leave: int = 1
    """Sightings outside a zone before the exit is reported."""

    def __post_init__(self) -> None:
        if not 0 < self.min_iou <= 1:
            raise ValueError(f"min_iou must be in (0, 1], got {self.min_iou!r}")
        if not 0 <= self.max_distance <= 1.5:
            raise ValueError(f"max_distance must be in [0, 1.5], got {self.max_distance!r}")
        for name in ("max_missed", "min_hits", "zone_enter", "zone_leave"):
            value = getattr(self, name)
            least = 0 if name == "max_missed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


@dataclass(frozen=True)
class ZoneEvent:
    """A confirmed track entered or left a zone."""

    track_id: int
    label: str
    zone: str
    score: float
    box: _Box


@dataclass(frozen=True)
class Crossing:
    """A confirmed track crossed a line in ``direction``."""

    track_id: int
    label: str
    line: str
    direction: str
    score: float
    box: _Box


@dataclass(frozen=True, eq=False)
class TrackReport:
    """What one frame changed."""

    ids: npt.NDArray[np.int64]
    """The track id of each detection; -1 for a weak detection that continued no track."""
    inside: npt.NDArray[np.bool_]
    """``[zones, detections]``: whether each detection's bottom-centre is in each zone."""
    entered: tuple[ZoneEvent, ...] = ()
    left: tuple[ZoneEvent, ...] = ()
    crossed: tuple[Crossing, ...] = ()


@dataclass
class _Track:
    id: int
    code: int  # the label, as a small integer for vectorized comparison
    label: str
    box: npt.NDArray[np.float32]
    score: float
    hits: int = 1
    missed: int = 0
    confirmed: bool = False
    inside: dict[str, bool] = field(default_factory=dict)
    streak: dict[str, int] = field(default_factory=dict)
    side: dict[str, int] = field(default_factory=dict)
    anchor: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    pending: list[Crossing] = field(default_factory=list)  # crossed while not yet confirmed

    def as_box(self) -> _Box:
        x0, y0, x1, y1 = (float(v) for v in self.box)
        return (x0, y0, x1, y1)


def bottom_centres(boxes: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """``[K, 2]``: the middle of each box's bottom edge (where an object stands)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, b[:, 3]], axis=1)


def iou_matrix(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """``[len(a), len(b)]`` intersection over union of xmin, ymin, xmax, ymax boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    return np.asarray(np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0))


def greedy_pairs(score: npt.NDArray[np.float64], floor: float) -> list[tuple[int, int]]:
    """(row, column) pairs, best score first, each row and column used once, score >= floor."""
    score = np.array(score, dtype=np.float64)
    pairs: list[tuple[int, int]] = []
    for _ in range(min(score.shape)):
        row, col = divmod(int(np.argmax(score)), score.shape[1])
        if not score[row, col] >= floor:
            break
        pairs.append((row, col))
        score[row, :] = -np.inf
        score[:, col] = -np.inf
    return pairs


class Tracker:
    """Tracks objects across frames; ``update`` once per frame."""

    def __init__(
        self,
        zones: Sequence[Zone] = (),
        lines: Sequence[Line] = (),
        options: TrackerOptions | None = None,
    ) -> None:
        self.zones = tuple(zones)
        self.lines = tuple(lines)
        self.options = options or TrackerOptions()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._codes: dict[str, int] = {}

    @property
    def active(self) -> int:
        """Live tracks (confirmed or not, seen this frame or coasting)."""
        return len(self._tracks)

    def update(self, detections: Detections, strong: npt.ArrayLike | None = None) -> TrackReport:
        """Match this frame's detections; ``strong`` (default all) marks the ones that may
        start a new track: the others only continue one (score hysteresis)."""
        boxes = np.clip(detections.boxes, 0.0, 1.0)
        count = len(detections)
        may_start = np.ones(count, bool) if strong is None else np.asarray(strong, bool)
        codes = np.array([self._code(label) for label in detections.labels], dtype=np.int64)
        pairs = self._match(boxes, codes)
        ids = np.full(count, -1, dtype=np.int64)
        seen: list[tuple[_Track, int]] = []
        for row, det in pairs:
            track = self._tracks[row]
            track.box, track.score = boxes[det], float(detections.scores[det])
            track.hits, track.missed = track.hits + 1, 0
            seen.append((track, det))
        matched_rows = {row for row, _ in pairs}
        for track in (t for i, t in enumerate(self._tracks) if i not in matched_rows):
            track.missed += 1
        matched_dets = {det for _, det in pairs}
        for det in range(count):
            if det not in matched_dets and may_start[det]:
                track = _Track(
                    self._next_id, int(codes[det]), detections.labels[det], boxes[det],
                    float(detections.scores[det]),
                )  # fmt: skip
                self._next_id += 1
                self._tracks.append(track)
                seen.append((track, det))
        for track, det in seen:
            ids[det] = track.id
        points = bottom_centres(boxes)
        inside = np.array([zone.contains(points) for zone in self.zones], dtype=bool)
        inside = inside.reshape(len(self.zones), count)
        entered: list[ZoneEvent] = []
        left: list[ZoneEvent] = []
        crossed = self._cross(seen, points)
        self._zones(seen, inside, entered, left)
        for track, _ in seen:
            if not track.confirmed and track.hits >= self.options.min_hits:
                self._confirm(track, entered, crossed)
        left.extend(self._expire())
        return TrackReport(ids, inside, tuple(entered), tuple(left), tuple(crossed))

    def _code(self, label: str) -> int:
        return self._codes.setdefault(label, len(self._codes))

    def _match(
        self, boxes: npt.NDArray[np.float32], codes: npt.NDArray[np.int64]
    ) -> list[tuple[int, int]]:
        """Greedy IoU pairs of (track row, detection), then centre distance for the rest."""
        if not self._tracks or not len(boxes):
            return []
        track_boxes = np.stack([t.box for t in self._tracks])
        same = np.array([t.code for t in self._tracks])[:, None] == codes[None, :]
        iou = np.where(same, iou_matrix(track_boxes, boxes), -1.0)
        pairs = greedy_pairs(iou, self.options.min_iou)
        if self.options.max_distance > 0:
            rows = np.array(sorted(set(range(len(self._tracks))) - {r for r, _ in pairs}), int)
            cols = np.array(sorted(set(range(len(boxes))) - {c for _, c in pairs}), int)
            if rows.size and cols.size:
                centre_t = (track_boxes[rows, :2] + track_boxes[rows, 2:]) / 2
                centre_d = (boxes[cols, :2] + boxes[cols, 2:]) / 2
                dist = np.hypot(*(centre_t[:, None, :] - centre_d[None, :, :]).transpose(2, 0, 1))
                near = np.where(same[np.ix_(rows, cols)], -dist, -np.inf)
                far = greedy_pairs(near, -self.options.max_distance)
                pairs += [(int(rows[r]), int(cols[c])) for r, c in far]
        return pairs

    def _zones(
        self,
        seen: list[tuple[_Track, int]],
        inside: npt.NDArray[np.bool_],
        entered: list[ZoneEvent],
        left: list[ZoneEvent],
    ) -> None:
        """Debounced membership of confirmed tracks; tentative ones just remember it."""
        for z, zone in enumerate(self.zones):
            for track, det in seen:
                now = bool(inside[z, det])
                if not track.confirmed or zone.name not in track.inside:
                    track.inside[zone.name], track.streak[zone.name] = now, 0
                    continue
                if now == track.inside[zone.name]:
                    track.streak[zone.name] = 0
                    continue
                track.streak[zone.name] += 1
                need = self.options.zone_enter if now else self.options.zone_leave
                if track.streak[zone.name] >= need:
                    track.inside[zone.name], track.streak[zone.name] = now, 0
                    (entered if now else left).append(self._zone_event(track, zone.name))

    def _cross(
        self, seen: list[tuple[_Track, int]], points: npt.NDArray[np.float64]
    ) -> list[Crossing]:
        """Crossings of every seen track; a tentative track's wait in ``pending``."""
        crossed: list[Crossing] = []
        for line in self.lines:
            sides = line.sides(points)
            movers: list[tuple[_Track, int, int]] = []
            for track, det in seen:
                side, before = int(sides[det]), track.side.get(line.name, 0)
                if side == 0:
                    continue
                if before not in (0, side):
                    movers.append((track, det, before))
                else:
                    track.side[line.name], track.anchor[line.name] = side, points[det]
            if not movers:
                continue
            starts = np.stack([t.anchor[line.name] for t, _, _ in movers])
            through = line.crossed(starts, points[[det for _, det, _ in movers]])
            for (track, det, before), hit in zip(movers, through, strict=True):
                side = int(sides[det])
                track.side[line.name], track.anchor[line.name] = side, points[det]
                if hit:  # else it went round the end of the line
                    event = Crossing(
                        track.id, track.label, line.name, line.direction(before, side),
                        track.score, track.as_box(),
                    )  # fmt: skip
                    (crossed if track.confirmed else track.pending).append(event)
        return crossed

    def _confirm(self, track: _Track, entered: list[ZoneEvent], crossed: list[Crossing]) -> None:
        track.confirmed = True
        entered.extend(self._zone_event(track, z) for z, inside in track.inside.items() if inside)
        crossed.extend(track.pending)
        track.pending.clear()

    def _expire(self) -> list[ZoneEvent]:
        """Drop tracks missed too long (tentative ones at their first miss); report their exits."""
        left: list[ZoneEvent] = []
        keep: list[_Track] = []
        for track in self._tracks:
            if track.missed > (self.options.max_missed if track.confirmed else 0):
                if track.confirmed:
                    left.extend(self._zone_event(track, z) for z, i in track.inside.items() if i)
            else:
                keep.append(track)
        self._tracks = keep
        return left

    @staticmethod
    def _zone_event(track: _Track, zone: str) -> ZoneEvent:
        return ZoneEvent(track.id, track.label, zone, track.score, track.as_box())

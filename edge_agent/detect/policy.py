"""The detection decision policy: per-frame boxes in, a few events about zones and lines out.

Every frame, ``DetectionPolicy.decide(detections, now)`` filters the boxes
(labels, score, area), tracks them, counts the objects per (zone, label) with
hysteresis (``counting.CountLevel``) and returns an event only when a watched
count or presence changes, or a tracked object entered or left a zone or
crossed a line. Like the other policies it is pure (the caller passes a
monotonic ``now``) and raises ValueError for bad arguments.

The event is a ``DetectionDecision``: a ``policy.Decision`` (so a pipeline
publishes it with the usual envelope) plus a ``detection`` dict. Published
payload, with the envelope's fields from ``events.event_payload``::

    {"v": 1, "device": "cam1", "pipeline": "driveway", "seq": 42, "id": "9f0c...",
     "ts": "2026-05-02T08:50:38.123Z",
     "decision": "car:1@driveway,person:2@driveway",   # every non-zero count, or "none"
     "score": 0.874,                     # the best score of the objects below (0 if none)
     "previous": "car:1@driveway,person:1@driveway",
     "reason": "change",                 # counts changed | "track": only entered/left/crossed
     "label": "person",                  # label of the best object (null if none)
     "model": {"name": "...", "version": "...", "sha256": "..."},
     "detection": {
       "counts": {"driveway": {"car": 1, "person": 2}},      # every watched (zone, label)
       "changed": [{"zone": "driveway", "label": "person", "count": 2, "previous": 1}],
       "objects": [{"id": 7, "label": "person", "score": 0.874,
                    "box": [0.412, 0.301, 0.498, 0.87]}],      # xmin, ymin, xmax, ymax
       "entered": [{"id": 7, "label": "person", "zone": "driveway"}],
       "left": [],
       "crossed": [{"id": 3, "label": "person", "line": "gate", "direction": "in",
                    "total": 12}],                             # total: since start, that way
       "omitted": 4}}        # only when entered/left/crossed items were dropped (see below)

``decision`` leaves out ``@frame`` when no zones are configured ("person:2").
``objects`` are the objects behind the change (those now in a changed
(zone, label), and the tracks that entered, left or crossed), best first, at
most ``max_objects``. With ``min_interval``, entries and crossings are kept
(at most 50 of each; beyond, counted in ``omitted``) and sent with the next
event. ``snapshot()`` is the retained state's ``detection`` part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.detect.counting import CountLevel, check_count, check_seconds
from edge_agent.detect.tracking import Crossing, Tracker, TrackerOptions, TrackReport, ZoneEvent
from edge_agent.detect.types import Detections
from edge_agent.detect.zones import FRAME, Line, Zone, whole_frame
from edge_agent.policy import CHANGE, HEARTBEAT, Decision

TRACK = "track"
"""``reason`` of an event sent only for entries, exits or crossings (counts unchanged)."""
NONE = "none"
_MAX_PENDING = 50
_MAX_SUMMARY = 8
_DIGITS = 3  # 0.001 of a 1920-pixel frame is 2 pixels

_Key = tuple[str, str]  # (zone, label)


@dataclass(frozen=True)
class DetectionDecision(Decision):
    """A ``Decision`` with the detection details (published as ``detection``)."""

    detection: dict[str, Any]


def _score(name: str, value: float) -> float:
    if isinstance(value, bool) or not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _unique(kind: str, names: Sequence[str]) -> None:
    seen = [n for i, n in enumerate(names) if n in names[:i]]
    if seen:
        raise ValueError(f"two {kind}s are named {seen[0]!r}")


class DetectionPolicy:
    """Counts, zone entries/exits and line crossings of detected objects, as events."""

    def __init__(
        self,
        *,
        labels: Sequence[str] | None = None,
        min_score: float = 0.5,
        min_score_by_label: Mapping[str, float] | None = None,
        score_hysteresis: float = 0.0,
        min_area: float = 0.0,
        max_area: float = 1.0,
        zones: Sequence[Zone] = (),
        lines: Sequence[Line] = (),
        debounce: int = 2,
        absent_frames: int = 5,
        absent_seconds: float = 0.0,
        max_missed: int | None = None,
        min_iou: float = 0.3,
        max_distance: float = 0.1,
        count_events: bool = True,
        zone_events: bool = True,
        heartbeat: float = 0.0,
        min_interval: float = 0.0,
        max_objects: int = 10,
    ) -> None:
        if labels is not None and (isinstance(labels, str) or not labels):
            raise ValueError(f"labels must be a non-empty list of labels, got {labels!r}")
        self.labels = None if labels is None else tuple(labels)
        self._min_score = _score("min_score", min_score)
        self._by_label = {
            label: _score(f"min_score_by_label[{label!r}]", value)
            for label, value in (min_score_by_label or {}).items()
        }
        if self.labels is not None and set(self._by_label) - set(self.labels):
            unknown = sorted(set(self._by_label) - set(self.labels))
            raise ValueError(f"min_score_by_label has labels not in labels: {unknown}")
        self._margin = _score("score_hysteresis", score_hysteresis)
        self._min_area = _score("min_area", min_area)
        self._max_area = _score("max_area", max_area)
        if self._min_area > self._max_area:
            raise ValueError(f"min_area ({min_area}) must be <= max_area ({max_area})")
        self.implicit_zone = not zones
        self.zones = tuple(zones) or (whole_frame(),)
        self.lines = tuple(lines)
        _unique("zone", [z.name for z in self.zones])
        _unique("line", [line.name for line in self.lines])
        self._timing = (
            check_count("debounce", debounce),
            check_count("absent_frames", absent_frames),
            check_seconds("absent_seconds", absent_seconds),
        )
        # The tracker takes the same "must hold" counts as the counts, so an object's
        # arrival (or departure) and the count change it causes come in one event.
        missed = absent_frames - 1 if max_missed is None else max_missed
        self._tracker = Tracker(
            self.zones,
            self.lines,
            TrackerOptions(min_iou, max_distance, missed, debounce, debounce, absent_frames),
        )
        self._count_events = bool(count_events)
        # The whole frame's entries and exits would only repeat its count changes.
        self._zone_events = bool(zone_events) and not self.implicit_zone
        self._heartbeat = check_seconds("heartbeat", heartbeat)
        self._min_interval = check_seconds("min_interval", min_interval)
        self._max_objects = check_count("max_objects", max_objects)
        self._levels: dict[_Key, CountLevel] = {}
        for label in self.labels or ():
            self._watch(label)
        self._published: dict[_Key, int] = {}
        self._totals = {line.name: dict.fromkeys(line.directions, 0) for line in self.lines}
        self._pending: dict[str, list[Any]] = {"entered": [], "left": [], "crossed": []}
        self._omitted = 0
        self._state: str | None = None
        self._last: float | None = None

    @property
    def state(self) -> str | None:
        """The ``decision`` of the last event (None before the first)."""
        return self._state

    def snapshot(self) -> dict[str, Any]:
        """Current counts per zone and label, and crossing totals per line and direction:
        ``{"counts": {zone: {label: n}}, "crossings": {line: {direction: n}}}``."""
        return {
            "counts": self._nested({key: level.settled for key, level in self._levels.items()}),
            "crossings": {line: dict(totals) for line, totals in self._totals.items()},
        }

    def decide(self, detections: Detections, now: float) -> DetectionDecision | None:
        """Feed one frame; return the event to publish, or None."""
        if not isinstance(detections, Detections):
            raise ValueError(f"expected Detections, got {type(detections).__name__}")
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time in seconds, got {now!r}")
        keep, strong = self._filter(detections)
        kept = detections.select(keep)
        report = self._tracker.update(kept, strong[keep])
        for label in set(kept.labels):
            self._watch(label)
        raw = self._raw_counts(kept, report)
        for key, level in self._levels.items():
            level.update(raw.get(key, 0), now)
        self._queue(report)
        return self._gate(kept, report, now)

    # --- per frame ------------------------------------------------------------

    def _filter(self, d: Detections) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """(kept, strong): strong may start a track; the rest only continue one."""
        boxes = np.clip(d.boxes, 0.0, 1.0)
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        area = width * height
        shaped = (width > 0) & (height > 0) & (area >= self._min_area) & (area <= self._max_area)
        wanted = np.array([self.labels is None or x in self.labels for x in d.labels], bool)
        need = np.array([self._by_label.get(x, self._min_score) for x in d.labels], np.float32)
        strong = d.scores >= need
        return shaped & wanted & (d.scores >= need - self._margin), strong

    def _watch(self, label: str) -> None:
        debounce, frames, seconds = self._timing
        for zone in self.zones:
            if (zone.name, label) not in self._levels:
                self._levels[zone.name, label] = CountLevel(
                    debounce=debounce, absent_frames=frames, absent_seconds=seconds
                )

    def _raw_counts(self, kept: Detections, report: TrackReport) -> dict[_Key, int]:
        """This frame's objects per (zone, label): weak boxes no track took do not count."""
        counted = report.ids >= 0
        raw: dict[_Key, int] = {}
        for label in set(kept.labels):
            mine = counted & np.array([x == label for x in kept.labels], bool)
            for z, zone in enumerate(self.zones):
                raw[zone.name, label] = int(np.count_nonzero(mine & report.inside[z]))
        return raw

    def _queue(self, report: TrackReport) -> None:
        """Keep entries, exits and crossings until an event carries them."""
        for crossing in report.crossed:
            self._totals[crossing.line][crossing.direction] += 1
        zoned = self._zone_events
        for kind, items in (
            ("entered", report.entered if zoned else ()),
            ("left", report.left if zoned else ()),
            ("crossed", report.crossed),
        ):
            room = _MAX_PENDING - len(self._pending[kind])
            self._pending[kind].extend(items[: max(room, 0)])
            self._omitted += max(len(items) - max(room, 0), 0)

    # --- events ---------------------------------------------------------------

    def _gate(self, kept: Detections, report: TrackReport, now: float) -> DetectionDecision | None:
        since = None if self._last is None else now - self._last
        if since is not None and since < self._min_interval:
            return None
        changed = [key for key, level in self._levels.items() if self._differs(key, level)]
        tracked = any(self._pending.values())
        if self._last is None or changed:
            reason = CHANGE
        elif tracked:
            reason = TRACK
        elif self._heartbeat > 0 and since is not None and since >= self._heartbeat:
            reason = HEARTBEAT
        else:
            return None
        return self._event(reason, changed, kept, report, now)

    def _differs(self, key: _Key, level: CountLevel) -> bool:
        before = self._published.get(key, 0)
        if self._count_events:
            return level.settled != before
        return (level.settled > 0) != (before > 0)

    def _event(
        self, reason: str, changed: list[_Key], kept: Detections, report: TrackReport, now: float
    ) -> DetectionDecision:
        counts = {key: level.settled for key, level in self._levels.items()}
        objects = self._objects(changed, kept, report)
        detection: dict[str, Any] = {
            "counts": self._nested(counts),
            "changed": [
                {
                    "zone": z,
                    "label": x,
                    "count": counts[z, x],
                    "previous": self._published.get((z, x), 0),
                }
                for z, x in changed
            ],
            "objects": objects,
            "entered": [_zone_item(e) for e in self._pending["entered"]],
            "left": [_zone_item(e) for e in self._pending["left"]],
            "crossed": [self._crossing_item(c) for c in self._pending["crossed"]],
        }
        if self._omitted:
            detection["omitted"] = self._omitted
        for items in self._pending.values():
            items.clear()
        self._omitted = 0
        self._published = counts
        previous, self._state, self._last = self._state, self._summary(counts), now
        best = objects[0] if objects else None
        score = float(best["score"]) if best else 0.0
        label = str(best["label"]) if best else None
        return DetectionDecision(self._state, score, previous, reason, label, detection)

    def _objects(
        self, changed: list[_Key], kept: Detections, report: TrackReport
    ) -> list[dict[str, Any]]:
        """The objects behind the event, best score first, one per track id."""
        found: dict[int, dict[str, Any]] = {}
        zones = {zone.name: z for z, zone in enumerate(self.zones)}
        for zone, label in changed:
            row = report.inside[zones[zone]]
            for i in np.flatnonzero(row & (report.ids >= 0)):
                if kept.labels[i] == label:
                    box = tuple(float(v) for v in np.clip(kept.boxes[i], 0, 1))
                    found[int(report.ids[i])] = _object(
                        int(report.ids[i]), label, float(kept.scores[i]), box
                    )
        for event in (*self._pending["entered"], *self._pending["left"], *self._pending["crossed"]):
            found.setdefault(
                event.track_id, _object(event.track_id, event.label, event.score, event.box)
            )
        ranked = sorted(found.values(), key=lambda o: (-o["score"], o["id"]))
        return ranked[: self._max_objects]

    def _crossing_item(self, c: Crossing) -> dict[str, Any]:
        return {
            "id": c.track_id,
            "label": c.label,
            "line": c.line,
            "direction": c.direction,
            "total": self._totals[c.line][c.direction],
        }

    def _summary(self, counts: Mapping[_Key, int]) -> str:
        """'label:n@zone' for every non-zero count, sorted; '@frame' dropped when implicit."""
        parts = [
            f"{label}:{n}" if self.implicit_zone else f"{label}:{n}@{zone}"
            for (zone, label), n in sorted(counts.items())
            if n > 0
        ]
        if len(parts) > _MAX_SUMMARY:
            parts = [*parts[:_MAX_SUMMARY], f"+{len(parts) - _MAX_SUMMARY}"]
        return ",".join(parts) or NONE

    def _nested(self, counts: Mapping[_Key, int]) -> dict[str, dict[str, int]]:
        nested: dict[str, dict[str, int]] = {zone.name: {} for zone in self.zones}
        for (zone, label), n in sorted(counts.items()):
            nested[zone][label] = n
        return nested


def _object(track_id: int, label: str, score: float, box: Sequence[float]) -> dict[str, Any]:
    return {
        "id": track_id,
        "label": label,
        "score": round(score, _DIGITS),
        "box": [round(v, _DIGITS) for v in box],
    }


def _zone_item(event: ZoneEvent) -> dict[str, Any]:
    return {"id": event.track_id, "label": event.label, "zone": event.zone}


__all__ = ["FRAME", "NONE", "TRACK", "DetectionDecision", "DetectionPolicy"]

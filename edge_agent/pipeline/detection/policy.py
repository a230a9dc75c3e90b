"""The detection decision policy: per-frame boxes in, a few events about zones and lines out.

Every frame, ``DetectionPolicy.decide(detections, now)`` filters the boxes
(labels, score, area), tracks them, counts the objects per (zone, label) with
hysteresis (``counting.CountLevel``) and returns an event only when a watched
count or presence changes, or a tracked object entered or left a zone or
crossed a line. Like the other policies it is pure (the caller passes a
monotonic ``now``) and raises ValueError for bad arguments.

The event is a ``payload.DetectionDecision``; ``payload`` documents what is
published. ``snapshot()`` is the retained state's ``detection`` part. ``decode``
is how a detector should read the model's outputs for this policy (the NMS
overlap, the most boxes, and a score floor that loses no box the policy could
keep).

Pacing: a higher count must hold ``debounce`` frames, a lower one
``absent_frames`` frames and ``absent_seconds`` seconds. The tracker is paced
the same way (a new track is confirmed after ``debounce`` frames, an entry
after ``debounce`` sightings inside, an exit after ``absent_frames`` sightings
outside, a lost track ends after ``absent_frames`` missed frames unless
``max_missed`` says otherwise), so an arrival and the count change it causes
usually come in one event.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edge_agent.config.zones import Line, Zone, whole_frame
from edge_agent.errors import ConfigError
from edge_agent.model.detection.decode import DecodeOptions
from edge_agent.model.detection.types import Detections
from edge_agent.pipeline.detection.counting import CountLevel, check_count, check_seconds
from edge_agent.pipeline.detection.filters import DetectionFilter
from edge_agent.pipeline.detection.payload import (
    TRACK,
    DetectionDecision,
    Key,
    changed_item,
    crossing_item,
    nested,
    object_item,
    summary,
    zone_item,
)
from edge_agent.pipeline.detection.tracking import Tracker, TrackerOptions, TrackReport
from edge_agent.pipeline.policy import CHANGE, HEARTBEAT

_MAX_PENDING = 50


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
        iou: float = 0.45,
        max_detections: int = 100,
    ) -> None:
        self.filter = DetectionFilter(
            labels=labels,
            min_score=min_score,
            min_score_by_label=min_score_by_label,
            score_hysteresis=score_hysteresis,
            min_area=min_area,
            max_area=max_area,
        )
        self.labels = self.filter.labels
        try:
            self.decode = DecodeOptions(self.filter.floor, iou, max_detections)
        except ConfigError as exc:  # a pure part: bad arguments are ValueErrors
            raise ValueError(str(exc)) from None
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
        self._levels: dict[Key, CountLevel] = {}
        for label in self.labels or ():
            self._watch(label)
        self._published: dict[Key, int] = {}
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
            "counts": nested(
                {key: level.settled for key, level in self._levels.items()},
                [zone.name for zone in self.zones],
            ),
            "crossings": {line: dict(totals) for line, totals in self._totals.items()},
        }

    def decide(self, detections: Detections, now: float) -> DetectionDecision | None:
        """Feed one frame; return the event to publish, or None."""
        if not isinstance(detections, Detections):
            raise ValueError(f"expected Detections, got {type(detections).__name__}")
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time in seconds, got {now!r}")
        keep, strong = self.filter.apply(detections)
        kept = detections.select(keep)
        report = self._tracker.update(kept, strong[keep])
        for label in dict.fromkeys(kept.labels):  # first seen first: a stable key order
            self._watch(label)
        raw = self._raw_counts(kept, report)
        for key, level in self._levels.items():
            level.update(raw.get(key, 0), now)
        self._queue(report)
        return self._gate(kept, report, now)

    # --- per frame ------------------------------------------------------------

    def _watch(self, label: str) -> None:
        debounce, frames, seconds = self._timing
        for zone in self.zones:
            if (zone.name, label) not in self._levels:
                self._levels[zone.name, label] = CountLevel(
                    debounce=debounce, absent_frames=frames, absent_seconds=seconds
                )

    def _raw_counts(self, kept: Detections, report: TrackReport) -> dict[Key, int]:
        """This frame's objects per (zone, label): weak boxes no track took do not count."""
        counted = report.ids >= 0
        raw: dict[Key, int] = {}
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

    def _differs(self, key: Key, level: CountLevel) -> bool:
        before = self._published.get(key, 0)
        if self._count_events:
            return level.settled != before
        return (level.settled > 0) != (before > 0)

    def _event(
        self, reason: str, changed: list[Key], kept: Detections, report: TrackReport, now: float
    ) -> DetectionDecision:
        counts = {key: level.settled for key, level in self._levels.items()}
        objects = self._objects(changed, kept, report)
        zone_names = [zone.name for zone in self.zones]
        detection: dict[str, Any] = {
            "counts": nested(counts, zone_names),
            "changed": [changed_item(key, counts, self._published) for key in changed],
            "objects": objects,
            "entered": [zone_item(e) for e in self._pending["entered"]],
            "left": [zone_item(e) for e in self._pending["left"]],
            "crossed": [
                crossing_item(c, self._totals[c.line][c.direction])
                for c in self._pending["crossed"]
            ],
        }
        if self._omitted:
            detection["omitted"] = self._omitted
        for items in self._pending.values():
            items.clear()
        self._omitted = 0
        self._published = counts
        previous, self._state, self._last = self._state, summary(counts, self.implicit_zone), now
        best = objects[0] if objects else None
        score = float(best["score"]) if best else 0.0
        label = str(best["label"]) if best else None
        return DetectionDecision(self._state, score, previous, reason, label, detection)

    def _objects(
        self, changed: list[Key], kept: Detections, report: TrackReport
    ) -> list[dict[str, Any]]:
        """The objects behind the event, best score first, one per track id."""
        found: dict[int, dict[str, Any]] = {}
        zones = {zone.name: z for z, zone in enumerate(self.zones)}
        for zone, label in changed:
            row = report.inside[zones[zone]]
            for i in np.flatnonzero(row & (report.ids >= 0)):
                if kept.labels[i] == label:
                    box = tuple(float(v) for v in np.clip(kept.boxes[i], 0, 1))
                    found[int(report.ids[i])] = object_item(
                        int(report.ids[i]), label, float(kept.scores[i]), box
                    )
        for event in (*self._pending["entered"], *self._pending["left"], *self._pending["crossed"]):
            found.setdefault(
                event.track_id, object_item(event.track_id, event.label, event.score, event.box)
            )
        ranked = sorted(found.values(), key=lambda o: (-o["score"], o["id"]))
        return ranked[: self._max_objects]


__all__ = ["DetectionDecision", "DetectionPolicy"]

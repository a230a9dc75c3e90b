"""What a detection event publishes: the ``Decision`` envelope plus a small ``detection`` dict.

A ``DetectionDecision`` is a ``policy.Decision``, so a pipeline publishes it
with the usual envelope (``events.event_payload``) and adds
``"detection": decision.detection``. The full event::

    {"v": 1, "device": "cam1", "pipeline": "driveway", "seq": 42, "id": "9f0c...",
     "ts": "2026-05-02T08:50:38.123Z",
     "decision": "car:1@driveway,person:2@driveway",   # every non-zero count, or "none"
     "score": 0.874,                     # the best score of the objects below (0 if none)
     "previous": "car:1@driveway,person:1@driveway",   # the decision of the last event
     "reason": "change",                 # "change" (counts) | "track" | "heartbeat"
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
       "omitted": 4}}        # only when entered/left/crossed items were dropped

- ``reason``: ``"change"`` when a count (or, with ``count_events = false``, a
  presence) changed, and for the first event; ``"track"`` when only
  ``entered``/``left``/``crossed`` have news (then ``decision == previous``);
  ``"heartbeat"`` for a periodic repeat (empty lists).
- ``decision``: ``label:count@zone`` for every non-zero count, sorted by zone
  then label, at most 8 then ``+N``; ``@frame`` is left out when no zones are
  configured (``"person:2"``); ``"none"`` when nothing is counted.
- ``objects``: the objects behind the event (those now in a changed
  (zone, label), and the tracks that entered, left or crossed), best score
  first, at most ``max_objects``; ``id`` is the tracker's id, stable while the
  object is tracked. Scores and boxes are rounded to 3 decimals (0.001 of a
  1920-pixel frame is 2 pixels). A count that fell has no objects of its own.
- ``entered``/``left``: only for configured zones (the whole frame's would
  repeat its counts). With ``min_interval``, entries, exits and crossings wait
  for the next event (at most 50 of each; beyond, counted in ``omitted``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.mqtt.payloads import Decision
from edge_agent.pipeline.detection.tracking import Crossing, ZoneEvent

TRACK = "track"
"""``reason`` of an event sent only for entries, exits or crossings (counts unchanged)."""
NONE = "none"
"""``decision`` when nothing is counted."""
MAX_SUMMARY = 8
DIGITS = 3

Key = tuple[str, str]
"""(zone, label)."""


@dataclass(frozen=True)
class DetectionDecision(Decision):
    """A ``Decision`` with the detection details (published as ``detection``)."""

    detection: dict[str, Any]

    def extra(self) -> dict[str, Any]:
        return {"detection": self.detection}


def object_item(track_id: int, label: str, score: float, box: Sequence[float]) -> dict[str, Any]:
    return {
        "id": track_id,
        "label": label,
        "score": round(score, DIGITS),
        "box": [round(float(v), DIGITS) for v in box],
    }


def zone_item(event: ZoneEvent) -> dict[str, Any]:
    return {"id": event.track_id, "label": event.label, "zone": event.zone}


def crossing_item(crossing: Crossing, total: int) -> dict[str, Any]:
    return {
        "id": crossing.track_id,
        "label": crossing.label,
        "line": crossing.line,
        "direction": crossing.direction,
        "total": total,
    }


def changed_item(key: Key, counts: Mapping[Key, int], before: Mapping[Key, int]) -> dict[str, Any]:
    zone, label = key
    return {"zone": zone, "label": label, "count": counts[key], "previous": before.get(key, 0)}


def summary(counts: Mapping[Key, int], implicit_zone: bool) -> str:
    """The ``decision`` string (see the module's docstring)."""
    parts = [
        f"{label}:{n}" if implicit_zone else f"{label}:{n}@{zone}"
        for (zone, label), n in sorted(counts.items())
        if n > 0
    ]
    if len(parts) > MAX_SUMMARY:
        parts = [*parts[:MAX_SUMMARY], f"+{len(parts) - MAX_SUMMARY}"]
    return ",".join(parts) or NONE


def nested(counts: Mapping[Key, int], zones: Iterable[str]) -> dict[str, dict[str, int]]:
    """``{zone: {label: count}}``, every zone present, labels sorted."""
    out: dict[str, dict[str, int]] = {zone: {} for zone in zones}
    for (zone, label), n in sorted(counts.items()):
        out[zone][label] = n
    return out

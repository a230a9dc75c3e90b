"""Which devices a manifest's model is for: percent buckets, operator tags, pinned
and excluded device ids. Pure: values in, a verdict out.

A model entry may carry `targets` (signed with the rest of the manifest):

    "targets": {"tags": {"site": ["lab", "depot"], "hw": ["pi4"]},
                "devices": ["gate-2"], "exclude": ["gate-7"]}

`selected` decides, in this order:

1. a device id in `exclude` never takes the model;
2. a device id in `devices` always does (pinned: no tag or percent rule applies);
3. otherwise every tag key listed must match (the device's value for that key is
   one of the listed values; a device without the key does not match) AND the
   device's rollout bucket is below the manifest's `rollout.percent`.

With no `targets`, only the percent rule applies, as before. `devices` alone
does not restrict the entry to those devices: pinned ids are added to whatever
the percent and tags select (use `"rollout": {"percent": 0, ...}` to roll out to
the pinned devices only).

The bucket is the one `manifest.in_rollout` has always computed: the first 8
bytes of sha256(f"{salt}:{device_id}"), modulo 10000, in hundredths of a percent.
A device publishes its bucket (for the trusted manifest's salt) on its `info` topic.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from edge_agent.errors import ManifestError

MAX_TAG_KEYS = 16
MAX_LIST = 10_000  # ids or values in one list; the manifest is capped at 1 MB anyway
_TAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DEVICE_ID = re.compile(r"[^/#+\s]{1,256}")  # as Settings.device_id, bounded
_MAX_VALUE = 256


@dataclass(frozen=True)
class Targets:
    tags: Mapping[str, frozenset[str]]  # key -> accepted values
    devices: frozenset[str]  # pinned in
    exclude: frozenset[str]


def rollout_bucket(salt: str, device_id: str) -> float:
    """The device's fixed place (0.00 to 99.99) in a rollout with this salt."""
    digest = hashlib.sha256(f"{salt}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10000 / 100


def selected(
    targets: Targets | None,
    device_id: str,
    tags: Mapping[str, str],
    bucket: float | None,
    percent: float | None,
) -> bool:
    """Whether this device takes the entry. `bucket` and `percent` are None when
    the manifest has no rollout (every device is then in)."""
    if targets is not None:
        if device_id in targets.exclude:
            return False
        if device_id in targets.devices:
            return True
        for key, accepted in targets.tags.items():
            if tags.get(key) not in accepted:
                return False
    return percent is None or bucket is None or bucket < percent


def parse_targets(value: object, where: str) -> Targets | None:
    """Strictly parse a model entry's `targets` (None or absent: no restriction);
    ManifestError naming the field, as manifest.py's own parsers do."""
    if value is None:
        return None
    obj = _object(value, where)
    for key in obj:
        if key not in ("tags", "devices", "exclude"):
            raise ManifestError(f"{where}.{key}: unknown field")
    targets = Targets(
        tags=_tags(obj.get("tags"), f"{where}.tags"),
        devices=_ids(obj.get("devices"), f"{where}.devices"),
        exclude=_ids(obj.get("exclude"), f"{where}.exclude"),
    )
    both = sorted(targets.devices & targets.exclude)
    if both:
        raise ManifestError(f"{where}: {both[0]!r} is both pinned (devices) and excluded")
    return targets


def _object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: expected an object")
    return value


def _strings(value: object, where: str, pattern: re.Pattern[str] | None) -> frozenset[str]:
    if not isinstance(value, list):
        raise ManifestError(f"{where}: expected a list of strings")
    if not 0 < len(value) <= MAX_LIST:
        raise ManifestError(f"{where}: must list 1 to {MAX_LIST} strings")
    for index, item in enumerate(value):
        ok = isinstance(item, str) and 0 < len(item) <= _MAX_VALUE
        if not ok or (pattern is not None and not pattern.fullmatch(str(item))):
            raise ManifestError(f"{where}[{index}]: {item!r} is not a valid value here")
    return frozenset(value)


def _ids(value: object, where: str) -> frozenset[str]:
    return frozenset() if value is None else _strings(value, where, _DEVICE_ID)


def _tags(value: object, where: str) -> Mapping[str, frozenset[str]]:
    if value is None:
        return {}
    obj = _object(value, where)
    if len(obj) > MAX_TAG_KEYS:
        raise ManifestError(f"{where}: at most {MAX_TAG_KEYS} tag keys")
    result: dict[str, frozenset[str]] = {}
    for key, values in obj.items():
        if not _TAG_KEY.fullmatch(key):
            raise ManifestError(f"{where}: {key!r} is not a valid tag name")
        result[key] = _strings(values, f"{where}.{key}", None)
    return result

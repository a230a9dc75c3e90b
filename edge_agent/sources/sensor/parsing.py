"""One sensor sample from one text line: CSV (`1.0,2.5,3`) or JSON.

Pure functions, no I/O. The block parser (`csvblock.parse_csv_block`) parses many
lines at once and falls back on `parse_line` for every line it is not sure of, so
both ways give the same samples and the same errors.
"""

from __future__ import annotations

import json

import numpy as np

from edge_agent.errors import InputError
from edge_agent.sources.sensor.window import Vector

BOM = "\ufeff"  # the UTF-8 byte order mark, decoded
_SHOWN = 40  # characters of a bad value or line quoted back in an error message


def parse_line(line: str, channels: int, fields: list[str] | None = None) -> Vector:
    """One sample, float32 [channels], from a CSV line (`1.0,2.5,3`) or a JSON line.

    A JSON object needs `fields` (dotted keys such as `accel.x` reach into nested
    objects); a JSON array is taken in order. Devices send garbage after resets and
    at wrong baud rates, so every way a line can be unusable is an `InputError`
    whose message says which.
    """
    text = line.strip()
    if text.startswith(BOM):  # a file saved by Excel or Notepad: not part of the data
        text = text[1:].strip()
    if not text:
        raise InputError("empty line")
    values = _json_values(text, fields) if text[0] in "{[" else _csv_values(text)
    return _to_sample(values, channels)


def _csv_values(text: str) -> list[float]:
    values = []
    for column, cell in enumerate(text.split(","), start=1):
        value = cell.strip()
        if not value:
            raise InputError(f"empty value in column {column}")
        try:
            values.append(float(value))
        except ValueError:
            raise InputError(f"not a number in column {column}: {value[:_SHOWN]!r}") from None
    return values


def _json_values(text: str, fields: list[str] | None) -> list[float]:
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"bad JSON: {exc}") from None
    if isinstance(document, list):
        return [_json_number(value, f"item {index}") for index, value in enumerate(document)]
    if not isinstance(document, dict):
        raise InputError(f"JSON line is a {type(document).__name__}, not an object or array")
    if not fields:
        raise InputError("JSON object line but no fields configured to pick values from it")
    return [_json_number(_lookup(document, key), f"field {key!r}") for key in fields]


def _lookup(document: dict[str, object], key: str) -> object:
    """A literal key wins over a dotted path, so `{"accel.x": 1}` works as well as nesting."""
    if key in document:
        return document[key]
    node: object = document
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise InputError(f"missing field {key!r}")
        node = node[part]
    return node


def _json_number(value: object, where: str) -> float:
    """Numbers, and booleans as 0/1 (door contacts, occupancy); nothing else."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if value is None:
        raise InputError(f"{where} is null")
    shown = json.dumps(value)[:_SHOWN]
    raise InputError(f"{where} is not a number: {shown}")


def _to_sample(values: list[float], channels: int) -> Vector:
    if len(values) != channels:
        which = "short" if len(values) < channels else "long"
        raise InputError(f"{which} line: {len(values)} values, expected {channels}")
    with np.errstate(over="ignore"):  # out of float32 range becomes inf, rejected below
        sample = np.array(values, dtype=np.float32)
    if not np.isfinite(sample).all():
        column = int(np.flatnonzero(~np.isfinite(sample))[0]) + 1
        raise InputError(f"value {column} is not finite in float32: {values[column - 1]}")
    return sample

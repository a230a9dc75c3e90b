"""Sensor samples in, model-sized windows out: line parsing and a sliding window.

Pure functions and a small stateful window, no I/O and no threads, so the
maths can be tested exactly and reused by every sensor source.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge_agent.errors import InputError

Vector = npt.NDArray[np.float32]

_SHOWN = 40  # characters of a bad value or line quoted back in an error message


def parse_line(line: str, channels: int, fields: list[str] | None = None) -> Vector:
    """One sample, float32 [channels], from a CSV line (`1.0,2.5,3`) or a JSON line.

    A JSON object needs `fields` (dotted keys such as `accel.x` reach into nested
    objects); a JSON array is taken in order. Devices send garbage after resets and
    at wrong baud rates, so every way a line can be unusable is an `InputError`
    whose message says which.
    """
    text = line.strip()
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


class SlidingWindow:
    """Normalised windows of `size` samples, one every `hop` samples; `push` is its verb.

    Samples are normalised once, on the way into a preallocated ring, so a push
    costs O(channels) and allocates nothing; only an emitted window is a new
    array (the pipeline may hold on to it). Not thread-safe: one source thread
    pushes.
    """

    def __init__(
        self,
        size: int,
        hop: int,
        channels: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        _check_count("size", size)
        _check_count("hop", hop)
        _check_count("channels", channels)
        self.size = size
        self.hop = hop
        self.channels = channels
        self._mean = _per_channel("mean", mean, channels, default=0.0)
        self._std = _per_channel("std", std, channels, default=1.0)
        if not (self._std > 0).all():
            raise ValueError(f"std: every value must be > 0, got {list(std or [])}")
        self._ring = np.zeros((size, channels), dtype=np.float32)
        self._next = 0  # ring row the next sample goes to; also the oldest row once full
        self._due = size  # pushes until the next window is emitted

    def push(self, sample: np.ndarray) -> Vector | None:
        """Add one sample [channels]; a fresh float32 [size, channels] window when one is due."""
        if sample.shape != (self.channels,):
            raise ValueError(f"sample: shape {sample.shape}, expected ({self.channels},)")
        row = self._ring[self._next]
        np.subtract(sample, self._mean, out=row)
        np.divide(row, self._std, out=row)
        self._next = (self._next + 1) % self.size
        self._due -= 1
        if self._due:
            return None
        self._due = self.hop
        return np.concatenate((self._ring[self._next :], self._ring[: self._next]))


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")


def _per_channel(
    name: str, values: Sequence[float] | None, channels: int, *, default: float
) -> Vector:
    if values is None:
        return np.full(channels, default, dtype=np.float32)
    if len(values) != channels:
        raise ValueError(f"{name}: {len(values)} values for {channels} channels")
    if not all(math.isfinite(value) for value in values):
        raise ValueError(f"{name}: every value must be finite, got {list(values)}")
    return np.array(values, dtype=np.float32)

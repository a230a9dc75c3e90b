"""Sensor samples in, model-sized windows out: the sliding window.

Pure and single-threaded, so the maths can be tested exactly and reused by every
sensor source. Samples arrive one at a time from a paced or live input (`push`)
or by the thousand from a replayed file (`push_many`); both give the same windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


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

    def push_many(self, samples: np.ndarray) -> list[Vector]:
        """Add samples [n, channels] at once: the windows n `push` calls would emit,
        in order, each a fresh float32 [size, channels] array, at the cost of a few
        array operations instead of n."""
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            raise ValueError(f"samples: shape {samples.shape}, expected (n, {self.channels})")
        count = len(samples)
        # The ring's samples oldest first, then the new ones normalised as `push`
        # does it (the same float32 operations, so the same values).
        series = np.empty((self.size + count, self.channels), dtype=np.float32)
        older = self.size - self._next
        series[:older] = self._ring[self._next :]
        series[older : self.size] = self._ring[: self._next]
        fresh = series[self.size :]
        np.subtract(samples, self._mean, out=fresh)
        np.divide(fresh, self._std, out=fresh)
        # After t new samples the window is series[t : t + size]; one is due after
        # `_due` of them, then every `hop`.
        due = range(self._due, count + 1, self.hop)
        windows = [series[t : t + self.size].copy() for t in due]
        self._due = due[-1] + self.hop - count if due else self._due - count
        self._ring[:] = series[count:]
        self._next = 0
        return windows


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

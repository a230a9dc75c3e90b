"""Decision policies: turn a stream of model scores into the few events worth publishing.

The agent publishes decisions, not inferences: a camera at 15 fps must not send
15 messages a second saying "ball". A policy smooths the scores over the last
few results, applies hysteresis (enter at one threshold, leave at a lower one)
and debounce (a new state must persist for N results) so that a noisy score near
a threshold does not flap, then gates what is left so that only changes (plus
optional heartbeats) go out, never closer together than ``min_interval``.

Everything here is pure: no I/O, no threads, no clock reads (the caller passes a
monotonic time in), so a whole scene can be replayed frame by frame in a test.
The shared machinery (smoothing ring, debouncer, event gate and the ``decide``
pipeline) lives in ``_BasePolicy``; the two policies only say how smoothed
scores become a candidate state.

Bad arguments and bad score vectors raise ``ValueError`` (like the other pure
modules); the caller translates them at its boundary (a bad score vector is
counted as a bad inference).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edge_agent.mqtt.payloads import Decision

_Vector = npt.NDArray[np.float64]
_Indexes = npt.NDArray[np.intp]

CHANGE = "change"
HEARTBEAT = "heartbeat"


class Policy(Protocol):
    """What the agent needs from a policy: feed it every result, publish what it returns."""

    def decide(self, scores: Any, now: float) -> Decision | None:
        """The event to publish for this result at monotonic time ``now``, or None.
        ``scores`` is what the pipeline reads from its model: a score vector here,
        ``Detections`` for the detection policy, a ``Heard`` for audio ones."""
        ...

    @property
    def state(self) -> str | None:
        """The last published state (None before the first decision)."""
        ...


# --- argument validation ---------------------------------------------------


def _count(name: str, value: int) -> int:
    """An integer >= 1 (a window or a number of results)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _seconds(name: str, value: float) -> float:
    """A finite duration >= 0 (0 disables the feature)."""
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _finite(name: str, value: float) -> float:
    """A finite number: a NaN threshold would silently make every comparison false."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _off_threshold(off: float | None, on: float, on_name: str) -> float:
    """The leave threshold: defaults to the enter one (no hysteresis), never above it."""
    if off is None:
        return on
    off = _finite("off_threshold", off)
    if off > on:
        raise ValueError(f"off_threshold must be <= {on_name} ({on}), got {off}")
    return off


def _state_name(name: str, value: str) -> str:
    """A non-empty state name: an empty one would be published as a blank payload."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _finite_vector(scores: npt.ArrayLike) -> _Vector:
    """The flattened scores as float64; NaN/inf rejected before they poison the smoothing."""
    flat = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.logical_and.reduce(np.isfinite(flat)):  # ndarray.all(): +2 us of Python
        raise ValueError("scores contain NaN or infinity")
    return flat


# --- shared machinery ------------------------------------------------------


class _Ring:
    """The last ``size`` score vectors, preallocated: smoothing allocates nothing per frame."""

    def __init__(self, size: int, width: int) -> None:
        self._rows: _Vector = np.zeros((size, width), dtype=np.float64)
        self._next = 0
        self._count = 0

    def push(self, values: _Vector) -> _Vector:
        """Store ``values`` and return the mean of the stored vectors (fewer at the start)."""
        size = self._rows.shape[0]
        if size == 1:  # no smoothing: the mean of one vector is that vector
            return values
        self._rows[self._next] = values
        self._next = (self._next + 1) % size
        self._count = min(self._count + 1, size)
        # What ndarray.mean computes, without its Python-level wrapper (~5 us a call).
        total: _Vector = np.add.reduce(self._rows[: self._count], axis=0)
        return total / self._count


class _Debouncer:
    """A candidate becomes the state only after ``need`` consecutive results agree."""

    def __init__(self, need: int) -> None:
        self._need = need
        self.state: str | None = None
        self._pending: str | None = None
        self._streak = 0

    def update(self, candidate: str) -> str | None:
        """Count ``candidate``; return the (possibly unchanged) debounced state."""
        if candidate == self.state:
            self._pending, self._streak = None, 0
            return self.state
        if candidate == self._pending:
            self._streak += 1
        else:
            self._pending, self._streak = candidate, 1
        if self._streak >= self._need:
            self.state, self._pending, self._streak = candidate, None, 0
        return self.state


class _Gate:
    """Change-only publishing with heartbeat and a minimum interval between events.

    Only the last published state is remembered, so a change made during the
    interval is published at the first call after it, and a change that reverted
    during the interval is never published.
    """

    def __init__(self, heartbeat: float, min_interval: float) -> None:
        self._heartbeat = heartbeat
        self._min_interval = min_interval
        self.published: str | None = None
        self._last: float | None = None

    def check(self, state: str, now: float) -> tuple[str | None, str] | None:
        """``(previous, reason)`` of the event to publish now for ``state``, or None."""
        since = None if self._last is None else now - self._last
        if since is not None and since < self._min_interval:
            return None
        previous = self.published
        if state != previous:
            reason = CHANGE
        elif self._heartbeat > 0 and since is not None and since >= self._heartbeat:
            reason = HEARTBEAT
        else:
            return None
        self.published, self._last = state, now
        return previous, reason


class _BasePolicy(ABC):
    """The decide() pipeline shared by every policy: validate, smooth, debounce, gate."""

    def __init__(
        self, *, width: int, smoothing: int, debounce: int, heartbeat: float, min_interval: float
    ) -> None:
        self._ring = _Ring(_count("smoothing", smoothing), width)
        self._debouncer = _Debouncer(_count("debounce", debounce))
        self._gate = _Gate(_seconds("heartbeat", heartbeat), _seconds("min_interval", min_interval))

    @property
    def state(self) -> str | None:
        """The last published state (None before the first decision)."""
        return self._gate.published

    def decide(self, scores: npt.ArrayLike, now: float) -> Decision | None:
        """Feed one result; return the event to publish, or None.

        Every call updates smoothing and debounce, even when the gate holds the
        event back. A ValueError (bad vector, NaN) leaves the policy untouched.
        """
        if not math.isfinite(now):
            raise ValueError(f"now must be a finite time in seconds, got {now!r}")
        values = self._select(_finite_vector(scores))
        smoothed = self._ring.push(values)
        candidate = self._candidate(smoothed, self._debouncer.state)
        settled = self._debouncer.update(candidate)
        if settled is None:
            return None
        event = self._gate.check(settled, now)
        if event is None:
            return None
        previous, reason = event
        score, label = self._support(settled, smoothed)
        return Decision(settled, score, previous, reason, label)

    @abstractmethod
    def _select(self, flat: _Vector) -> _Vector:
        """The part of the flattened output this policy smooths; ValueError if it does not fit."""

    @abstractmethod
    def _candidate(self, smoothed: _Vector, current: str | None) -> str:
        """The state the smoothed scores point to, given the current debounced state."""

    @abstractmethod
    def _support(self, state: str, smoothed: _Vector) -> tuple[float, str | None]:
        """``(score, label)`` published with ``state``."""


# --- the policies ----------------------------------------------------------


class ClassificationPolicy(_BasePolicy):
    """Top-1 of a classifier's smoothed scores, mapped to states, with hysteresis.

    A state's score is the sum of the smoothed scores of every label that maps
    to it (labels outside ``states`` map to ``default_state``). Entering a state
    needs the top-1 label's score >= ``threshold``; once in a non-default state,
    the policy stays there while that state's score is >= ``off_threshold``,
    even if another label is top-1.
    """

    def __init__(
        self,
        labels: Sequence[str],
        *,
        threshold: float = 0.5,
        states: Mapping[str, str] | None = None,
        default_state: str = "none",
        smoothing: int = 1,
        off_threshold: float | None = None,
        debounce: int = 1,
        heartbeat: float = 0,
        min_interval: float = 0,
    ) -> None:
        if isinstance(labels, str) or len(labels) == 0:
            raise ValueError(f"labels must be a non-empty sequence of labels, got {labels!r}")
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        off = _off_threshold(off_threshold, float(threshold), "threshold")
        if off < 0:
            raise ValueError(f"off_threshold must be in [0, threshold], got {off}")
        self._labels = tuple(labels)
        self._threshold = float(threshold)
        self._off = off
        self._default = _state_name("default_state", default_state)
        self._state_of = _map_labels(self._labels, states, self._default)
        self._members = _members(self._state_of, self._default)
        super().__init__(
            width=len(self._labels),
            smoothing=smoothing,
            debounce=debounce,
            heartbeat=heartbeat,
            min_interval=min_interval,
        )

    def _select(self, flat: _Vector) -> _Vector:
        """All scores, one per label."""
        if flat.size != len(self._labels):
            raise ValueError(
                f"expected {len(self._labels)} scores (one per label), got {flat.size}"
            )
        return flat

    def _candidate(self, smoothed: _Vector, current: str | None) -> str:
        """Hysteresis first (stay while above off_threshold), then top-1 >= threshold."""
        if (
            current is not None
            and current != self._default
            and self._state_score(current, smoothed) >= self._off
        ):
            return current
        top = int(np.argmax(smoothed))
        if smoothed[top] >= self._threshold:
            return self._state_of[top]
        return self._default

    def _support(self, state: str, smoothed: _Vector) -> tuple[float, str | None]:
        """The state's summed score and the top-1 label."""
        return self._state_score(state, smoothed), self._labels[int(np.argmax(smoothed))]

    def _state_score(self, state: str, smoothed: _Vector) -> float:
        """Sum of the scores of the labels mapping to ``state`` (0.0 when none do)."""
        return float(smoothed[self._members[state]].sum())


def _map_labels(
    labels: tuple[str, ...], states: Mapping[str, str] | None, default: str
) -> tuple[str, ...]:
    """The state of each label index; duplicate labels (ImageNet has some) share a state."""
    if states is None:
        return labels
    unknown = sorted(set(states) - set(labels))
    if unknown:
        raise ValueError(f"states has keys that are not labels: {unknown}")
    for label, state in states.items():
        _state_name(f"states[{label!r}]", state)
    return tuple(states.get(label, default) for label in labels)


def _members(state_of: tuple[str, ...], default: str) -> dict[str, _Indexes]:
    """For each reachable state (the default always is), the label indexes that sum into it."""
    members: dict[str, _Indexes] = {}
    for state in {*state_of, default}:
        indexes = [i for i, mapped in enumerate(state_of) if mapped == state]
        members[state] = np.asarray(indexes, dtype=np.intp)
    return members


class ThresholdPolicy(_BasePolicy):
    """One value of the output (a regression or one class's score) mapped to on/off.

    On when the smoothed value is >= ``on_threshold``; once on, stays on while it
    is >= ``off_threshold``. Thresholds are not limited to [0, 1].
    """

    def __init__(
        self,
        *,
        index: int = 0,
        on_threshold: float = 0.5,
        off_threshold: float | None = None,
        on_state: str = "on",
        off_state: str = "off",
        smoothing: int = 1,
        debounce: int = 1,
        heartbeat: float = 0,
        min_interval: float = 0,
    ) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"index must be an integer >= 0, got {index!r}")
        self._index = index
        self._on = _finite("on_threshold", on_threshold)
        self._off = _off_threshold(off_threshold, self._on, "on_threshold")
        self._on_state = _state_name("on_state", on_state)
        self._off_state = _state_name("off_state", off_state)
        if on_state == off_state:
            raise ValueError(f"off_state must differ from on_state, both are {on_state!r}")
        super().__init__(
            width=1,
            smoothing=smoothing,
            debounce=debounce,
            heartbeat=heartbeat,
            min_interval=min_interval,
        )

    def _select(self, flat: _Vector) -> _Vector:
        """The one value at ``index`` of the flattened output."""
        if self._index >= flat.size:
            raise ValueError(f"index {self._index} is out of range for {flat.size} outputs")
        return flat[self._index : self._index + 1]

    def _candidate(self, smoothed: _Vector, current: str | None) -> str:
        """Stay on while >= off_threshold; otherwise on only at >= on_threshold."""
        value = float(smoothed[0])
        if current == self._on_state and value >= self._off:
            return self._on_state
        return self._on_state if value >= self._on else self._off_state

    def _support(self, state: str, smoothed: _Vector) -> tuple[float, str | None]:
        """The smoothed value; no label."""
        return float(smoothed[0]), None

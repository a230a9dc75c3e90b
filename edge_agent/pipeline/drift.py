"""Drift and confidence monitoring: notice when a model starts seeing a world it was not made for.

An int8 model in the field rarely fails loudly: a camera gets dirty or re-aimed,
a sensor is remounted, the lighting changes with the season, and the model keeps
answering, confidently and wrongly. A ``DriftMonitor`` per pipeline learns what
"normal" looks like from the first ``reference_size`` observations after a model
is installed and then compares a rolling window of the last ``window``
observations with it every ``check_every`` observations.

What is compared:

- input features, from ``input_features``: per channel, the mean (brightness)
  and the std (contrast) of an image's pixels, or the mean and the std (spread)
  over a sensor window. Features are named ``mean[c]`` and ``std[c]``;
- the output, when the model has class scores: the top-1 class frequencies
  (the reference's ``bins - 1`` most frequent classes keep their own bin, all
  other classes share one, so a 1000-class model is not drowned in sampling
  noise from rare classes, and a class never seen in the reference still shows)
  and the mean top-1 confidence. ``scores`` are None for regression models: then
  only the input features are monitored.

The measure is the Population Stability Index of each feature's histogram and
of the class-frequency histogram, reference proportions ``q`` against current
proportions ``p`` over the same bins::

    PSI = sum_i (p_i - q_i) * ln(p_i / q_i),   p_i = (count_i / n + eps) / (1 + k * eps)

with ``k`` bins and ``eps = 1e-4`` so that an empty bin does not give log(0): a
bin holding a share ``s`` on one side only then adds about ``s * ln(s / eps)``,
and two disjoint distributions score at most ``2 * ln(1 / eps) ~ 18``. A feature's
bins are cut at the reference's own quantiles (deciles by default), fixed once
the reference is complete; the outer bins are open. A value equal to a cut gets
a bin of its own, so a feature with point masses (a constant channel, a black
frame) still compares the mass on each side. Drift is also declared when the
mean top-1 confidence drops by ``confidence_drop`` or more below the reference's.

Defaults and why:

- ``threshold=0.25``, ``clear_threshold=0.1``: the usual PSI cut-offs, below 0.1
  no significant change, 0.1 to 0.25 moderate, above 0.25 significant. Drift is
  entered at 0.25 and left only below 0.1 (and with the confidence drop back
  under half of ``confidence_drop``), so a score hovering in between never flaps.
- ``bins=10`` deciles and ``reference_size=window=500``: about 50 observations a
  bin. Two samples of one distribution still differ: one feature's PSI is then
  about ``(k - 1) * (1 / reference_size + 1 / window) = 0.036``, and the largest
  of 6 features and the output typically 0.05 to 0.1 (at most 0.12 in 400
  simulated checks): far below 0.25, though a clear may wait a check or two.
- ``check_every=50``: a tenth of the window is new at each check.
- ``confidence_drop=0.2``: 20 points of mean top-1 probability, far beyond the
  noise of a 500-observation mean, yet typical of a model out of its domain.

Feed it observations that are not near-copies of each other: consecutive frames
of a 15 fps camera are, so 500 of them cover half a minute and the reference
would miss the ordinary variation of a day; one frame a second is a better rate.
The reference is whatever the first observations were: a model installed into an
already odd scene learns that scene as normal.

An alert (one ``Alert`` when drift starts, one when it ends; telemetry reads
``status``) has these fields:

- ``state``: ``"drift"`` or ``"clear"``.
- ``measure``: ``"psi"``, or ``"confidence"`` for a drift alert raised by the
  confidence drop alone.
- ``score``: the value of ``measure``: the largest PSI across features and the
  output, or the confidence drop (reference minus current mean top-1).
- ``worst``: what drove it: a feature name (``mean[0]``, ``std[2]``),
  ``"output"`` (class frequencies) or ``"confidence"``.
- ``details``: every feature's PSI by name, ``output`` (class-frequency PSI), and
  ``confidence_reference`` / ``confidence_current`` (mean top-1 then and now);
  the output entries only when the model has class scores.

``status`` (for telemetry) is ``state`` (``"learning"`` until the reference is
complete, then ``"ok"`` or ``"drift"``), ``score`` and ``worst`` (the largest PSI
of the last check and what it was measured on; null before the first check),
``confidence_drop`` (reference minus current mean top-1 at the last check; null
without class scores or before the first check), ``reference`` (observations
learned, up to ``reference_size``) and ``checked`` (checks since the reference).

Everything here is pure: no I/O, no threads, no clock reads; checks are counted
in observations, so the caller stamps alerts with its own time. Bad arguments
raise ``ValueError`` naming the argument; an observation that raises leaves the
monitor untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

_Vector = npt.NDArray[np.float64]
_Indexes = npt.NDArray[np.intp]

EPSILON = 1e-4
OUTPUT = "output"
CONFIDENCE = "confidence"
CONFIDENCE_REFERENCE = "confidence_reference"
CONFIDENCE_CURRENT = "confidence_current"
_RESERVED = frozenset({OUTPUT, CONFIDENCE, CONFIDENCE_REFERENCE, CONFIDENCE_CURRENT})


@dataclass(frozen=True)
class Alert:
    """Drift started or ended; the same fields for every pipeline."""

    state: Literal["drift", "clear"]
    measure: str
    """``"psi"``, or ``"confidence"`` when only the confidence drop raised the drift."""
    score: float
    """The value of ``measure``: the largest PSI, or the drop in mean top-1 confidence."""
    worst: str
    """The feature name, ``"output"`` or ``"confidence"`` that drove ``score``."""
    details: dict[str, float]
    """Each feature's PSI, ``output`` PSI, ``confidence_reference`` / ``confidence_current``."""


# --- features and PSI --------------------------------------------------------


def input_features(tensor: np.ndarray, kind: Literal["image", "sensor"]) -> _Vector:
    """Per-channel means then per-channel stds, float64 [2 * channels].

    ``image``: a [1, H, W, C] or [1, H, W] tensor of any dtype (uint8, int8,
    float), every pixel used; ``sensor``: a [N, channels] (or [1, N, channels])
    window, statistics over the N samples.
    """
    shape = tensor.shape
    if kind == "image":
        if tensor.ndim not in (3, 4) or shape[0] != 1:
            raise ValueError(f"tensor must be an image [1, H, W, C] or [1, H, W], got {shape}")
        channels = shape[3] if tensor.ndim == 4 else 1
    elif kind == "sensor":
        if not (tensor.ndim == 2 or (tensor.ndim == 3 and shape[0] == 1)):
            raise ValueError(f"tensor must be a sensor window [N, channels], got {shape}")
        channels = shape[-1]
    else:
        raise ValueError(f"kind must be 'image' or 'sensor', got {kind!r}")
    if tensor.size == 0:
        raise ValueError(f"tensor is empty: {shape}")
    return _moments(tensor.reshape(-1, channels))


_MOMENT_ROWS = 8192  # rows cast to float64 at a time: 192 KB for RGB, not the whole frame


def _moments(values: np.ndarray) -> _Vector:
    """Column means and stds in one pass, over float64 copies of a few rows at a time.

    Float64 rather than float32: a one-pass float32 variance loses the contrast
    of a dim, flat frame entirely, and the two-pass float32 version is slower
    (the per-channel broadcast), so this is both the cheap and the exact choice.
    Sums rather than means: for integer pixels (uint8, int8) every sum is an
    exact integer. In slices: a float64 copy of a whole 224x224 RGB frame is
    1.2 MB, which stayed in the agent's peak resident memory; seven slices of
    it cost no more time (each is one matrix-vector product).
    """
    rows, channels = values.shape
    ones = np.ones(min(rows, _MOMENT_ROWS))
    sums = np.zeros(channels)
    squares = np.zeros(channels)
    for start in range(0, rows, _MOMENT_ROWS):
        x = values[start : start + _MOMENT_ROWS].astype(np.float64)  # squared in place below
        weights = ones[: x.shape[0]]
        sums += weights @ x
        squares += weights @ np.square(x, out=x)
    mean: _Vector = sums / rows
    square: _Vector = squares / rows
    var = square - mean * mean
    var[var <= square * 1e-12] = 0.0  # rounding noise of a constant channel, not contrast
    return np.concatenate([mean, np.sqrt(var)])


def feature_names(channels: int) -> tuple[str, ...]:
    """The names of ``input_features``' values for ``channels`` channels."""
    _count("channels", channels)
    return tuple(f"{stat}[{c}]" for stat in ("mean", "std") for c in range(channels))


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, *, epsilon: float = EPSILON) -> float:
    """The PSI of two histograms over the same bins (counts or proportions)."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    q = _proportions("reference", reference, epsilon)
    p = _proportions("current", current, epsilon)
    if p.shape != q.shape:
        raise ValueError(f"current has {p.size} bins, reference has {q.size}")
    return float(np.sum((p - q) * np.log(p / q)))


def _proportions(name: str, counts: npt.ArrayLike, epsilon: float) -> _Vector:
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    if not (c.size and np.all(np.isfinite(c)) and np.all(c >= 0) and c.sum() > 0):
        raise ValueError(f"{name} must be counts >= 0 with a positive total, got {c}")
    smoothed: _Vector = (c / c.sum() + epsilon) / (1.0 + epsilon * c.size)
    return smoothed


def _cut_points(values: _Vector, quantiles: _Vector) -> _Vector:
    """``np.unique(np.quantile(values, quantiles))`` for finite values, the same
    numbers (numpy's default linear method, its interpolation formula included)
    without numpy's own calls: ``np.quantile`` and ``np.unique`` import ``numpy.ma``,
    1.2 MB of resident memory the agent would carry from then on for nothing."""
    ordered = np.sort(values)
    last = ordered.size - 1
    virtual = last * quantiles
    below = np.floor(virtual)
    gamma = virtual - below
    lower = np.minimum(below, last).astype(np.intp)
    upper = np.minimum(below + 1, last).astype(np.intp)
    a, b = ordered[lower], ordered[upper]
    step = b - a
    cut: _Vector = a + step * gamma
    np.subtract(b, step * (1 - gamma), out=cut, where=gamma >= 0.5)  # numpy's _lerp
    cut.sort()
    keep = np.ones(cut.size, dtype=bool)
    keep[1:] = cut[1:] != cut[:-1]
    return cut[keep]


def _histogram(edges: _Vector, values: _Vector) -> _Indexes:
    """Counts over 2 * len(edges) + 1 bins: between cuts (even), equal to a cut (odd)."""
    index = np.searchsorted(edges, values, "left") + np.searchsorted(edges, values, "right")
    counts: _Indexes = np.bincount(index, minlength=2 * edges.size + 1)
    return counts


# --- the monitor -------------------------------------------------------------


def _count(name: str, value: int, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return value


def _finite_vector(name: str, values: npt.ArrayLike) -> _Vector:
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size == 0 or not np.logical_and.reduce(np.isfinite(flat)):
        raise ValueError(f"{name} must be non-empty and finite, got {flat}")
    return flat


class _Buffer:
    """Preallocated rows of features, top-1 classes and top-1 confidences."""

    def __init__(self, size: int, width: int) -> None:
        self.features: _Vector = np.zeros((size, width))
        self.top: _Indexes = np.zeros(size, dtype=np.intp)
        self.confidence: _Vector = np.zeros(size)

    def put(self, index: int, features: _Vector, top: int, confidence: float) -> None:
        self.features[index] = features
        self.top[index] = top
        self.confidence[index] = confidence


@dataclass(frozen=True)
class _Reference:
    edges: tuple[_Vector, ...]
    counts: tuple[_Indexes, ...]
    groups: _Indexes  # output bin of each class
    output: _Indexes  # reference counts over the output bins
    confidence: float


class DriftMonitor:
    """One pipeline's drift monitor: feed every observation, publish the alerts it returns."""

    def __init__(
        self,
        *,
        reference_size: int = 500,
        window: int = 500,
        check_every: int = 50,
        bins: int = 10,
        threshold: float = 0.25,
        clear_threshold: float = 0.1,
        confidence_drop: float = 0.2,
        classes: int | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self._bins = _count("bins", bins, 2)
        self._reference_size = _count("reference_size", reference_size, bins)
        self._window = _count("window", window, bins)
        self._check_every = _count("check_every", check_every)
        if not (math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a finite number > 0, got {threshold!r}")
        if not (math.isfinite(clear_threshold) and 0 < clear_threshold <= threshold):
            raise ValueError(f"clear_threshold must be in (0, threshold], got {clear_threshold!r}")
        if not (math.isfinite(confidence_drop) and 0 < confidence_drop <= 1):
            raise ValueError(f"confidence_drop must be in (0, 1], got {confidence_drop!r}")
        self._threshold = float(threshold)
        self._clear = float(clear_threshold)
        self._drop = float(confidence_drop)
        self._configured = None if classes is None else _count("classes", classes, 2)
        if names is not None:
            if isinstance(names, str) or not names or len(set(names)) != len(names):
                raise ValueError(f"names must be a non-empty sequence of unique names: {names!r}")
            if any(not isinstance(n, str) or not n or n in _RESERVED for n in names):
                raise ValueError(f"names must be non-empty and not in {sorted(_RESERVED)}")
        self._given_names = None if names is None else tuple(names)
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new model is installed): the reference is learned again."""
        self._seen = 0
        self._names: tuple[str, ...] = ()
        self._classes = self._configured
        self._with_output: bool | None = None
        self._learning: _Buffer | None = None
        self._recent: _Buffer | None = None
        self._reference: _Reference | None = None
        self._drift = False
        self._checked = 0
        self._score: float | None = None
        self._worst: str | None = None
        self._confidence_drop: float | None = None

    @property
    def status(self) -> dict[str, str | float | int | None]:
        """For telemetry: state, the last check's max PSI and its feature, progress."""
        state = "learning" if self._reference is None else "drift" if self._drift else "ok"
        return {
            "state": state,
            "score": self._score,
            "worst": self._worst,
            "confidence_drop": self._confidence_drop,
            "reference": min(self._seen, self._reference_size),
            "checked": self._checked,
        }

    def observe(self, features: npt.ArrayLike, scores: npt.ArrayLike | None) -> Alert | None:
        """Feed one observation (``input_features`` and the model's scores or None)."""
        row = _finite_vector("features", features)
        names = self._names or self._names_for(row.size)
        if row.size != len(names):
            raise ValueError(f"features has {row.size} values, expected {len(names)}")
        top, confidence, classes = self._top1(scores)
        if self._learning is None:  # the first observation fixes the widths
            self._names, self._classes, self._with_output = names, classes, scores is not None
            self._learning = _Buffer(self._reference_size, row.size)
            self._recent = _Buffer(self._window, row.size)
        if self._reference is None:
            self._learning.put(self._seen, row, top, confidence)
            self._seen += 1
            if self._seen == self._reference_size:
                self._reference = self._learn(self._learning)
            return None
        assert self._recent is not None
        after = self._seen - self._reference_size
        self._recent.put(after % self._window, row, top, confidence)
        self._seen += 1
        after += 1
        if after < self._window or (after - self._window) % self._check_every:
            return None
        return self._check(self._reference, self._recent)

    def _names_for(self, width: int) -> tuple[str, ...]:
        if self._given_names is not None:
            return self._given_names
        if width % 2:
            raise ValueError(
                f"features has {width} values, not input_features' means and stds: pass names"
            )
        return feature_names(width // 2)

    def _top1(self, scores: npt.ArrayLike | None) -> tuple[int, float, int | None]:
        if self._with_output is not None and (scores is not None) != self._with_output:
            raise ValueError("scores must be given for every observation or for none (reset())")
        if scores is None:
            return 0, 0.0, self._classes
        flat = _finite_vector("scores", scores)
        classes = flat.size if self._classes is None else self._classes
        if flat.size != classes or classes < 2:
            raise ValueError(f"scores has {flat.size} values, expected {classes} (>= 2)")
        top = int(np.argmax(flat))
        return top, float(flat[top]), classes

    def _learn(self, buffer: _Buffer) -> _Reference:
        cuts = np.linspace(0.0, 1.0, self._bins + 1)[1:-1]
        columns = buffer.features.T
        edges = tuple(_cut_points(column, cuts) for column in columns)
        counts = tuple(_histogram(e, column) for e, column in zip(edges, columns, strict=True))
        classes = self._classes or 1
        frequencies = np.bincount(buffer.top, minlength=classes)
        if classes <= self._bins:
            groups = np.arange(classes, dtype=np.intp)
        else:  # the most frequent classes keep a bin, the rest share the last
            groups = np.full(classes, self._bins - 1, dtype=np.intp)
            groups[np.argsort(-frequencies, kind="stable")[: self._bins - 1]] = np.arange(
                self._bins - 1
            )
        output = np.bincount(groups[buffer.top], minlength=int(groups.max()) + 1)
        return _Reference(edges, counts, groups, output, float(buffer.confidence.mean()))

    def _check(self, reference: _Reference, recent: _Buffer) -> Alert | None:
        columns = recent.features.T
        details = {
            name: psi(counts, _histogram(edges, column))
            for name, edges, counts, column in zip(
                self._names, reference.edges, reference.counts, columns, strict=True
            )
        }
        drop = 0.0
        if self._with_output:
            current = np.bincount(reference.groups[recent.top], minlength=reference.output.size)
            details[OUTPUT] = psi(reference.output, current)
            worst = max(details, key=details.__getitem__)
            details[CONFIDENCE_REFERENCE] = reference.confidence
            details[CONFIDENCE_CURRENT] = float(recent.confidence.mean())
            drop = reference.confidence - details[CONFIDENCE_CURRENT]
        else:
            worst = max(details, key=details.__getitem__)
        score = details[worst]
        self._checked += 1
        self._score, self._worst = score, worst
        self._confidence_drop = drop if self._with_output else None
        if not self._drift:
            if score >= self._threshold:
                self._drift = True
                return Alert("drift", "psi", score, worst, details)
            if drop >= self._drop:
                self._drift = True
                return Alert("drift", CONFIDENCE, drop, CONFIDENCE, details)
        elif score < self._clear and drop < self._drop / 2:
            self._drift = False
            return Alert("clear", "psi", score, worst, details)
        return None

"""Pure unit tests of drift monitoring: whole synthetic streams replayed observation by
observation, no mocks, no timing."""

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pytest

from edge_agent.pipeline.drift import (
    Alert,
    DriftMonitor,
    _cut_points,
    feature_names,
    input_features,
    psi,
)

Observation = tuple[np.ndarray, np.ndarray | None]


def alerts(monitor: DriftMonitor, stream: Iterable[Observation]) -> list[tuple[int, Alert]]:
    """Every alert with the index of the observation that raised it."""
    found = []
    for i, (features, scores) in enumerate(stream):
        alert = monitor.observe(features, scores)
        if alert is not None:
            found.append((i, alert))
    return found


def states(found: list[tuple[int, Alert]]) -> list[str]:
    return [alert.state for _, alert in found]


def numpy_psi(reference: np.ndarray, current: np.ndarray, eps: float = 1e-4) -> float:
    """The textbook formula, written independently of the module."""
    q = reference / reference.sum()
    p = current / current.sum()
    q = (q + eps) / (1 + eps * q.size)
    p = (p + eps) / (1 + eps * p.size)
    return float(((p - q) * np.log(p / q)).sum())


# --- synthetic streams -------------------------------------------------------


def camera(rng: np.random.Generator, brightness: float, count: int) -> Iterator[Observation]:
    """Small noisy frames around ``brightness``; each frame's level wobbles a little."""
    for _ in range(count):
        level = brightness + rng.normal(0.0, 4.0, size=3)
        frame = rng.normal(level, 20.0, size=(1, 24, 24, 3))
        yield input_features(np.clip(frame, 0, 255).astype(np.uint8), "image"), None


def sensor(
    rng: np.random.Generator, count: int, shift: float = 0.0, probs: Any = None
) -> Iterator[Observation]:
    """Normalised [64, 3] windows; channel 1 offset by ``shift``; optional class scores."""
    for _ in range(count):
        window = rng.normal(0.0, 1.0, size=(64, 3)).astype(np.float32)
        window[:, 1] += shift
        scores = None if probs is None else rng.dirichlet(probs)
        yield input_features(window, "sensor"), scores


def classifier(
    rng: np.random.Generator, count: int, frequencies: list[float], confidence: float
) -> Iterator[Observation]:
    """Stable inputs; top-1 drawn from ``frequencies`` with ``confidence`` on it."""
    classes = len(frequencies)
    for features, _ in sensor(rng, count):
        top = rng.choice(classes, p=frequencies)
        scores = np.full(classes, (1.0 - confidence) / (classes - 1))
        scores[top] = confidence
        yield features, scores


def levels(shares: list[int], periods: int) -> Iterator[Observation]:
    """A deterministic 1-feature stream: per 50 observations, ``shares[d]`` values in decile d.

    A reference of whole periods has its decile cuts between the values, and every
    window of whole periods holds the same values, so the PSI of each check is exact.
    """
    assert sum(shares) == 50
    period = np.repeat((np.arange(10) + 0.5) / 10, shares)
    for _ in range(periods):
        for value in period:
            yield np.array([value]), None


UNIFORM = [5] * 10


def tilted(f: float) -> list[int]:
    """Shares with a fraction ``f`` of the lower half's mass moved to the upper half."""
    low, high = round(5 * (1 - f)), round(5 * (1 + f))
    return [low] * 5 + [high] * 5


def cut_bins(shares: list[int]) -> np.ndarray:
    """The monitor's 19 bins for 9 cuts: the deciles, with an (empty) bin at each cut."""
    counts = np.zeros(19)
    counts[::2] = shares
    return counts


def tilted_psi(f: float) -> float:
    return numpy_psi(cut_bins(UNIFORM), cut_bins(tilted(f)))


# --- input features ----------------------------------------------------------


def test_image_features_match_numpy() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(1, 48, 64, 3), dtype=np.uint8)
    pixels = image[0].astype(np.float64)
    expected = np.concatenate([pixels.mean(axis=(0, 1)), pixels.std(axis=(0, 1))])
    features = input_features(image, "image")
    assert features.dtype == np.float64
    np.testing.assert_allclose(features, expected, rtol=1e-12)
    assert feature_names(3) == ("mean[0]", "mean[1]", "mean[2]", "std[0]", "std[1]", "std[2]")


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.float32])
def test_grayscale_and_other_dtypes(dtype: type) -> None:
    rng = np.random.default_rng(2)
    image: np.ndarray = rng.integers(0, 100, size=(1, 32, 32)).astype(dtype)
    values = image.astype(np.float64)
    np.testing.assert_allclose(input_features(image, "image"), [values.mean(), values.std()])


def test_low_contrast_and_constant_frames_keep_their_contrast() -> None:
    flat: np.ndarray = np.full((1, 16, 16, 3), 200, dtype=np.uint8)
    np.testing.assert_array_equal(input_features(flat, "image"), [200, 200, 200, 0, 0, 0])
    dim = (128 + np.random.default_rng(3).integers(-1, 2, size=(1, 224, 224, 3))).astype(np.uint8)
    expected = dim[0].astype(np.float64).std(axis=(0, 1))
    # float64 one pass: ~1e-9 relative here (a float32 one pass is off by 7%, a flat frame by 100%)
    np.testing.assert_allclose(input_features(dim, "image")[3:], expected, rtol=1e-7)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_frames_larger_than_one_slice_sum_exactly(dtype: type) -> None:
    # 300x224 pixels: eight full slices of _moments and a partial one
    info = np.iinfo(dtype)
    rng = np.random.default_rng(5)
    image: np.ndarray = rng.integers(info.min, info.max + 1, size=(1, 300, 224, 3)).astype(dtype)
    pixels = image.reshape(-1, 3).astype(np.int64)
    mean = pixels.sum(axis=0) / pixels.shape[0]  # integer sums: exact
    square = (pixels * pixels).sum(axis=0) / pixels.shape[0]
    features = input_features(image, "image")
    np.testing.assert_array_equal(features[:3], mean)
    np.testing.assert_allclose(features[3:], np.sqrt(square - mean * mean), rtol=1e-12)
    np.testing.assert_allclose(features[3:], pixels.std(axis=0), rtol=1e-9)


def test_sensor_features_match_numpy() -> None:
    window = np.random.default_rng(4).normal(0.5, 2.0, size=(128, 6)).astype(np.float32)
    values = window.astype(np.float64)
    expected = np.concatenate([values.mean(axis=0), values.std(axis=0)])
    np.testing.assert_allclose(input_features(window, "sensor"), expected, rtol=1e-9)
    np.testing.assert_allclose(input_features(window[None], "sensor"), expected, rtol=1e-9)


@pytest.mark.parametrize(
    ("shape", "kind"),
    [((2, 8, 8, 3), "image"), ((8, 8), "image"), ((1, 0, 8, 3), "image"), ((4,), "sensor")],
)
def test_bad_tensors(shape: tuple[int, ...], kind: Any) -> None:
    with pytest.raises(ValueError, match="tensor"):
        input_features(np.zeros(shape, dtype=np.uint8), kind)


def test_bad_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        input_features(np.zeros((4, 2)), "audio")  # type: ignore[arg-type]


# --- PSI ---------------------------------------------------------------------


def test_psi_of_identical_distributions_is_zero() -> None:
    counts = np.array([50, 40, 60, 45, 55, 50, 50, 48, 52, 50], float)
    assert psi(counts, counts) == pytest.approx(0.0, abs=1e-12)
    assert psi(counts, 3 * counts) == pytest.approx(0.0, abs=1e-12)  # proportions, not counts


def test_psi_of_disjoint_distributions_is_large() -> None:
    reference = np.array([100, 100, 0, 0], float)
    current = np.array([0, 0, 100, 100], float)
    assert psi(reference, current) == pytest.approx(numpy_psi(reference, current), rel=1e-12)
    assert psi(reference, current) > 15  # 2 ln(1 / eps) - 2 ln 2


def test_psi_matches_the_formula() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        reference, current = rng.integers(0, 30, size=(2, 10)).astype(float) + 1
        expected = numpy_psi(reference, current)
        assert psi(reference, current) == pytest.approx(expected, rel=1e-12)
        assert psi(current, reference) == pytest.approx(expected, rel=1e-12)  # symmetric


@pytest.mark.parametrize(
    ("reference", "current", "match"),
    [([0, 0], [1, 1], "reference"), ([1, -1], [1, 1], "reference"), ([1, 1], [1, 1, 1], "bins")],
)
def test_psi_bad_histograms(reference: list[int], current: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        psi(reference, current)


# --- drift on the inputs -----------------------------------------------------


def test_camera_getting_darker_alerts_once_and_clears_once() -> None:
    rng = np.random.default_rng(10)
    monitor = DriftMonitor()
    stream = [
        *camera(rng, 130, 800),  # reference and a normal stretch
        *camera(rng, 90, 700),  # darker: lens dirty, lights off
        *camera(rng, 130, 1000),  # back to normal
    ]
    found = alerts(monitor, stream)
    assert states(found) == ["drift", "clear"]
    (at_drift, drift), (at_clear, clear) = found
    assert 800 < at_drift < 800 + 250
    assert 1500 < at_clear < 1500 + 500 + 250
    assert drift.measure == "psi"
    assert drift.worst.startswith("mean[")
    assert drift.score == max(drift.details.values()) >= 0.25
    assert all(drift.details[f"std[{c}]"] < 0.25 for c in range(3))  # the contrast did not move
    assert set(drift.details) == set(feature_names(3))  # no scores: no output entries
    assert clear.score < 0.1
    assert monitor.status["state"] == "ok"


def test_sensor_mean_shift_alerts_once_and_clears_once() -> None:
    rng = np.random.default_rng(11)
    monitor = DriftMonitor()
    found = alerts(monitor, [*sensor(rng, 600), *sensor(rng, 600, shift=1.0), *sensor(rng, 1200)])
    assert states(found) == ["drift", "clear"]
    drift = found[0][1]
    assert drift.worst == "mean[1]"


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_stable_stream_never_alerts(seed: int) -> None:
    reference = np.random.default_rng(seed)
    later = np.random.default_rng(seed + 1000)
    monitor = DriftMonitor()
    probs = [5.0, 2.0, 1.0, 1.0]
    stream = [*sensor(reference, 500, probs=probs), *sensor(later, 4000, probs=probs)]
    assert alerts(monitor, stream) == []
    status = monitor.status
    assert status["state"] == "ok"
    assert status["checked"] == 71  # (4000 - 500) / 50 + 1
    assert isinstance(status["score"], float)
    assert status["score"] < 0.25


def test_stable_camera_never_alerts() -> None:
    monitor = DriftMonitor()
    stream = [
        *camera(np.random.default_rng(30), 130, 500),
        *camera(np.random.default_rng(31), 130, 2000),
    ]
    assert alerts(monitor, stream) == []


# --- drift on the outputs ----------------------------------------------------


def test_class_frequency_shift_alerts() -> None:
    rng = np.random.default_rng(40)
    monitor = DriftMonitor()
    stream = [
        *classifier(rng, 800, [0.7, 0.2, 0.1], 0.8),
        *classifier(rng, 600, [0.2, 0.2, 0.6], 0.8),  # same inputs, same confidence
    ]
    found = alerts(monitor, stream)
    assert states(found) == ["drift"]
    drift = found[0][1]
    assert (drift.measure, drift.worst) == ("psi", "output")
    assert drift.details["confidence_reference"] == pytest.approx(0.8)
    assert drift.details["confidence_current"] == pytest.approx(0.8)


def test_rare_classes_of_a_large_model_share_a_bin() -> None:
    # 1000 classes, top-1 spread thinly: without pooling the sampling noise alone alerts.
    rng = np.random.default_rng(41)
    frequencies = np.full(1000, 0.5 / 997)
    frequencies[:3] = [0.3, 0.1, 0.1]
    stream = classifier(rng, 3000, list(frequencies / frequencies.sum()), 0.6)
    assert alerts(DriftMonitor(), stream) == []


def test_confidence_drop_alerts_and_recovery_clears() -> None:
    rng = np.random.default_rng(42)
    monitor = DriftMonitor(classes=3)
    frequencies = [0.5, 0.3, 0.2]
    stream = [
        *classifier(rng, 800, frequencies, 0.9),
        *classifier(rng, 600, frequencies, 0.6),  # same answers, much less sure
        *classifier(rng, 1000, frequencies, 0.9),
    ]
    found = alerts(monitor, stream)
    assert states(found) == ["drift", "clear"]
    drift = found[0][1]
    assert (drift.measure, drift.worst) == ("confidence", "confidence")
    assert drift.score == pytest.approx(
        drift.details["confidence_reference"] - drift.details["confidence_current"]
    )
    assert drift.score >= 0.2
    assert max(v for k, v in drift.details.items() if not k.startswith("confidence")) < 0.25


# --- hysteresis and reset ----------------------------------------------------


def test_score_between_the_thresholds_does_not_flap() -> None:
    hover = tilted(0.4)
    assert 0.1 < tilted_psi(0.4) < 0.25
    monitor = DriftMonitor(names=["level"])
    # Normal, then hovering: not enough to enter drift.
    assert alerts(monitor, levels(UNIFORM, 12)) == []
    assert alerts(monitor, levels(hover, 30)) == []
    assert monitor.status["state"] == "ok"
    assert monitor.status["score"] == pytest.approx(tilted_psi(0.4), rel=1e-9)
    # Drifted and hovering in turn: still one alert, and no clear.
    phases = [tilted(1.0), hover, tilted(1.0), hover, tilted(1.0), hover]
    found = [a for shares in phases for a in alerts(monitor, levels(shares, 12))]
    assert states(found) == ["drift"]
    assert found[0][1].worst == "level"
    assert monitor.status["state"] == "drift"
    assert monitor.status["score"] == pytest.approx(tilted_psi(0.4), rel=1e-9)
    # Only back below the clear threshold does it clear, once.
    assert states(alerts(monitor, levels(UNIFORM, 20))) == ["clear"]
    assert monitor.status["score"] == pytest.approx(0.0, abs=1e-12)


def test_reset_learns_a_new_reference() -> None:
    rng = np.random.default_rng(50)
    monitor = DriftMonitor(reference_size=200, window=200, check_every=20)
    assert states(alerts(monitor, [*sensor(rng, 300), *sensor(rng, 300, shift=1.0)])) == ["drift"]
    monitor.reset()
    assert monitor.status == {
        "state": "learning",
        "score": None,
        "worst": None,
        "confidence_drop": None,
        "reference": 0,
        "checked": 0,
    }
    # The new model's world is the shifted one, with class scores now: that is normal.
    assert alerts(monitor, sensor(rng, 1000, shift=1.0, probs=[1.0, 1.0])) == []
    assert monitor.status["state"] == "ok"
    # And the old world is now the drift.
    found = alerts(monitor, sensor(rng, 400, probs=[1.0, 1.0]))
    assert states(found) == ["drift"]
    assert found[0][1].worst == "mean[1]"


def test_status_while_learning() -> None:
    monitor = DriftMonitor(reference_size=100)
    alerts(monitor, sensor(np.random.default_rng(60), 40))
    assert monitor.status["state"] == "learning"
    assert monitor.status["reference"] == 40


def test_alert_is_frozen() -> None:
    alert = Alert("drift", "psi", 1.0, "mean[0]", {"mean[0]": 1.0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        alert.score = 0.0  # type: ignore[misc]


# --- validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"reference_size": 0}, "reference_size"),
        ({"reference_size": 5}, "reference_size"),  # fewer than bins
        ({"window": 9}, "window"),
        ({"check_every": 0}, "check_every"),
        ({"bins": 1}, "bins"),
        ({"bins": True}, "bins"),
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"clear_threshold": 0.3}, "clear_threshold"),  # above threshold
        ({"clear_threshold": 0.0}, "clear_threshold"),
        ({"confidence_drop": 0.0}, "confidence_drop"),
        ({"confidence_drop": 1.5}, "confidence_drop"),
        ({"classes": 1}, "classes"),
        ({"names": ["a", "a"]}, "names"),
        ({"names": ["output"]}, "names"),
        ({"names": "ab"}, "names"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} "):
        DriftMonitor(**kwargs)


def test_bad_observations_leave_the_monitor_untouched() -> None:
    monitor = DriftMonitor(reference_size=10, window=10, check_every=1)
    features = np.zeros(4)
    monitor.observe(features, np.array([0.2, 0.8]))
    before = monitor.status
    bad: list[tuple[Any, Any, str]] = [
        (np.array([0.0, np.nan, 0.0, 0.0]), np.array([0.2, 0.8]), "features"),
        (np.zeros(6), np.array([0.2, 0.8]), "features"),  # another width
        (np.zeros(3), np.array([0.2, 0.8]), "features"),
        (features, np.array([0.2, 0.3, 0.5]), "scores"),  # another number of classes
        (features, np.array([0.2, np.inf]), "scores"),
        (features, None, "scores"),  # scores sometimes, not always
    ]
    for row, scores, name in bad:
        with pytest.raises(ValueError, match=name):
            monitor.observe(row, scores)
    assert monitor.status == before


def test_features_other_than_input_features_need_names() -> None:
    with pytest.raises(ValueError, match="names"):
        DriftMonitor().observe(np.zeros(3), None)
    assert DriftMonitor(names=["a", "b", "c"]).observe(np.zeros(3), None) is None


def test_regression_models_monitor_inputs_only() -> None:
    monitor = DriftMonitor(reference_size=10, window=10, check_every=1)
    with pytest.raises(ValueError, match="scores"):
        monitor.observe(np.zeros(2), np.array([0.5]))  # one output: pass None
    rng = np.random.default_rng(70)
    alerts(monitor, sensor(rng, 30))
    assert monitor.status["confidence_drop"] is None
    with pytest.raises(ValueError, match="scores"):
        monitor.observe(np.zeros(6), np.array([0.2, 0.8]))


# --- reference bins ----------------------------------------------------------


@pytest.mark.parametrize("bins", [2, 3, 10, 17])
def test_cut_points_are_numpys_quantiles(bins: int) -> None:
    """The same numbers, to the bit, as np.unique(np.quantile(...)), which the
    monitor no longer calls (they import numpy.ma)."""
    rng = np.random.default_rng(bins)
    cuts = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    columns = [
        rng.normal(size=500),
        rng.normal(size=37) * 1e-6,
        rng.integers(0, 4, size=500).astype(np.float64),  # ties: repeated cuts merge
        np.full(50, 0.3),  # a constant column: a single cut
        rng.integers(-128, 128, size=499) / 3.0,
        np.round(rng.random(10), 1),
    ]
    for column in columns:
        expected = np.unique(np.quantile(column, cuts))
        got = _cut_points(column, cuts)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)

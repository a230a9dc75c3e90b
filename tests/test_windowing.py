"""Line parsing and the sliding window, checked against numpy computed independently."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.errors import InputError
from edge_agent.windowing import SlidingWindow, parse_line


def expected_windows(
    samples: np.ndarray, size: int, hop: int, mean: np.ndarray, std: np.ndarray
) -> list[np.ndarray]:
    """The windows the spec describes, by slicing in float64: no ring, no state."""
    normalised = (samples.astype(np.float64) - mean) / std
    ends = range(size, len(samples) + 1, hop)
    return [normalised[end - size : end] for end in ends]


def run(window: SlidingWindow, samples: np.ndarray) -> list[np.ndarray]:
    emitted = [window.push(sample) for sample in samples]
    return [values for values in emitted if values is not None]


# --- parse_line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fields", "expected"),
    [
        ("1.0,2.5,3", None, [1.0, 2.5, 3.0]),
        ("  -1e3 , +0.25,7  \r\n", None, [-1000.0, 0.25, 7.0]),
        ("[1, 2.5, -3]", None, [1.0, 2.5, -3.0]),
        ('{"a": 1, "b": 2, "c": 3}', ["c", "a", "b"], [3.0, 1.0, 2.0]),
        (
            '{"accel": {"x": 0.5, "y": -1}, "t": 20}',
            ["accel.x", "accel.y", "t"],
            [0.5, -1.0, 20.0],
        ),
        ('{"accel.x": 4, "b": 5, "c": true}', ["accel.x", "b", "c"], [4.0, 5.0, 1.0]),
    ],
)
def test_parse_line_accepts(line: str, fields: list[str] | None, expected: list[float]) -> None:
    sample = parse_line(line, 3, fields)
    assert sample.dtype == np.float32
    assert sample.shape == (3,)
    np.testing.assert_array_equal(sample, np.array(expected, dtype=np.float32))


def test_parse_line_single_channel_scalar() -> None:
    np.testing.assert_array_equal(parse_line("42\n", 1), np.array([42.0], dtype=np.float32))


@pytest.mark.parametrize(
    ("line", "fields", "reason"),
    [
        ("", None, "empty line"),
        ("   \n", None, "empty line"),
        ("1,abc,3", None, "not a number in column 2: 'abc'"),
        ("1,,3", None, "empty value in column 2"),
        ("1,2,", None, "empty value in column 3"),
        ("1,2", None, "short line: 2 values, expected 3"),
        ("1,2,3,4", None, "long line: 4 values, expected 3"),
        ("1,nan,3", None, "value 2 is not finite"),
        ("1,2,inf", None, "value 3 is not finite"),
        ("1,2,1e39", None, "value 3 is not finite"),  # finite in float64, not in float32
        ("[1, NaN, 3]", None, "value 2 is not finite"),
        ("[1, 2", None, "bad JSON"),
        ('{"a": 1,}', ["a", "b", "c"], "bad JSON"),
        ("[1, 2]", None, "short line"),
        ('[1, "2", 3]', None, "item 1 is not a number"),
        ('{"a": 1, "b": 2}', ["a", "b", "c"], "missing field 'c'"),
        ('{"a": {"x": 1}, "b": 2, "c": 3}', ["a.y", "b", "c"], "missing field 'a.y'"),
        ('{"a": 1, "b": 2, "c": 3}', ["a.x", "b", "c"], "missing field 'a.x'"),
        ('{"a": null, "b": 2, "c": 3}', ["a", "b", "c"], "field 'a' is null"),
        ('{"a": "hot", "b": 2, "c": 3}', ["a", "b", "c"], "field 'a' is not a number"),
        ('{"a": [1], "b": 2, "c": 3}', ["a", "b", "c"], "field 'a' is not a number"),
        ('{"a": 1, "b": 2, "c": 3}', None, "no fields configured"),
    ],
)
def test_parse_line_rejects(line: str, fields: list[str] | None, reason: str) -> None:
    with pytest.raises(InputError, match=reason.replace("(", r"\(").replace("[", r"\[")):
        parse_line(line, 3, fields)


def test_parse_line_only_objects_and_arrays_are_json() -> None:
    with pytest.raises(InputError, match="not a number in column 1"):
        parse_line('"5"', 1)


# --- SlidingWindow ----------------------------------------------------------------------


@pytest.mark.parametrize(("size", "hop"), [(1, 1), (4, 1), (4, 2), (5, 5), (3, 7), (8, 3)])
def test_windows_match_slices(size: int, hop: int) -> None:
    rng = np.random.default_rng(size * 100 + hop)
    samples = rng.normal(5.0, 3.0, size=(40, 3)).astype(np.float32)
    mean = np.array([5.0, -2.0, 0.5])
    std = np.array([3.0, 0.5, 10.0])
    window = SlidingWindow(size, hop, 3, mean=list(mean), std=list(std))

    got = run(window, samples)
    want = expected_windows(samples, size, hop, mean, std)

    assert len(got) == len(want) == len(range(size, 41, hop))
    for values, expected in zip(got, want, strict=True):
        assert values.dtype == np.float32
        assert values.shape == (size, 3)
        np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)


def test_first_window_after_size_then_every_hop() -> None:
    window = SlidingWindow(3, 2, 1)
    emitted = [window.push(np.array([float(i)])) is not None for i in range(10)]
    # samples 1..10: windows after the 3rd, 5th, 7th and 9th
    assert emitted == [False, False, True, False, True, False, True, False, True, False]


def test_ring_wraparound_keeps_time_order() -> None:
    window = SlidingWindow(4, 1, 2)
    got = run(window, np.array([[i, -i] for i in range(11)], dtype=np.float32))
    assert len(got) == 8
    # the last window wrapped the ring twice over: still oldest first
    np.testing.assert_array_equal(got[-1], [[7, -7], [8, -8], [9, -9], [10, -10]])
    np.testing.assert_array_equal(got[2], [[2, -2], [3, -3], [4, -4], [5, -5]])


def test_normalisation_by_hand() -> None:
    window = SlidingWindow(2, 2, 2, mean=[10.0, 0.0], std=[2.0, 0.5])
    assert window.push(np.array([12.0, 1.0])) is None
    values = window.push(np.array([6.0, -0.25]))
    assert values is not None
    np.testing.assert_array_equal(values, [[1.0, 2.0], [-2.0, -0.5]])


def test_emitted_windows_are_independent_copies() -> None:
    window = SlidingWindow(2, 1, 1)
    window.push(np.array([1.0]))
    first = window.push(np.array([2.0]))
    second = window.push(np.array([3.0]))
    assert first is not None
    assert second is not None
    np.testing.assert_array_equal(first, [[1.0], [2.0]])
    np.testing.assert_array_equal(second, [[2.0], [3.0]])


def test_push_accepts_other_dtypes() -> None:
    window = SlidingWindow(1, 1, 2, mean=[1.0, 1.0])
    values = window.push(np.array([3, 5], dtype=np.int16))
    assert values is not None
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, [[2.0, 4.0]])


def test_push_rejects_wrong_shape() -> None:
    window = SlidingWindow(2, 1, 3)
    with pytest.raises(ValueError, match=r"sample: shape \(2,\), expected \(3,\)"):
        window.push(np.zeros(2, dtype=np.float32))
    with pytest.raises(ValueError, match="sample"):
        window.push(np.zeros((1, 3), dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"size": 0}, "size"),
        ({"size": -3}, "size"),
        ({"size": 2.5}, "size"),
        ({"hop": 0}, "hop"),
        ({"channels": 0}, "channels"),
        ({"mean": [0.0]}, "mean"),
        ({"mean": [0.0, float("nan")]}, "mean"),
        ({"std": [1.0, 1.0, 1.0]}, "std"),
        ({"std": [1.0, 0.0]}, "std"),
        ({"std": [1.0, -2.0]}, "std"),
        ({"std": [1.0, float("inf")]}, "std"),
        ({"std": [1.0, 1e-50]}, "std"),  # zero once it is a float32
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], name: str) -> None:
    arguments: dict[str, object] = {"size": 4, "hop": 2, "channels": 2, **kwargs}
    with pytest.raises(ValueError, match=f"^{name}:"):
        SlidingWindow(**arguments)  # type: ignore[arg-type]

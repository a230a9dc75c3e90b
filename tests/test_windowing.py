"""Line parsing and the sliding window, checked against numpy computed independently."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.errors import InputError
from edge_agent.sources.sensor.csvblock import parse_csv_block
from edge_agent.sources.sensor.parsing import parse_line
from edge_agent.sources.sensor.window import SlidingWindow


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


# --- parse_csv_block --------------------------------------------------------------------


def parse_each(
    block: bytes, channels: int, fields: list[str] | None = None
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """What a lines source made of a block line by line: parse_line per non-blank line."""
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    samples, errors = [], []
    for index, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            samples.append(parse_line(raw.decode("utf-8", "replace"), channels, fields))
        except InputError as exc:
            errors.append((index, str(exc)))
    return np.array(samples, dtype=np.float32).reshape(-1, channels), errors


def assert_same_as_each(block: bytes, channels: int, fields: list[str] | None = None) -> None:
    samples, errors = parse_csv_block(block, channels, fields)
    want_samples, want_errors = parse_each(block, channels, fields)
    assert samples.dtype == np.float32
    assert samples.shape == want_samples.shape
    # bit for bit: -0.0 is not 0.0, and a value one float32 step away is a bug
    np.testing.assert_array_equal(samples.view(np.uint32), want_samples.view(np.uint32))
    assert errors == want_errors


def test_parse_csv_block_plain_lines() -> None:
    block = b"1.0,2.5,3\n-0.1876,0.0957,1.0051\n12345678,-1234567,+.5\n"
    samples, errors = parse_csv_block(block, 3)
    assert errors == []
    np.testing.assert_array_equal(
        samples,
        np.array(
            [[1.0, 2.5, 3.0], [-0.1876, 0.0957, 1.0051], [12345678, -1234567, 0.5]],
            dtype=np.float32,
        ),
    )
    assert_same_as_each(block, 3)


@pytest.mark.parametrize(
    "line",
    [
        b"abc,1,2",  # not a number
        b"1,,3",  # empty values
        b",2,3",
        b"1,2,",
        b"1,2",  # short
        b"1,2,3,4",  # long
        b"1,nan,3",  # not finite
        b"1,2,inf",
        b"-Infinity,2,3",
        b"1,2,1e40",  # finite in float64, not in float32
        b"1,2,1e400",
        b"1,2,3" + b"0" * 400,  # a huge plain number
        b"[1, 2",  # bad JSON
        b'{"a": 1, "b": 2, "c": 3}',  # a JSON object but no fields
        b"1 2,3,4",  # whitespace inside a value
        b"1.2.3,4,5",
        b"1-2,3,4",
        b"--1,2,3",
        b"+,2,3",
        b".,2,3",
        b"-.,2,3",
        b"1e,2,3",
        b"e5,2,3",
        b"1,2,3\x00",
        b"1,2,3\x0c4",
        b"\xff\xfe,2,3",  # not UTF-8
        b"1,2,\xc2\xa03",  # a no-break space is whitespace to str.strip, not to bytes.strip
        b"1,2,\x1c",
        b"\x0b",  # blank to bytes.strip: skipped, not an error
        b"0x10,2,3",
        b"\xd9\xa1,2,3",  # an Arabic-Indic digit: float() takes it, so parse_line does
    ],
)
def test_parse_csv_block_bad_lines_between_good_ones(line: bytes) -> None:
    block = b"1,2,3\n" + line + b"\n4,5,6\n" + line + b"\n7,8,9\n"
    assert_same_as_each(block, 3)


def test_parse_csv_block_reports_every_bad_line_in_order() -> None:
    block = b"1,2,3\nabc,1,2\n4,5,6\n1,2\n1,nan,3\n7,8,9\n1,2,1e40\n"
    samples, errors = parse_csv_block(block, 3)
    np.testing.assert_array_equal(samples, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert errors == [
        (1, "not a number in column 1: 'abc'"),
        (3, "short line: 2 values, expected 3"),
        (4, "value 2 is not finite in float32: nan"),
        (6, "value 3 is not finite in float32: 1e+40"),
    ]


@pytest.mark.parametrize(
    "block",
    [
        b"",
        b"\n",
        b"\n\n1,2,3\n\n   \n\t\r\n4,5,6\n\n",  # blank lines are skipped
        b"1,2,3\r\n4,5,6\r\n",  # CRLF
        b"1,2,3\n4,5,6",  # the last line without a newline
        b"1,2,3\r",
        b"1e3,-0.5, 2 \n 1E-3 ,\t+7.25\t,0\n",
        b"-0,+0,-0.0\n",
        b"1.,.5,-.5\n",
        b"00000001,-0000001,0.000001\n",
        b"99999999,-9999999,0.9999999\n",
        b"123456789,-12345678,0.12345678\n",  # longer than eight bytes
        b"3.4028235e38,-3.4028235e38,1.17549435e-38\n",  # float32's edges
        b"3.4028236e38,1e-46,-1e-46\n",
        b"16777217,0.1,0.2\n",  # not exact in float32: rounded as parse_line rounds
        b"1_000,2,3\n",  # float() takes underscores
        b"[1, 2.5, -3]\n1,2,3\n",  # a JSON array is a line like any other
    ],
)
def test_parse_csv_block_edge_cases(block: bytes) -> None:
    assert_same_as_each(block, 3)


def test_parse_csv_block_one_channel() -> None:
    assert_same_as_each(b"1\n\n2.5\n \n\r\nx\n-3\n1,2\n", 1)


def test_parse_csv_block_with_fields_parses_json_lines() -> None:
    block = b'{"t": 3, "h": 6}\n{"t": 5}\n[5, 10]\n1,2\n'
    samples, errors = parse_csv_block(block, 2, ["t", "h"])
    np.testing.assert_array_equal(samples, [[3, 6], [5, 10], [1, 2]])
    assert errors == [(1, "missing field 'h'")]
    assert_same_as_each(block, 2, ["t", "h"])


def random_cell(rng: np.random.Generator) -> bytes:
    """Mostly numbers in the formats devices print, sometimes bytes that may not be."""
    if rng.random() < 0.7:
        value = float(rng.normal() * 10.0 ** rng.integers(-12, 12))
        form = str(rng.choice(["{:.4f}", "{:.0f}", "{:g}", "{:.3e}", "{!r}", "{:+.2f}"]))
        text = form.format(value).encode()
        pad = rng.choice([b"", b" ", b"\t", b"\r"], size=2)
        return bytes(pad[0]) + text + bytes(pad[1]) if rng.random() < 0.2 else text
    alphabet = np.frombuffer(b"0123456789" * 3 + b"..++--eE  \t\rnaif_x[]{}\xa0", np.uint8)
    return rng.choice(alphabet, size=int(rng.integers(0, 10))).tobytes()


@pytest.mark.parametrize("seed", range(4))
def test_parse_csv_block_agrees_with_parse_line_on_random_blocks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(200):
        channels = int(rng.integers(1, 5))
        lines = []
        for _ in range(int(rng.integers(0, 40))):
            cells = channels + (int(rng.integers(-1, 2)) if rng.random() < 0.1 else 0)
            lines.append(b",".join(random_cell(rng) for _ in range(cells)))
        ending = b"\n" if rng.random() < 0.8 else b""
        assert_same_as_each(b"\n".join(lines) + ending, channels)


def test_parse_csv_block_short_decimals_are_exact() -> None:
    """The bulk parse of short decimals computes values itself: they must be float()'s."""
    rng = np.random.default_rng(7)
    values = rng.normal(size=30_000) * 10.0 ** rng.integers(-6, 8, size=30_000)
    decimals = rng.integers(0, 8, size=30_000)
    text = "\n".join(f"{v:.{d}f}"[:8] for v, d in zip(values, decimals, strict=True))
    assert_same_as_each(text.encode() + b"\n", 1)


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


@pytest.mark.parametrize("seed", range(6))
def test_push_many_emits_what_push_emits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(60):
        size, hop, channels = (int(n) for n in rng.integers(1, [9, 13, 4]))
        if rng.random() < 0.2:
            hop = size
        mean = rng.normal(size=channels).tolist()
        std = (rng.random(channels) + 0.1).tolist()
        one, many = (SlidingWindow(size, hop, channels, mean, std) for _ in range(2))
        want: list[np.ndarray] = []
        got: list[np.ndarray] = []
        for _ in range(int(rng.integers(1, 8))):
            samples = rng.normal(3.0, 5.0, size=(int(rng.integers(0, 3 * size + 4)), channels))
            samples = samples.astype(np.float32 if rng.random() < 0.8 else np.float64)
            want += run(one, samples)
            got += many.push_many(samples)
        assert len(got) == len(want)
        for values, expected in zip(got, want, strict=True):
            assert values.dtype == np.float32
            assert values.shape == (size, channels)
            np.testing.assert_array_equal(values, expected)


def test_push_many_and_push_interleave() -> None:
    samples = np.arange(60, dtype=np.float32).reshape(30, 2)
    one, mixed = SlidingWindow(5, 3, 2), SlidingWindow(5, 3, 2)
    want = run(one, samples)
    got = mixed.push_many(samples[:4])
    got += run(mixed, samples[4:11])
    got += mixed.push_many(samples[11:12])
    got += mixed.push_many(samples[12:12])
    got += mixed.push_many(samples[12:])
    assert len(got) == len(want) == 9
    for values, expected in zip(got, want, strict=True):
        np.testing.assert_array_equal(values, expected)


def test_push_many_windows_are_independent_copies() -> None:
    window = SlidingWindow(3, 1, 1)
    got = window.push_many(np.arange(6, dtype=np.float32).reshape(6, 1))
    assert len(got) == 4
    for index, values in enumerate(got):
        assert values.flags.owndata
        assert not any(np.shares_memory(values, other) for other in got[index + 1 :])
    got[0][:] = -1
    np.testing.assert_array_equal(got[1], [[1], [2], [3]])


def test_push_many_rejects_wrong_shape() -> None:
    window = SlidingWindow(2, 1, 3)
    with pytest.raises(ValueError, match=r"samples: shape \(4,\), expected \(n, 3\)"):
        window.push_many(np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="samples"):
        window.push_many(np.zeros((4, 2), dtype=np.float32))


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


def test_the_popcount_fallback_counts_as_numpy_does() -> None:
    """numpy < 2 (the tflite-runtime install) has no bitwise_count: the fallback
    must give the same counts, the same dtype."""
    from edge_agent.sources.sensor.csvblock import _popcount  # noqa: PLC0415 - a private helper

    rng = np.random.default_rng(11)
    words = rng.integers(0, 2**63, size=2000, dtype=np.uint64) * np.uint64(2)
    words[:4] = [0, 1, 2**64 - 1, 2**63]
    expected = [bin(int(w)).count("1") for w in words]
    counts = _popcount(words)
    assert counts.dtype == np.uint8
    assert counts.tolist() == expected

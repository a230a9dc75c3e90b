import numpy as np
import pytest

from edge_agent.model.quant import Quantizer, check_params, dequantize, quantize


def test_quantize_rounds_and_offsets_by_zero_point() -> None:
    q = quantize([0.0, 0.5, -0.5, 0.26], scale=0.5, zero_point=10, dtype=np.int8)
    assert q.dtype == np.int8
    assert q.tolist() == [10, 11, 9, 11]


@pytest.mark.parametrize(("dtype", "low", "high"), [(np.int8, -128, 127), (np.uint8, 0, 255)])
def test_quantize_clips_to_the_dtype(dtype: type, low: int, high: int) -> None:
    q = quantize([-1e6, 1e6], scale=0.1, zero_point=0, dtype=dtype)
    assert q.tolist() == [low, high]


def test_scale_zero_means_raw_values() -> None:
    q = quantize([1.7, -2.2], scale=0.0, zero_point=0, dtype=np.float32)
    assert q.dtype == np.float32
    assert q.tolist() == pytest.approx([1.7, -2.2])
    assert dequantize(np.array([3, 4], dtype=np.int32), 0.0, 0).tolist() == [3.0, 4.0]


def test_dequantize_inverts_quantize_within_half_a_step() -> None:
    values = np.linspace(-3.0, 3.0, 101, dtype=np.float32)
    scale, zero_point = 0.02448, -128
    back = dequantize(quantize(values, scale, zero_point, np.int8), scale, zero_point)
    representable = (values >= (-128 - zero_point) * scale) & (values <= (127 - zero_point) * scale)
    assert np.all(np.abs(back - values)[representable] <= scale / 2 + 1e-6)


def test_dequantize_has_no_uint8_wraparound() -> None:
    assert dequantize(np.array([0, 255], dtype=np.uint8), 1.0, 128).tolist() == [-128.0, 127.0]


@pytest.mark.parametrize(
    ("scale", "zero_point", "dtype", "problem"),
    [
        (float("nan"), 0, np.int8, "scale"),
        (-0.5, 0, np.int8, "scale"),
        (float("inf"), 0, np.uint8, "scale"),
        (0.1, 200, np.int8, "zero point"),
        (0.1, -1, np.uint8, "zero point"),
    ],
)
def test_check_params_names_the_problem(
    scale: float, zero_point: int, dtype: type, problem: str
) -> None:
    message = check_params(scale, zero_point, dtype)
    assert message is not None
    assert problem in message


def test_check_params_accepts_usual_params() -> None:
    assert check_params(0.0078125, 128, np.uint8) is None
    assert check_params(0.0, 0, np.float32) is None


@pytest.mark.parametrize(
    ("dtype", "scale", "zero_point"),
    [(np.int8, 0.03125, 0), (np.int8, 0.0173, -5), (np.uint8, 0.5, 128), (np.int16, 0.001, 3)],
)
@pytest.mark.parametrize("source", [np.float32, np.float64])
def test_the_buffered_quantizer_gives_what_quantize_gives(
    dtype: type, scale: float, zero_point: int, source: type
) -> None:
    rng = np.random.default_rng(7)
    quantizer = Quantizer((1, 64, 3), scale, zero_point, dtype)
    for spread in (0.5, 10.0, 1e6):  # inside the range, at its edges, far outside
        values: np.ndarray = (rng.normal(size=(1, 64, 3)) * spread).astype(source)
        values.flat[:4] = [scale * 0.5, -scale * 1.5, scale * 2.5, 0.0]  # ties round to even
        expected = quantize(values, scale, zero_point, dtype)
        got = quantizer(values)
        assert got.dtype == np.dtype(dtype)
        assert np.array_equal(got, expected)


def test_the_buffered_quantizer_refuses_a_tensor_that_is_not_quantized() -> None:
    with pytest.raises(ValueError, match="not a quantized"):
        Quantizer((2,), 0.0, 0, np.int8)
    with pytest.raises(ValueError, match="not a quantized"):
        Quantizer((2,), 0.5, 0, np.float32)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32])
def test_dequantize_is_exact_for_every_integer_width(dtype: type) -> None:
    info = np.iinfo(dtype)
    low, high = max(info.min, -70_000), min(info.max, 70_000)
    values: np.ndarray = np.linspace(low, high, 257).astype(dtype)
    zero_point = int(low // 2 + high // 2) // 3
    got = dequantize(values, 0.0078125, zero_point)  # a power of two: the product is exact
    expected = (values.astype(np.float64) - zero_point) * 0.0078125
    assert got.dtype == np.float32
    assert np.array_equal(got, expected.astype(np.float32))

import numpy as np
import pytest

from edge_agent.quant import check_params, dequantize, quantize


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

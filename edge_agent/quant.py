"""Pure quantization maths: real values <-> the integers a model's tensors hold."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def quantize(
    values: npt.ArrayLike, scale: float, zero_point: int, dtype: npt.DTypeLike
) -> np.ndarray:
    """q = round(x / scale) + zero_point, clipped to the range of ``dtype``.

    A scale of 0 means the tensor is not quantized: values are cast as they are.
    """
    target = np.dtype(dtype)
    array = np.asarray(values, dtype=np.float32)
    if scale == 0.0:
        return array.astype(target)
    if target.kind not in "iu":
        raise ValueError(f"cannot quantize to non-integer dtype {target}")
    info = np.iinfo(target)
    scaled = np.round(array / np.float32(scale)) + zero_point
    return np.asarray(np.clip(scaled, info.min, info.max).astype(target))


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """x = (q - zero_point) * scale, as float32; a scale of 0 casts only."""
    if scale == 0.0:
        return np.asarray(values).astype(np.float32)
    shifted = np.asarray(values).astype(np.int32) - zero_point
    return shifted.astype(np.float32) * np.float32(scale)


def check_params(scale: float, zero_point: int, dtype: npt.DTypeLike) -> str | None:
    """Why these quantization parameters are unusable, or None when they are fine."""
    target = np.dtype(dtype)
    if not np.isfinite(scale) or scale < 0:
        return f"scale {scale} is not a finite non-negative number"
    if scale == 0.0 or target.kind not in "iu":
        return None
    info = np.iinfo(target)
    if not info.min <= zero_point <= info.max:
        return f"zero point {zero_point} is outside the range of {target}"
    return None

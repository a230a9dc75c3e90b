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


class Quantizer:
    """`quantize` for one tensor, into buffers allocated once: a sensor window is a
    few hundred values, where numpy's per-call overhead and fresh arrays cost more
    than the arithmetic. Gives exactly what `quantize` gives. The returned array is
    reused by the next call: copy it (set_tensor does) before calling again."""

    def __init__(
        self, shape: tuple[int, ...], scale: float, zero_point: int, dtype: npt.DTypeLike
    ) -> None:
        target = np.dtype(dtype)
        if target.kind not in "iu" or scale == 0.0:
            raise ValueError(f"not a quantized integer tensor: {target}, scale {scale}")
        info = np.iinfo(target)
        self._scale = np.float32(scale)
        self._zero_point = np.float32(zero_point)
        self._low, self._high = np.float32(info.min), np.float32(info.max)
        self._work = np.empty(shape, dtype=np.float32)
        self._out = np.empty(shape, dtype=target)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """`values` (any real dtype) of this tensor's shape, quantized."""
        if values.dtype != np.float32:
            values = values.astype(np.float32)  # as `quantize` does, before dividing
        work = self._work
        np.divide(values, self._scale, out=work)
        np.rint(work, out=work)  # round half to even, as np.round
        np.add(work, self._zero_point, out=work)
        np.maximum(work, self._low, out=work)
        np.minimum(work, self._high, out=work)
        np.copyto(self._out, work, casting="unsafe")
        return self._out


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """x = (q - zero_point) * scale, as float32; a scale of 0 casts only."""
    if scale == 0.0:
        return np.asarray(values).astype(np.float32)
    values = np.asarray(values)
    if values.dtype.itemsize <= 2:  # exact in float32 either way: one op fewer
        return (values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
    shifted = values.astype(np.int32) - zero_point
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

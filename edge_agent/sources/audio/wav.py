"""WAV files in, mono int16 at the model's rate out.

The stdlib `wave` module reads integer PCM (8/16/24/32-bit). It refuses IEEE
float and WAVE_FORMAT_EXTENSIBLE headers (Python < 3.12), which many recorders
write, so those fall back to a small RIFF chunk walker here. Everything that
cannot be read (compressed formats, truncated data, garbage) is an InputError
naming the file and the reason; nothing else escapes.

Resampling is band-limited interpolation: each output sample is a Kaiser-windowed
sinc sum over the input samples around its position, with the cutoff lowered to
the new Nyquist frequency when downsampling (the anti-alias filter), computed in
blocks so memory stays bounded for long files.
"""

from __future__ import annotations

import io
import math
import struct
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.errors import InputError

PCM, IEEE_FLOAT, EXTENSIBLE = 1, 3, 0xFFFE
_ZERO_CROSSINGS = 16  # sinc lobes each side: about 80 dB stop band with the Kaiser window
_KAISER_BETA = 8.6
_ROLLOFF = 0.94  # the pass band ends at 94% of the lower Nyquist frequency
_BLOCK = 8192  # output samples per resampling block


@dataclass(frozen=True)
class WavInfo:
    """What a file held before conversion, for log lines and tests."""

    rate: int
    channels: int
    width: int  # bytes per sample
    fmt: str  # "pcm" or "float"
    frames: int


def read_wav(path: str | Path, rate: int = 16000) -> tuple[np.ndarray, WavInfo]:
    """Mono int16 samples at `rate` Hz, and what the file held; InputError otherwise."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    try:
        mono, info = decode_wav(data)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from exc
    return resample(mono, info.rate, rate), info


def decode_wav(data: bytes) -> tuple[np.ndarray, WavInfo]:
    """The file's samples mixed to mono int16, at its own rate."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InputError(f"not a WAV file: {len(data)} bytes starting {data[:12]!r}")
    try:
        with wave.open(io.BytesIO(data)) as reader:
            info, frames = _read_with_wave(reader)
    except wave.Error as exc:
        if "unknown format" not in str(exc):
            raise InputError(f"corrupt WAV header: {exc}") from exc
        info, frames = _read_chunks(data)
    except (EOFError, struct.error) as exc:
        raise InputError(f"truncated WAV header: {exc or 'file ends early'}") from exc
    if info.rate <= 0 or info.channels <= 0:
        raise InputError(f"bad WAV header: {info.rate} Hz, {info.channels} channels")
    return _to_mono16(frames, info), info


def _read_with_wave(reader: wave.Wave_read) -> tuple[WavInfo, bytes]:
    channels, width, rate, declared = (
        reader.getnchannels(),
        reader.getsampwidth(),
        reader.getframerate(),
        reader.getnframes(),
    )
    frames = reader.readframes(declared)
    info = WavInfo(rate, channels, width, "pcm", len(frames) // max(1, channels * width))
    if info.frames < declared and not _unknown_length(declared, channels * width):
        raise InputError(
            f"truncated: the header says {declared} frames, the file holds {info.frames}"
        )
    return info, frames


def _unknown_length(declared: int, unit: int) -> bool:
    """A size a recorder writes when it streams to a pipe and cannot seek back to fix
    the header (arecord, ffmpeg): read to the end of the file instead."""
    return declared == 0 or declared >= 0x7FFFFFFF // max(1, unit)


def _read_chunks(data: bytes) -> tuple[WavInfo, bytes]:
    """fmt and data chunks of a float or WAVE_FORMAT_EXTENSIBLE file."""
    fmt: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        tag, size = struct.unpack_from("<4sI", data, pos)
        body = data[pos + 8 : pos + 8 + size]
        if tag == b"fmt ":
            fmt = body
        elif tag == b"data":
            if fmt is None:
                raise InputError("data chunk before the fmt chunk")
            if len(body) < size and not _unknown_length(size, 1):
                raise InputError(f"truncated: the data chunk says {size} bytes, has {len(body)}")
            return _format(fmt, len(body)), body
        pos += 8 + size + (size & 1)  # chunks are padded to even sizes
    raise InputError("no fmt or data chunk (truncated?)")


def _format(fmt: bytes, data_size: int) -> WavInfo:
    if len(fmt) < 16:
        raise InputError(f"fmt chunk of {len(fmt)} bytes is too short")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == EXTENSIBLE and len(fmt) >= 26:
        (tag,) = struct.unpack_from("<H", fmt, 24)  # the sub-format GUID's first field
    if tag not in (PCM, IEEE_FLOAT):
        raise InputError(
            f"compressed WAV format 0x{tag:04x} is not supported: convert it to 16-bit PCM "
            "(e.g. sox IN.wav -b 16 -e signed-integer OUT.wav)"
        )
    width = bits // 8
    kind = "float" if tag == IEEE_FLOAT else "pcm"
    widths = (4, 8) if kind == "float" else (1, 2, 3, 4)
    if bits % 8 or width not in widths:
        raise InputError(f"unsupported sample format: {bits}-bit {kind}")
    return WavInfo(rate, channels, width, kind, data_size // max(1, channels * width))


def _to_mono16(frames: bytes, info: WavInfo) -> np.ndarray:
    """Interleaved samples of any supported width as mono int16 (channels averaged)."""
    usable = info.frames * info.channels * info.width
    raw = np.frombuffer(frames, dtype=np.uint8, count=usable)
    if info.fmt == "float":
        floats = raw.view("<f4" if info.width == 4 else "<f8").astype(np.float64)
        if not np.all(np.isfinite(floats)):
            raise InputError("float samples contain NaN or infinity")
        values = np.clip(floats, -1.0, 1.0) * 32767.0
    else:
        values = _ints(raw, info.width).astype(np.float64)
    values = values.reshape(-1, info.channels)
    mono = values[:, 0] if info.channels == 1 else values.mean(axis=1)
    return np.asarray(np.clip(np.rint(mono), -32768, 32767).astype(np.int16))


def _ints(raw: np.ndarray, width: int) -> np.ndarray:
    """Little-endian integer samples scaled to the int16 range (as float64 later)."""
    if width == 1:  # 8-bit WAV is unsigned
        return (raw.astype(np.int32) - 128) * 256
    if width == 2:
        return raw.view("<i2")
    if width == 3:
        triples = raw.reshape(-1, 3).astype(np.int32)
        value = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value / 256.0
    if width == 4:
        return raw.view("<i4") / 65536.0
    raise InputError(f"unsupported sample width: {width * 8}-bit integer")


def resample(samples: np.ndarray, source: int, target: int) -> np.ndarray:
    """int16 samples from `source` Hz to `target` Hz (windowed-sinc, see the module doc)."""
    if source == target or samples.size == 0:
        return samples
    if source <= 0 or target <= 0:
        raise InputError(f"cannot resample {source} Hz to {target} Hz")
    step = source / target  # input samples per output sample
    cutoff = 0.5 * min(1.0, 1.0 / step) * _ROLLOFF  # cycles per input sample
    half = math.ceil(_ZERO_CROSSINGS / (2.0 * cutoff))
    signal = np.pad(samples.astype(np.float64), half)
    count = samples.size * target // source
    out = np.empty(count, dtype=np.float64)
    offsets = np.arange(-half + 1, half + 1)
    for start in range(0, count, _BLOCK):
        positions = np.arange(start, min(count, start + _BLOCK)) * step
        base = np.floor(positions).astype(np.int64)
        taps = base[:, None] + offsets[None, :]  # input indexes around each position
        distance = positions[:, None] - taps
        out[start : start + base.size] = np.sum(
            signal[taps + half] * _kernel(distance, cutoff, half), axis=1
        )
    return np.asarray(np.clip(np.rint(out), -32768, 32767).astype(np.int16))


def _kernel(distance: np.ndarray, cutoff: float, half: int) -> np.ndarray:
    """The low-pass interpolation kernel at `distance` input samples."""
    ratio = np.clip(distance / half, -1.0, 1.0)
    window = np.i0(_KAISER_BETA * np.sqrt(1.0 - ratio * ratio)) / np.i0(_KAISER_BETA)
    return 2.0 * cutoff * np.sinc(2.0 * cutoff * distance) * window

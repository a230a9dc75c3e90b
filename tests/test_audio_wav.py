"""WAV reading: widths, channels and rates converted; what cannot be read refused clearly."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import InputError
from edge_agent.sources.audio.wav import read_wav, resample

from .conftest import FIXTURES

AUDIO = FIXTURES / "audio"


def write_pcm(path: Path, samples: np.ndarray, rate: int, width: int) -> Path:
    """Integer PCM via the stdlib: `samples` is [frames, channels] already in the width's range."""
    frames = np.atleast_2d(samples.T).T
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(frames.shape[1])
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(_pack(frames.reshape(-1), width))
    return path


def _pack(values: np.ndarray, width: int) -> bytes:
    if width == 1:
        return (values + 128).astype(np.uint8).tobytes()
    if width == 3:
        as32 = values.astype("<i4").view(np.uint8).reshape(-1, 4)
        return as32[:, :3].tobytes()
    return values.astype(f"<i{width}").tobytes()


def write_riff(path: Path, fmt_tag: int, channels: int, rate: int, bits: int, data: bytes) -> Path:
    """A WAV with any format tag (the stdlib writes integer PCM only)."""
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def test_16_bit_mono_at_16_khz_is_read_unchanged() -> None:
    path = AUDIO / "okay_nabu_2.wav"
    with wave.open(str(path)) as reader:
        expected = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    samples, info = read_wav(path)
    assert (info.rate, info.channels, info.width) == (16000, 1, 2)
    assert samples.dtype == np.int16
    np.testing.assert_array_equal(samples, expected)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_integer_widths_scale_to_16_bit(tmp_path: Path, width: int) -> None:
    full_scale = 1 << (8 * width - 1)
    wave16 = np.array([0, 16384, -16384, 32767, -32768, 1000, -1000], dtype=np.int64)
    stored = wave16 * full_scale // 32768
    samples, info = read_wav(write_pcm(tmp_path / "x.wav", stored, 16000, width))
    assert info.width == width
    step = max(1, 32768 // full_scale)  # 8-bit keeps only the top 8 bits
    np.testing.assert_allclose(samples, wave16, atol=step)


def test_float32_is_converted(tmp_path: Path) -> None:
    values = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0], dtype="<f4")  # 2.0 clips
    path = write_riff(tmp_path / "f.wav", 3, 1, 16000, 32, values.tobytes())
    samples, info = read_wav(path)
    assert info.fmt == "float"
    np.testing.assert_array_equal(samples, [0, 16384, -16384, 32767, -32767, 32767])


def test_extensible_pcm_is_read(tmp_path: Path) -> None:
    values = np.array([1, -2, 300], dtype="<i2")
    fmt = struct.pack("<HHIIHH", 0xFFFE, 1, 16000, 32000, 2, 16)
    fmt += struct.pack("<HHI", 22, 16, 4) + struct.pack("<H", 1) + bytes(14)  # sub-format PCM
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", 6) + values.tobytes()
    path = tmp_path / "ext.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    samples, _ = read_wav(path)
    np.testing.assert_array_equal(samples, values)


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    left = np.array([1000, 2000, -3000, 400], dtype=np.int64)
    right = np.array([3000, -2000, -1000, 400], dtype=np.int64)
    samples, info = read_wav(write_pcm(tmp_path / "s.wav", np.stack([left, right], 1), 16000, 2))
    assert info.channels == 2
    np.testing.assert_array_equal(samples, (left + right) // 2)


def test_resampling_keeps_a_tone_and_removes_what_would_alias(tmp_path: Path) -> None:
    rate = 48000
    audible, alias = tone(440, rate, 1.0), tone(10000, rate, 1.0)  # 10 kHz > 8 kHz Nyquist
    both = np.round((audible + alias) * 0.5 * 32767).astype(np.int64)
    samples, info = read_wav(write_pcm(tmp_path / "48k.wav", both, rate, 2))
    assert info.rate == rate
    assert samples.size == 16000
    spectrum = np.abs(np.fft.rfft(samples[1000:-1000] * np.hanning(14000)))
    freqs = np.fft.rfftfreq(14000, 1 / 16000)
    peak = freqs[np.argmax(spectrum)]
    assert abs(peak - 440) < 2
    folded = spectrum[np.abs(freqs - 6000) < 50].max()  # 10 kHz folds to 6 kHz at 16 kHz
    assert folded < spectrum.max() * 1e-3  # more than 60 dB down


def test_upsampling_from_8_khz_keeps_the_tone() -> None:
    low = np.round(tone(1000, 8000, 0.5) * 20000).astype(np.int16)
    high = resample(low, 8000, 16000)
    assert high.size == 8000
    expected = tone(1000, 16000, 0.5) * 20000
    # interior only: the filter's edges see zeros beyond the ends
    np.testing.assert_allclose(high[200:-200], expected[200:-200], atol=600)


def test_compressed_format_is_refused_naming_file_and_reason(tmp_path: Path) -> None:
    path = write_riff(tmp_path / "alaw.wav", 6, 1, 8000, 8, bytes(100))
    with pytest.raises(InputError, match=r"alaw\.wav: compressed WAV format 0x0006"):
        read_wav(path)


def test_truncated_data_is_refused(tmp_path: Path) -> None:
    whole = (AUDIO / "computer.wav").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=r"cut\.wav: truncated: the header says 48000 frames"):
        read_wav(cut)


def test_truncated_float_data_is_refused(tmp_path: Path) -> None:
    path = write_riff(tmp_path / "f.wav", 3, 1, 16000, 32, bytes(400))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match=r"truncated: the data chunk says 400 bytes, has 300"):
        read_wav(path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a WAV file"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "truncated WAV header|corrupt WAV header"),
        (b"<html>login</html>", "not a WAV file"),
        (b"RIFF\x24\x00\x00\x00WAVEdata\x00\x00\x00\x00", "corrupt WAV header"),
    ],
)
def test_garbage_is_refused_never_a_crash(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(InputError, match=reason):
        read_wav(path)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.wav: cannot read"):
        read_wav(tmp_path / "nope.wav")

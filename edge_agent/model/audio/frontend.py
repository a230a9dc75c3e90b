"""Audio frontends: int16 samples in, one row of 40 features per 10 ms step out.

`micro` is the TensorFlow Lite Micro audio frontend that microWakeWord models are
trained on (30 ms window, 10 ms step, 40 channels from 125 to 7500 Hz, noise
reduction, PCAN gain control, log scale), computed by the `pymicro-features`
package rather than reimplemented: its output is what the models expect, to the
bit. `logmel` is a plain numpy log-mel spectrogram for models trained on that.

Features come out as float32; `Model.infer` quantizes them with the model's own
input scale and zero point. Both frontends keep the samples that do not yet fill
a step, so any chunking of the same audio gives the same features.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from edge_agent.errors import ConfigError

FrontendKind = Literal["micro", "logmel"]
RATE = 16000
CHANNELS = 40
STEP_MS = 10
WINDOW_MS = 30


@dataclass(frozen=True)
class FrontendOptions:
    kind: FrontendKind = "micro"
    channels: int = CHANNELS  # logmel only: micro is fixed at 40
    lower_hz: float = 125.0
    upper_hz: float = 7500.0


class Frontend(Protocol):
    rate: int
    channels: int
    step: int  # samples per feature row

    def features(self, samples: np.ndarray) -> np.ndarray:
        """[rows, channels] float32 for the steps these samples complete (maybe none)."""
        ...

    def reset(self) -> None:
        """Forget buffered samples and adaptive state: a new stream starts."""
        ...


def make_frontend(options: FrontendOptions) -> Frontend:
    if options.kind == "micro":
        if options.channels != CHANNELS:
            raise ConfigError(
                f"frontend: micro computes {CHANNELS} channels, not {options.channels}"
            )
        return MicroFrontend()
    if options.kind == "logmel":
        return LogMelFrontend(options)
    raise ConfigError(f"frontend: unknown kind {options.kind!r}; choose micro or logmel")


def _micro_module() -> Any:
    try:
        return importlib.import_module("pymicro_features")
    except ImportError as exc:
        raise ConfigError(
            "the micro audio frontend needs pymicro-features: pip install 'edge-agent[audio]'"
        ) from exc


class MicroFrontend:
    """pymicro-features' TFLite Micro frontend, fed exactly 10 ms per call."""

    rate = RATE
    channels = CHANNELS
    step = RATE * STEP_MS // 1000

    def __init__(self) -> None:
        self._impl = _micro_module().MicroFrontend()
        self._pending = b""  # samples short of a step, as little-endian bytes

    def features(self, samples: np.ndarray) -> np.ndarray:
        data = self._pending + np.asarray(samples, dtype="<i2").tobytes()
        step_bytes = 2 * self.step
        usable = len(data) - len(data) % step_bytes
        rows = []
        for start in range(0, usable, step_bytes):
            out = self._impl.process_samples(data[start : start + step_bytes])
            if out.features:  # empty until the first 30 ms window is full
                rows.append(out.features)
        self._pending = data[usable:]
        if not rows:
            return np.empty((0, CHANNELS), dtype=np.float32)
        return np.asarray(rows, dtype=np.float32)

    def reset(self) -> None:
        self._impl.reset()
        self._pending = b""


class LogMelFrontend:
    """log(mel power + 1e-6) of Hann-windowed 30 ms frames every 10 ms, HTK mel scale.
    Emits its first row when the first window is full, like the micro frontend."""

    rate = RATE
    step = RATE * STEP_MS // 1000

    def __init__(self, options: FrontendOptions) -> None:
        if not 0 <= options.lower_hz < options.upper_hz <= RATE / 2 or options.channels < 1:
            raise ConfigError("frontend: need 0 <= lower_hz < upper_hz <= 8000 and channels >= 1")
        self.channels = options.channels
        self._window = RATE * WINDOW_MS // 1000
        self._fft = 1 << (self._window - 1).bit_length()
        self._hann = np.hanning(self._window).astype(np.float32)
        self._mel = mel_matrix(self.channels, self._fft, options.lower_hz, options.upper_hz)
        self._buffer = np.empty(0, dtype=np.float32)

    def features(self, samples: np.ndarray) -> np.ndarray:
        buffer = np.concatenate([self._buffer, np.asarray(samples, dtype=np.float32) / 32768.0])
        count = max(0, (buffer.size - self._window) // self.step + 1)
        if count == 0:
            self._buffer = buffer
            return np.empty((0, self.channels), dtype=np.float32)
        starts = np.arange(count) * self.step
        frames = buffer[starts[:, None] + np.arange(self._window)] * self._hann
        power = np.abs(np.fft.rfft(frames, n=self._fft, axis=1)) ** 2
        self._buffer = buffer[count * self.step :]
        return np.asarray(np.log(power @ self._mel + 1e-6), dtype=np.float32)

    def reset(self) -> None:
        self._buffer = np.empty(0, dtype=np.float32)


def mel_matrix(channels: int, fft: int, lower: float, upper: float) -> np.ndarray:
    """[fft//2 + 1, channels] triangular filters evenly spaced on the HTK mel scale."""

    def mel(hz: np.ndarray) -> np.ndarray:
        return np.asarray(2595.0 * np.log10(1.0 + hz / 700.0))

    edges_mel = np.linspace(mel(np.array(lower)), mel(np.array(upper)), channels + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    bins = np.linspace(0.0, RATE / 2, fft // 2 + 1)
    low, mid, high = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - low) / (mid - low)
    falling = (high - bins[:, None]) / (high - mid)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)

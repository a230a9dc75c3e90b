"""The audio frontends: the micro one against pymicro-features itself, the log-mel one
against what a tone must give."""

from __future__ import annotations

import numpy as np
import pymicro_features
import pytest

from edge_agent.errors import ConfigError
from edge_agent.model.audio.frontend import (
    FrontendOptions,
    LogMelFrontend,
    MicroFrontend,
    make_frontend,
)
from edge_agent.model.quant import quantize
from edge_agent.model.runtime import Model
from edge_agent.sources.audio.wav import read_wav

from .conftest import FIXTURES

AUDIO = FIXTURES / "audio"


def reference_features(samples: np.ndarray) -> np.ndarray:
    """pymicro-features driven directly, 10 ms (320 bytes) per call, as its users do."""
    frontend = pymicro_features.MicroFrontend()
    data = samples.astype("<i2").tobytes()
    rows = []
    for start in range(0, len(data) - 319, 320):
        out = frontend.process_samples(data[start : start + 320])
        if out.features:
            rows.append(out.features)
    return np.array(rows, dtype=np.float32)


def chunked(frontend: MicroFrontend | LogMelFrontend, samples: np.ndarray, size: int) -> np.ndarray:
    parts = [frontend.features(samples[i : i + size]) for i in range(0, samples.size, size)]
    return np.concatenate(parts)


@pytest.mark.parametrize("chunk", [160, 1234, 1600, 7])
def test_micro_features_equal_the_library_output_for_any_chunking(chunk: int) -> None:
    samples, _ = read_wav(AUDIO / "okay_nabu_1.wav")
    expected = reference_features(samples)
    got = chunked(MicroFrontend(), samples, chunk)
    assert got.shape == expected.shape == ((samples.size - 320) // 160, 40)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.runtime
def test_quantized_with_the_models_own_scale_and_zero_point(runtime_name: str) -> None:
    model = Model.load(AUDIO / "okay_nabu.tflite", runtime=runtime_name)  # type: ignore[arg-type]
    spec = model.inputs[0]
    samples, _ = read_wav(AUDIO / "okay_nabu_2.wav")
    features = MicroFrontend().features(samples)
    got = quantize(features, spec.scale, spec.zero_point, spec.dtype)
    # pymicro-wakeword's own formula, which the model was validated with
    expected = np.clip(np.round(features / spec.scale + spec.zero_point), -128, 127)
    np.testing.assert_array_equal(got, expected.astype(np.int8))
    assert got.min() == -128  # silence maps to the bottom of the range
    assert got.max() > 0  # speech uses the upper half


def test_reset_starts_over() -> None:
    samples, _ = read_wav(AUDIO / "computer.wav")
    frontend = MicroFrontend()
    first = frontend.features(samples)
    frontend.features(samples[:1000])  # leaves samples pending and state adapted
    frontend.reset()
    np.testing.assert_array_equal(frontend.features(samples), first)


def test_short_input_gives_no_rows_until_a_window_is_full() -> None:
    frontend = MicroFrontend()
    assert frontend.features(np.zeros(479, dtype=np.int16)).shape == (0, 40)
    assert frontend.features(np.zeros(1, dtype=np.int16)).shape == (1, 40)


def test_logmel_peaks_in_the_band_of_a_tone_and_ignores_chunking() -> None:
    t = np.arange(16000) / 16000
    samples = np.round(np.sin(2 * np.pi * 1000 * t) * 10000).astype(np.int16)
    frontend = LogMelFrontend(FrontendOptions(kind="logmel"))
    whole = frontend.features(samples)
    frontend.reset()
    np.testing.assert_allclose(chunked(frontend, samples, 777), whole, rtol=1e-5, atol=1e-5)
    assert whole.shape == (98, 40)
    centres_hz = 700 * (10 ** (np.linspace(*_mel_edges(), 42)[1:-1] / 2595) - 1)
    assert abs(centres_hz[np.argmax(whole[50])] - 1000) < 120


def _mel_edges() -> tuple[float, float]:
    return 2595 * np.log10(1 + 125 / 700), 2595 * np.log10(1 + 7500 / 700)


def test_frontend_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="micro computes 40 channels"):
        make_frontend(FrontendOptions(kind="micro", channels=32))
    with pytest.raises(ConfigError, match="lower_hz < upper_hz"):
        make_frontend(FrontendOptions(kind="logmel", lower_hz=9000))

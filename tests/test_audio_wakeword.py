"""Wake words end to end on the real microWakeWord model and recordings, plus the
policy and the runners' bookkeeping.

okay_nabu_3.wav holds two separate utterances of "okay nabu" (speech at about
0.95-1.6 s and 5.6-6.3 s, silence between): each half alone, in a fresh stream,
is detected. One event per utterance therefore means two events for that file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge_agent.commands.infer_audio import run_file
from edge_agent.errors import InputError, ModelError
from edge_agent.model.audio.streaming import (
    StreamingRunner,
    WakeWordManifest,
    WindowRunner,
    is_stateful,
)
from edge_agent.pipeline.audio.listener import Listener, ListenerOptions, build_listener
from edge_agent.pipeline.audio.policy import WakeWordOptions, WakeWordPolicy
from edge_agent.sources.base import Audio

from .conftest import FIXTURES, HELLO_WORLD

AUDIO = FIXTURES / "audio"
MANIFEST = AUDIO / "okay_nabu.json"
# Utterances per recording, and the stretch of each file (s) the speech is in.
EXPECTED = {
    "okay_nabu_1.wav": [(2.0, 3.7)],
    "okay_nabu_2.wav": [(0.5, 2.0)],
    "okay_nabu_3.wav": [(0.9, 2.5), (5.5, 7.0)],
    "computer.wav": [],
}


@pytest.fixture(scope="module")
def listener(runtime_name: str) -> Listener:
    return build_listener(MANIFEST, ListenerOptions(runtime=runtime_name))  # type: ignore[arg-type]


@pytest.mark.runtime
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_one_event_per_utterance_of_the_wake_word(listener: Listener, name: str) -> None:
    result = run_file(listener, AUDIO / name, stream=hash(name))
    spans = EXPECTED[name]
    assert len(result["detections"]) == len(spans)
    for event, (start, end) in zip(result["detections"], spans, strict=True):
        assert event["word"] == "okay nabu"
        assert event["score"] >= 0.97
        assert start <= event["offset_s"] <= end
    if spans:
        assert result["peak"] >= 0.97
    else:
        assert result["peak"] < 0.9  # far below the cutoff


@pytest.mark.runtime
def test_a_new_stream_resets_the_models_state(listener: Listener) -> None:
    samples = _samples("okay_nabu_2.wav")
    first = [h.output.item() for h in listener.hear(Audio(samples, 16000, 901, 0, "a", 0))]
    second = [h.output.item() for h in listener.hear(Audio(samples, 16000, 902, 0, "a", 0))]
    assert first == second  # a carried-over state would change the second pass
    assert max(first) > 0.97


@pytest.mark.runtime
def test_silence_never_triggers_and_the_rate_is_checked(listener: Listener) -> None:
    silence = np.zeros(16000 * 5, dtype=np.int16)
    heard = listener.hear(Audio(silence, 16000, 903, 0, "silence", 0))
    assert len(heard) == (silence.size - 320) // 160 // 3
    assert not any(h.event for h in heard)
    with pytest.raises(InputError, match="8000 Hz"):
        listener.hear(Audio(silence, 8000, 904, 0, "x", 0))


@pytest.mark.runtime
def test_a_converted_recording_is_still_detected(runtime_name: str, tmp_path: Path) -> None:
    """48 kHz stereo 24-bit, resampled back to 16 kHz by wav.py: the model still hears it."""
    samples = _samples("okay_nabu_2.wav").astype(np.float64)
    t = np.arange(samples.size * 3) / 48000
    up = np.interp(t, np.arange(samples.size) / 16000, samples) * 256
    stereo = np.stack([up, up], axis=1).round().astype("<i4").reshape(-1)
    path = tmp_path / "48k.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(3)
        writer.setframerate(48000)
        writer.writeframes(stereo.view(np.uint8).reshape(-1, 4)[:, :3].tobytes())
    listener = build_listener(MANIFEST, ListenerOptions(runtime=runtime_name))  # type: ignore[arg-type]
    assert len(run_file(listener, path, stream=905)["detections"]) == 1


@pytest.mark.integration
@pytest.mark.runtime
def test_infer_command_prints_one_line_per_file(runtime_name: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes((AUDIO / "computer.wav").read_bytes()[:1000])
    files = [AUDIO / n for n in sorted(EXPECTED)] + [broken]
    command = [sys.executable, "-m", "edge_agent", "infer", "--runtime", runtime_name]
    proc = subprocess.run(
        [*command, "--model", str(MANIFEST), *map(str, files)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode == 4, proc.stderr  # one input failed
    assert f"{broken}: " in proc.stderr
    assert "truncated" in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["input"] for line in lines] == [str(f) for f in files[:-1]]
    for line in lines:
        assert len(line["detections"]) == len(EXPECTED[Path(line["input"]).name])
        assert set(line) >= {"input", "detections", "peak", "latency_ms"}


def _samples(name: str) -> np.ndarray:
    with wave.open(str(AUDIO / name)) as reader:
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").copy()


# --- the manifest ----------------------------------------------------------


def test_manifest_is_read_relative_to_its_file() -> None:
    manifest = WakeWordManifest.read(MANIFEST)
    assert manifest.model == AUDIO / "okay_nabu.tflite"
    assert (manifest.probability_cutoff, manifest.sliding_window_size) == (0.97, 5)
    assert manifest.word == "Okay Nabu"


def _doc(**micro: float) -> dict[str, Any]:
    return {"wake_word": "x", "model": "m.tflite", "micro": micro}


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"wake_word": "x", "model": "m.tflite"}, "missing key 'micro'"),
        (_doc(probability_cutoff=0.5), "sliding_window"),
        (_doc(probability_cutoff=2, sliding_window_size=5), "probability_cutoff must be in"),
        (
            _doc(probability_cutoff=0.5, sliding_window_size=5, feature_step_size=20),
            "feature_step_size 20 ms",
        ),
    ],
)
def test_bad_manifests_name_the_file_and_the_problem(
    tmp_path: Path, doc: dict[str, Any], reason: str
) -> None:
    path = tmp_path / "w.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match=rf"w\.json: not a microWakeWord manifest: .*{reason}"):
        WakeWordManifest.read(path)


def test_a_manifest_that_is_not_json_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text("{nope")
    with pytest.raises(ModelError, match=r"w\.json: cannot read the wake-word manifest"):
        WakeWordManifest.read(path)


def test_stateful_models_are_told_from_stateless_ones() -> None:
    assert is_stateful((AUDIO / "okay_nabu.tflite").read_bytes())
    assert not is_stateful(HELLO_WORLD.read_bytes())


@pytest.mark.runtime
def test_a_model_that_is_not_an_audio_model_is_refused(runtime_name: str) -> None:
    with pytest.raises(ModelError, match=r"is not \[1, frames, features"):
        build_listener(HELLO_WORLD, ListenerOptions(runtime=runtime_name))  # type: ignore[arg-type]


# --- the policy ------------------------------------------------------------


def test_policy_needs_the_mean_of_a_full_window_over_the_cutoff() -> None:
    policy = WakeWordPolicy(WakeWordOptions("hey", probability_cutoff=0.9, sliding_window_size=3))
    assert policy.update(1.0, 0.03) is None  # window not full yet
    assert policy.update(1.0, 0.06) is None
    assert policy.update(0.6, 0.09) is None  # mean 0.867
    assert policy.update(1.0, 0.12) is None  # mean 0.867
    assert policy.update(0.7, 0.15) is None  # mean 0.767
    event = policy.update(1.0, 0.18)  # mean 0.9: the cutoff
    assert event is not None
    assert (event.word, event.offset_s) == ("hey", 0.18)
    assert event.score == pytest.approx(0.9)


def test_refractory_period_gives_one_event_per_utterance() -> None:
    policy = WakeWordPolicy(WakeWordOptions("hey", 0.5, 1, refractory=2.0))
    times = np.arange(0, 6, 0.03)
    events = [e for t in times if (e := policy.update(1.0, float(t))) is not None]
    assert [round(e.offset_s, 2) for e in events] == [0.0, 2.01, 4.02]


def test_reset_forgets_window_refractory_and_peak() -> None:
    policy = WakeWordPolicy(WakeWordOptions("hey", 0.5, 2, refractory=10.0))
    policy.update(1.0, 0.0)
    assert policy.update(1.0, 0.03) is not None
    policy.reset()
    assert policy.peak == 0.0
    assert policy.update(1.0, 0.0) is None  # the window starts empty again
    assert policy.update(1.0, 0.03) is not None  # and no refractory carried over


@pytest.mark.parametrize(
    "kwargs",
    [{"word": ""}, {"word": "x", "probability_cutoff": 0}, {"word": "x", "refractory": -1}],
)
def test_policy_options_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        WakeWordOptions(**kwargs)


def test_policy_refuses_nan() -> None:
    with pytest.raises(ValueError, match="not finite"):
        WakeWordPolicy(WakeWordOptions("x")).update(float("nan"), 0.0)


# --- runners: the bookkeeping around the model (a recording fake model) ---------


class RecordingModel:
    """Stands in for Model in runner unit tests: records what it was fed."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.inputs = (SimpleNamespace(shape=shape),)
        self.label = "fake"
        self.fed: list[np.ndarray] = []

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        self.fed.append(tensor.copy())
        return [np.array([[float(tensor[-1, 0])]])]


def rows(start: int, count: int) -> np.ndarray:
    return np.repeat(np.arange(start, start + count, dtype=np.float32)[:, None], 40, axis=1)


def test_window_runner_feeds_the_last_f_rows_every_hop() -> None:
    model = RecordingModel((1, 49, 40, 1))
    runner = WindowRunner(model, hop=10)  # type: ignore[arg-type]
    results = runner.push(rows(0, 30)) + runner.push(rows(30, 200))
    assert [frames for frames, _ in results] == list(range(49, 231, 10))
    for (frames, _), fed in zip(results, model.fed, strict=True):
        np.testing.assert_array_equal(fed[:, 0], np.arange(frames - 49, frames))
    runner.reset()
    assert runner.push(rows(0, 48)) == []


def test_streaming_runner_feeds_each_row_once_and_reloads_on_reset() -> None:
    loads: list[RecordingModel] = []

    def load() -> Any:
        loads.append(RecordingModel((1, 3, 40)))
        return loads[-1]

    runner = StreamingRunner(load)
    results = runner.push(rows(0, 7)) + runner.push(rows(7, 2))
    assert [frames for frames, _ in results] == [3, 6, 9]
    np.testing.assert_array_equal(np.concatenate(loads[0].fed)[:, 0], np.arange(9))
    runner.push(rows(9, 1))  # one row pending ...
    runner.reset()  # ... is dropped with the old stream
    assert len(loads) == 2
    assert [f for f, _ in runner.push(rows(0, 3))] == [3]

"""`edge-agent run` on an audio pipeline: the microWakeWord "okay nabu" model, WAV
recordings as the source, a real mosquitto; one event per utterance."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .broker import Mosquitto
from .conftest import FIXTURES
from .subscriber import Subscriber
from .test_daemon import run

pytestmark = [pytest.mark.integration, pytest.mark.runtime]

AUDIO = FIXTURES / "audio"

CONFIG = """
device_id = "hall"
state_dir = "{state}"

[mqtt]
host = "127.0.0.1"
port = {port}

[[pipelines]]
name = "voice"
model = "{model}"

[pipelines.source]
kind = "audio"
pattern = "{recordings}/*.wav"

[pipelines.policy]
kind = "{policy}"
"""


def write_config(
    tmp_path: Path, port: int, files: list[str], *, model: Path, policy: str = "wakeword"
) -> Path:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for name in files:
        shutil.copy(AUDIO / name, recordings / name)
    path = tmp_path / "config.toml"
    text = CONFIG.format(
        state=tmp_path / "state", port=port, model=model, recordings=recordings, policy=policy
    )
    path.write_text(text, encoding="utf-8")
    return path


def test_each_utterance_of_the_wake_word_is_one_event(broker: Mosquitto, tmp_path: Path) -> None:
    files = ["computer.wav", "okay_nabu_1.wav", "okay_nabu_2.wav", "okay_nabu_3.wav"]
    config = write_config(tmp_path, broker.port, files, model=AUDIO / "okay_nabu.json")
    sub = Subscriber(broker.port, "edge/hall/#")
    done = run("run", "--config", config, "--exit-when-done")
    assert done.returncode == 0, done.stderr
    sub.wait_for(lambda s: any(m.json()["inferences"] > 0 for m in s.on("/voice/state")))
    events = [m.json() for m in sub.on("/voice/event")]
    # computer.wav: none; okay_nabu_1 and _2: one each; okay_nabu_3 holds two utterances.
    assert len(events) == 4, events
    assert {e["decision"] for e in events} == {"okay nabu"}
    assert [e["word"] for e in events] == ["okay nabu"] * 4
    assert [e["reason"] for e in events] == ["detected"] * 4
    assert all(e["score"] >= 0.97 for e in events)  # the manifest's cutoff
    assert [e["previous"] for e in events] == [None, "okay nabu", "okay nabu", "okay nabu"]
    offsets = [e["offset_s"] for e in events]
    assert all(0 < o < 10 for o in offsets)
    assert offsets[3] > offsets[2]  # the second utterance of the third file comes later
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    state = sub.on("/voice/state")[-1].json()
    assert state["state"] == "okay nabu"
    assert state["events"] == 4
    assert state["bytes_in"] == sum((AUDIO / f).stat().st_size for f in files)
    sub.close()


def test_a_streaming_model_under_a_classification_policy_is_refused(
    broker: Mosquitto, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        broker.port,
        ["computer.wav"],
        model=AUDIO / "okay_nabu.tflite",
        policy="classification",
    )
    done = run("run", "--config", config, "--exit-when-done")
    assert done.returncode == 78, done.stderr
    assert "pipelines.voice.policy" in done.stderr
    assert "streaming audio model" in done.stderr
    assert "'wakeword'" in done.stderr

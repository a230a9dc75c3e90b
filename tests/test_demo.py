"""`edge-agent demo`, the README's main command, as a user runs it."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import DEMO_MODELS, PROJECT

pytestmark = pytest.mark.integration

DETECTOR = DEMO_MODELS / "shapes_yolov8_int8.tflite"


def demo(*args: str | Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "demo", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def output() -> str:
    return demo()


def test_demo_shows_decisions_arriving_over_mqtt(output: str) -> None:
    camera = re.findall(r"edge/demo/camera/event\s+seq=\d+\s+(\S+) -> (\S+)", output)
    assert camera == [
        ("None", "empty"),
        ("empty", "circle"),
        ("circle", "empty"),
        ("empty", "square"),
    ]
    vibration = re.findall(r"edge/demo/vibration/event\s+seq=\d+\s+(\S+) -> (\S+)", output)
    assert vibration == [("None", "normal"), ("normal", "anomaly"), ("anomaly", "normal")]
    rows = dict(re.findall(r"^\s+(camera|vibration|voice)\s+(\d+)", output, re.MULTILINE))
    # voice: 5 s of audio (computer.wav 3 s, okay_nabu_2.wav 2 s) in 100 ms chunks
    assert rows == {"camera": "40", "vibration": "49", "voice": "50"}
    events = re.findall(r"^\s+\w+\s+\d+\s+\d+\s+(\d+)\s", output, re.MULTILINE)
    assert f"events received by the subscriber: {sum(map(int, events))}" in output


def test_demo_hears_the_wake_word_once(output: str) -> None:
    voice = re.findall(r"edge/demo/voice/event\s+seq=(\d+)\s+(\S+) -> (.+?)  \(", output)
    assert voice == [("1", "None", "okay nabu")]  # okay_nabu_2.wav; computer.wav: nothing
    heard = re.findall(r"heard 'okay nabu' at (\d+\.\d+) s", output)
    assert len(heard) == 1
    assert 0.5 < float(heard[0]) < 2.0  # within the 2 s recording


@pytest.mark.skipif(not DETECTOR.is_file(), reason=f"{DETECTOR.name} is not bundled yet")
def test_demo_shows_zone_and_line_decisions(output: str) -> None:
    # models/README.md: the square enters lower_left and leaves it; the circle never
    # enters it and crosses the middle line once, left to right; the square never does.
    assert re.search(r"edge/demo/shapes/event\s+seq=1\s+None -> none", output)
    assert "entered lower_left: square" in output
    assert "left lower_left: square" in output
    assert "lower_left: circle" not in output
    crossed = re.findall(r"crossed middle (\S+): (\w+) #\d+ \(total (\d+)\)", output)
    assert crossed == [("left_to_right", "circle", "1")]
    assert re.search(r"^\s+shapes\s+50\s+50\s", output, re.MULTILINE)


def test_a_models_directory_without_the_detector_still_runs_the_rest(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "samples").mkdir(parents=True)
    for name in ("shapes_int8.tflite", "shapes_labels.txt", "vibration_int8.tflite"):
        (models / name).write_bytes((DEMO_MODELS / name).read_bytes())
    for folder in ("samples/camera", "audio"):
        (models / folder).symlink_to(DEMO_MODELS / folder)
    (models / "samples/vibration.csv").symlink_to(DEMO_MODELS / "samples/vibration.csv")
    output = demo("--models", models)
    assert "edge/demo/shapes" not in output
    assert "edge/demo/voice/event" in output

"""`edge-agent demo`, the README's main command, as a user runs it."""

import re
import subprocess
import sys

import pytest

from .conftest import PROJECT

pytestmark = pytest.mark.integration


def test_demo_shows_decisions_arriving_over_mqtt() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    camera = re.findall(r"edge/demo/camera/event\s+seq=\d+\s+(\S+) -> (\S+)", done.stdout)
    assert camera == [
        ("None", "empty"),
        ("empty", "circle"),
        ("circle", "empty"),
        ("empty", "square"),
    ]
    vibration = re.findall(r"edge/demo/vibration/event\s+seq=\d+\s+(\S+) -> (\S+)", done.stdout)
    assert vibration == [("None", "normal"), ("normal", "anomaly"), ("anomaly", "normal")]
    assert "events received by the subscriber: 7" in done.stdout
    rows = dict(re.findall(r"^\s+(camera|vibration)\s+(\d+)", done.stdout, re.MULTILINE))
    assert rows == {"camera": "40", "vibration": "49"}
    assert "Traceback" not in done.stderr

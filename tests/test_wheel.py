"""The wheel is the product: built from the checkout, installed into a fresh virtualenv
outside it, `edge-agent demo` runs there on the models the wheel carries."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PROJECT

pytestmark = pytest.mark.integration


def test_the_wheel_carries_the_demo_and_runs_it(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(PROJECT)],
        check=True,
        timeout=240,
        capture_output=True,
    )
    (wheel,) = wheels.glob("edge_agent-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        timeout=240,
        capture_output=True,
    )
    # The dependencies (numpy, LiteRT, paho...) from this test run's environment, so
    # the test needs no network; a .pth there is not processed, so this environment's
    # editable edge_agent stays out and the wheel's own is the one imported.
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    where = subprocess.run(
        [str(python), "-c", "import edge_agent; print(edge_agent.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(purelib), where  # the wheel's package, not the checkout's
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    done = subprocess.run(
        [str(venv / "bin" / "edge-agent"), "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,  # not the checkout: models/ must come from the wheel
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "decisions arriving over MQTT" in done.stdout
    assert "events received by the subscriber" in done.stdout
    assert "edge/demo/voice/event" in done.stdout  # models/audio travelled in the wheel

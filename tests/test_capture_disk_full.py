"""A disk that fills while capturing: the daemon keeps deciding, capture stops and
says so. The full disk is RLIMIT_FSIZE in the daemon's process (no root needed):
writing a file past the limit fails with EFBIG, as a full disk fails with ENOSPC.
The limit is per file, so events go at QoS 0 (the outbox's WAL stays small)."""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .broker import Mosquitto
from .conftest import DEMO_MODELS, FIXTURE_IMAGES
from .subscriber import Subscriber

pytestmark = [pytest.mark.integration, pytest.mark.runtime]

LIMIT = 64 * 1024  # a shapes frame (6 kB) fits, the 720p cat (105 kB) does not
SHAPES = DEMO_MODELS / "shapes_int8.tflite"


def limited_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_capture_stops_on_a_full_disk_and_the_daemon_keeps_deciding(
    broker: Mosquitto, tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    camera = sorted((DEMO_MODELS / "samples" / "camera").glob("*.jpg"))
    order = [*camera[:3], FIXTURE_IMAGES / "cat_720p.jpg", *camera[3:8]]
    for i, frame in enumerate(order):
        shutil.copy(frame, frames / f"{i:03d}.jpg")
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
device_id = "dev1"
state_dir = "{state}"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
qos = 0
[[pipelines]]
name = "cam"
model = "{SHAPES}"
labels = "{DEMO_MODELS / "shapes_labels.txt"}"
source = {{ kind = "files", pattern = "{frames}/*.jpg" }}
policy = {{ kind = "classification", threshold = 0.5, default_state = "empty" }}
drift = {{ enabled = false }}
capture = {{ enabled = true, every = 1, per_hour = 1000 }}
""",
        encoding="utf-8",
    )
    sub = Subscriber(broker.port, "edge/dev1/cam/state")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edge_agent", "run", "--exit-when-done", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=limited_files,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        sub.wait_for(lambda s: any(m.json()["inferences"] == 9 for m in s.messages))
    finally:
        sub.close()
    assert "samples: capture stopped" in done.stderr
    assert "pipelines keep deciding" in done.stderr
    kept = sorted(p.name for p in (state / "samples").iterdir())
    assert len(kept) == 6  # the three frames before the cat: input + sidecar each
    assert {p.rsplit(".", 1)[1] for p in kept} == {"jpg", "json"}
    last = [m.json() for m in sub.messages][-1]
    assert last["errors"] == 0  # every frame was decided

"""`edge-agent run` as systemd would run it: a process, a config file, signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .broker import Mosquitto, free_port
from .conftest import DEMO_MODELS, PROJECT
from .subscriber import Subscriber

pytestmark = pytest.mark.integration

CONFIG = """
device_id = "dev1"
state_dir = "{state}"

[mqtt]
host = "127.0.0.1"
port = {port}
keepalive = 5
password = "hunter2"

[[pipelines]]
name = "cam"
model = "{models}/shapes_int8.tflite"
labels = "{models}/shapes_labels.txt"

[pipelines.source]
kind = "files"
pattern = "{models}/samples/camera/*.jpg"
loop = true
fps = 20

[pipelines.policy]
kind = "classification"
threshold = 0.6
debounce = 2
"""


def write_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    text = CONFIG.format(state=tmp_path / "state", port=port, models=DEMO_MODELS)
    path.write_text(text + extra, encoding="utf-8")
    return path


def start(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
    )


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT,
        check=False,
    )


def test_last_will_says_offline_when_the_agent_is_killed(broker: Mosquitto, tmp_path: Path) -> None:
    sub = Subscriber(broker.port, "edge/dev1/status")
    config = write_config(tmp_path, broker.port)
    # Without a will delay (the default 30 s is tested in test_fleet_device.py).
    config.write_text(
        config.read_text().replace("keepalive = 5\n", "keepalive = 5\nwill_delay = 0\n")
    )
    agent = start("run", "--config", config)
    try:
        sub.wait_for(lambda s: any(m.payload == b"online" for m in s.messages))
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        killed = time.monotonic()
        sub.wait_for(lambda s: s.messages[-1].payload == b"offline", timeout=15)
        assert time.monotonic() - killed < 2 * 5  # within 2x keepalive
    finally:
        agent.kill()
        sub.close()


def test_sigterm_stops_cleanly_with_offline(broker: Mosquitto, tmp_path: Path) -> None:
    sub = Subscriber(broker.port, "edge/dev1/#")
    agent = start("run", "--config", write_config(tmp_path, broker.port))
    try:
        sub.wait_for(lambda s: len(s.on("/event")) >= 2)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(15) == 0
        sub.wait_for(lambda s: s.on("/status")[-1].payload == b"offline", timeout=5)
    finally:
        agent.kill()
        sub.close()
    assert "Traceback" not in (agent.stderr.read() if agent.stderr else "")


def test_agent_waits_for_a_broker_that_refuses_then_delivers(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker")
    agent = start("run", "--config", write_config(tmp_path, broker.port))
    try:
        time.sleep(3)  # connection refused meanwhile
        assert agent.poll() is None, "the agent must keep running without a broker"
        broker.start()
        sub = Subscriber(broker.port, "edge/dev1/#")
        try:
            sub.wait_for(lambda s: len(s.on("/event")) >= 1, timeout=30)
        finally:
            sub.close()
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(15)
        broker.stop()
    log = agent.stderr.read() if agent.stderr else ""
    assert log.count("cannot reach broker") == 1  # rate-limited: once, not per retry


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("\n[telemetry]\nintervals = 5\n", "telemetry.intervals: unknown key"),
        ("", None),
    ],
)
def test_bad_config_exits_78_naming_the_key(tmp_path: Path, extra: str, key: str | None) -> None:
    config = write_config(tmp_path, free_port(), extra)
    if key is None:  # a bad value rather than an unknown key
        config.write_text(config.read_text().replace("fps = 20", "fps = -1"))
        key = "pipelines.0.source.fps: Input should be greater than or equal to 0"
    done = run("run", "--config", config)
    assert done.returncode == 78
    assert key in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_config_file_exits_78(tmp_path: Path) -> None:
    done = run("run", "--config", tmp_path / "nope.toml")
    assert done.returncode == 78
    assert "nope.toml: no such config file" in done.stderr


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path, 1883)
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"EDGE_AGENT_MQTT__HOST": "broker.example", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)
    assert resolved["mqtt"]["host"] == "broker.example"
    assert resolved["mqtt"]["password"] == "**********"
    assert "hunter2" not in done.stdout


def test_config_schema_is_json_schema() -> None:
    done = run("config", "schema")
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert "pipelines" in schema["properties"]
    assert schema["additionalProperties"] is False


def test_example_config_is_valid(tmp_path: Path) -> None:
    """The example as installed: its models where `make install` puts the bundled ones."""
    text = (PROJECT / "config.example.toml").read_text()
    text = text.replace("/opt/edge-agent/models", str(DEMO_MODELS))
    text = text.replace('"/var/lib/edge-agent"', f'"{tmp_path / "state"}"')
    (tmp_path / "config.toml").write_text(text)
    done = run("config", "check", tmp_path / "config.toml")
    assert done.returncode == 0, done.stderr
    assert [p["name"] for p in json.loads(done.stdout)["pipelines"]] == ["porch", "pump"]


def test_sighup_reloads_what_it_can_and_reports_the_rest(broker: Mosquitto, tmp_path: Path) -> None:
    config = write_config(tmp_path, broker.port)
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
            stdout=out,
            stderr=out,
            cwd=PROJECT,
        )
    sub = Subscriber(broker.port, "edge/dev1/#")
    try:
        sub.wait_for(lambda s: len(s.on("/event")) >= 2)
        text = config.read_text()
        config.write_text(
            text.replace("threshold = 0.6", "threshold = 0.7").replace(
                "keepalive = 5", "keepalive = 9"
            )
        )
        agent.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "need a restart" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        config.write_text("not toml at all [")
        agent.send_signal(signal.SIGHUP)
        while "reload refused" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert agent.poll() is None  # a bad reload never stops the agent
        before = len(sub.on("/event"))
        sub.wait_for(lambda s: len(s.on("/event")) > before)  # and it keeps deciding
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(15) == 0
        sub.close()
    output = log.read_text()
    assert "applied live (pipelines.0.policy.threshold)" in output
    assert "need a restart: mqtt.keepalive" in output


def test_an_environment_override_that_does_not_parse_exits_78(tmp_path: Path) -> None:
    config = write_config(tmp_path, 1883)
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"EDGE_AGENT_RUNTIME": "tflite", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 78
    assert "EDGE_AGENT_RUNTIME__RUNTIME" in done.stderr
    assert "Traceback" not in done.stderr

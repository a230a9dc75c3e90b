"""Faults in configuration and process control (issue #14), against a real
`edge-agent run` process and a real mosquitto: a second agent on the same
state_dir, SIGHUP with a config that is not UTF-8 or whose labels file is gone,
and `config check` refusing what `run` would refuse, with one line and no
traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .broker import Mosquitto
from .conftest import DEMO_MODELS, PROJECT
from .subscriber import Subscriber
from .test_daemon import run, write_config

pytestmark = pytest.mark.integration

SIGTERM_LIMIT = 30.0  # the README's promise


class Agent:
    """A real `edge-agent run`, its output in a file."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
                stdout=out,
                stderr=out,
                cwd=PROJECT,
                env={**os.environ, **(env or {})},
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{self.text()}"
            time.sleep(0.1)

    def terminate_within(self, limit: float = SIGTERM_LIMIT) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(limit)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            pytest.fail(f"SIGTERM not obeyed within {limit} s:\n{self.text()}")


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.process.poll() is None:
            agent.process.kill()
            agent.process.wait(10)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_second_agent_on_the_same_state_dir_refuses_to_start(
    broker: Mosquitto, tmp_path: Path, agents: list[Agent]
) -> None:
    config = write_config(tmp_path, broker.port)
    sub = Subscriber(broker.port, "edge/dev1/cam/event")
    first = Agent(config, tmp_path / "first.log")
    agents.append(first)
    try:
        sub.wait_for(lambda s: len(s.messages) >= 1)
        second = run("run", "--config", config)
        assert second.returncode == 78, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr  # one line, no traceback
        assert "is in use by another edge-agent" in lines[0]
        assert f"pid {first.process.pid}" in lines[0]  # names the holder
        assert first.process.poll() is None  # the first one is untouched
        before = len(sub.messages)
        sub.wait_for(lambda s: len(s.messages) > before)  # and still deciding
    finally:
        sub.close()
    assert first.terminate_within() == 0
    # Its lock went with it: a new agent starts on the same directory.
    again = Agent(config, tmp_path / "again.log")
    agents.append(again)
    wait_until(
        lambda: (tmp_path / "state" / "agent.lock").read_text().strip() == str(again.process.pid),
        "the restarted agent did not take the lock",
    )
    assert again.terminate_within() == 0


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("not-utf8", "not UTF-8 text"),
        ("labels-gone", "labels"),
    ],
)
def test_sighup_with_a_broken_config_keeps_running_and_obeys_sigterm(
    broker: Mosquitto, tmp_path: Path, agents: list[Agent], damage: str, reason: str
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_bytes((DEMO_MODELS / "shapes_labels.txt").read_bytes())
    config = write_config(tmp_path, broker.port)
    config.write_text(
        config.read_text().replace(str(DEMO_MODELS / "shapes_labels.txt"), str(labels))
    )
    sub = Subscriber(broker.port, "edge/dev1/cam/event")
    agent = Agent(config, tmp_path / "agent.log")
    agents.append(agent)
    try:
        sub.wait_for(lambda s: len(s.messages) >= 1)
        if damage == "not-utf8":
            config.write_bytes(b"\xff\xfe" + config.read_bytes())
        else:  # a live change whose policy needs the (now missing) labels file
            config.write_text(config.read_text().replace("threshold = 0.6", "threshold = 0.7"))
            labels.unlink()
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_for_log("reload refused")
        assert reason in agent.text()
        assert "Traceback" not in agent.text()
        # The main loop is alive: a second SIGHUP is handled too.
        agent.process.send_signal(signal.SIGHUP)
        wait_until(lambda: agent.text().count("reload refused") >= 2, agent.text())
        before = len(sub.messages)
        sub.wait_for(lambda s: len(s.messages) > before)  # the pipelines still decide
    finally:
        sub.close()
    assert agent.terminate_within() == 0


def config_check(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    """`config check` on `text`: must exit 78 with one line of error, no traceback."""
    path = tmp_path / "check.toml"
    path.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 78, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stderr


def base_config(tmp_path: Path) -> str:
    return write_config(tmp_path, 1883).read_text()


def test_config_check_and_run_refuse_a_config_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b"\xff\xfe" + base_config(tmp_path).encode())
    for command in (["config", "check", str(path)], ["run", "--config", str(path)]):
        done = run(*command)
        assert done.returncode == 78, done.stderr
        assert done.stderr.strip().count("\n") == 0, done.stderr  # one line
        assert "not UTF-8 text" in done.stderr


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (
            ("[[pipelines]]", "[runtime]\nnum_threads = 99999999999999999999\n[[pipelines]]"),
            "runtime.num_threads",
        ),
        (("threshold = 0.6", "threshold = nan"), "pipelines.0.policy.threshold"),
        (("keepalive = 5", "keepalive = 5\nreconnect_min = 30\nreconnect_max = 2"), "mqtt"),
        (("keepalive = 5", "keepalive = 5\nreconnect_min = inf"), "mqtt.reconnect_min"),
    ],
)
def test_config_check_bounds_every_number(
    tmp_path: Path, change: tuple[str, str], key: str
) -> None:
    text = base_config(tmp_path).replace(*change)
    message = config_check(tmp_path, text)
    assert f": {key}:" in message


def test_an_environment_value_is_reported_against_the_variable(tmp_path: Path) -> None:
    message = config_check(tmp_path, base_config(tmp_path), {"EDGE_AGENT_MQTT__PORT": "abc"})
    assert "environment (EDGE_AGENT_MQTT__PORT): mqtt.port" in message
    assert "check.toml" not in message


@pytest.mark.parametrize(
    ("case", "key"),
    [
        ("labels-missing", "pipelines.cam.policy"),
        ("labels-count", "pipelines.cam.policy"),
        ("state-dir", "state_dir"),
        ("model-missing", "pipelines.cam.model"),
        ("model-broken", "pipelines.cam.model"),
    ],
)
def test_config_check_refuses_what_run_refuses(tmp_path: Path, case: str, key: str) -> None:
    text = base_config(tmp_path)
    labels = str(DEMO_MODELS / "shapes_labels.txt")
    model = str(DEMO_MODELS / "shapes_int8.tflite")
    if case == "labels-missing":
        text = text.replace(labels, str(tmp_path / "nope.txt"))
    elif case == "labels-count":
        (tmp_path / "two.txt").write_text("a\nb\n")
        text = text.replace(labels, str(tmp_path / "two.txt"))
    elif case == "state-dir":
        (tmp_path / "a-file").write_text("")
        text = text.replace(str(tmp_path / "state"), str(tmp_path / "a-file" / "state"))
    elif case == "model-missing":
        text = text.replace(model, str(tmp_path / "gone.tflite"))
    else:
        (tmp_path / "broken.tflite").write_bytes(b"TFL3" + os.urandom(200))
        text = text.replace(model, str(tmp_path / "broken.tflite"))
    message = config_check(tmp_path, text)
    assert f"{key}" in message
    # ... and `run` indeed refuses it (the check is not stricter than the daemon).
    path = tmp_path / "check.toml"
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT,
        check=False,
    )
    assert done.returncode != 0, done.stderr

"""Fault injection for model updates: a real HTTPS update server that drips bytes or
serves two releases at once, a real `edge-agent run` process signalled and killed,
and a real mosquitto carrying the retained `update` status. An update must never
get stuck, never keep the agent from stopping, and always say what happened."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.broker import Mosquitto
from tests.conftest import DEMO_MODELS, PROJECT
from tests.subscriber import Subscriber
from tests.update.fixtures import MANIFEST, NAME, SHAPES, Device, Site, padded, sha256
from tests.update.servers import CA, StaticServer, make_ca

pytestmark = pytest.mark.integration

V2, V3, V4 = padded(16), padded(32), padded(48)
UPDATE_TOPIC = "edge/dev1/update"


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return make_ca(tmp_path / "ca")


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path / "site", tmp_path / "keys")


@pytest.fixture
def server(site: Site, ca: CA) -> Iterator[StaticServer]:
    with StaticServer(site.root, https=ca.server_cert()) as running:
        yield running


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.05)


# -- an agent process -------------------------------------------------------------------


def write_config(
    tmp_path: Path, broker: Mosquitto, server: StaticServer, site: Site, ca: CA
) -> Path:
    frames = DEMO_MODELS / "samples/camera/*.jpg"
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
device_id = "dev1"
state_dir = "{tmp_path / "state"}"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
[update]
enabled = true
manifest_url = "{server.url(MANIFEST)}"
keys = ["{site.public()}"]
ca_file = "{ca.cert_file}"
interval = 3600
probation_inferences = 1000000
probation_seconds = 3600
[[pipelines]]
name = "cam"
model = "{SHAPES}"
model_name = "{NAME}"
model_version = "1"
labels = "{DEMO_MODELS / "shapes_labels.txt"}"
[pipelines.source]
kind = "files"
pattern = "{frames}"
loop = true
fps = 20
[pipelines.policy]
kind = "classification"
threshold = 0.6
""",
        encoding="utf-8",
    )
    return config


class Agent:
    """`edge-agent run` as systemd runs it; killed after the test if still alive."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "-v", "run", "--config", str(config)],
                stdout=out,
                stderr=out,
                cwd=PROJECT,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminated_within(self, seconds: float) -> int | None:
        """SIGTERM; the exit code, or None if the process outlived `seconds`."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def agents(
    tmp_path: Path, broker: Mosquitto, server: StaticServer, site: Site, ca: CA
) -> Iterator[Callable[[], Agent]]:
    config = write_config(tmp_path, broker, server, site, ca)
    started: list[Agent] = []

    def start() -> Agent:
        started.append(Agent(config, tmp_path / "agent.log"))
        return started[-1]

    yield start
    for agent in started:
        agent.close()


def states(sub: Subscriber) -> list[str]:
    return [m.json()["state"] for m in sub.on(UPDATE_TOPIC)]


# -- the scenarios ----------------------------------------------------------------------


def test_sigterm_ends_an_agent_whose_model_download_drips(
    agents: Callable[[], Agent], site: Site, server: StaticServer
) -> None:
    """A byte a second never trips the 30 s read timeout: before the fix the update
    thread read on for a day and the process outlived SIGTERM."""
    path = site.publish(V2, 2)
    server.behave(path, "drip")
    agent = agents()
    wait_until(lambda: server.dripped(path) >= 2, 30, "the agent's download started")
    assert agent.terminated_within(30) == 0, agent.text()[-3000:]
    assert "Traceback" not in agent.text()
    assert "update: failed" in agent.text()  # the download said why it ended


def test_a_newer_manifest_is_processed_after_a_dripping_download_hits_its_deadline(
    tmp_path: Path, site: Site, server: StaticServer, ca: CA
) -> None:
    """The update thread is not stuck: the drip ends at the deadline, and the newer
    release and the check asked for meanwhile (cmd/update) are served."""
    dripping = site.publish(V3, 3)
    server.behave(dripping, "drip")
    device = Device(
        tmp_path / "state",
        server.url(MANIFEST),
        [site.public()],
        ca.cert_file,
        read_timeout=10.0,
        deadline=4.0,
    )
    stop = threading.Event()
    thread = threading.Thread(target=device.manager.run, args=(stop,), daemon=True)
    thread.start()
    try:
        device.manager.check_now()
        wait_until(lambda: server.dripped(dripping) >= 1, 20, "the dripping download started")
        site.publish(V4, 4)
        device.manager.check_now()
        wait_until(lambda: device.pipeline.model.sha256 == sha256(V4), 30, "version 4 serving")
    finally:
        stop.set()
        thread.join(15)
        device.close()
    assert not thread.is_alive()
    failed = [r for r in device.reports if r["state"] == "failed"]
    assert "gave up after the 4 s deadline" in failed[0]["reason"]
    installed = [r for r in device.reports if r["state"] == "installed"]
    assert [r["manifest_version"] for r in installed] == [4]


def test_a_rollback_at_start_is_published_on_the_update_topic(
    agents: Callable[[], Agent], broker: Mosquitto, site: Site
) -> None:
    site.publish(V2, 2)
    sub = Subscriber(broker.port, UPDATE_TOPIC)
    try:
        first = agents()
        sub.wait_for(lambda s: "installed" in states(s), timeout=30)
        first.process.send_signal(signal.SIGKILL)  # on probation: never committed
        first.process.wait(10)
        seen = len(sub.on(UPDATE_TOPIC))
        second = agents()
        sub.wait_for(lambda s: "rolled_back" in states(s)[seen:], timeout=30)
        assert second.terminated_within(30) == 0
    finally:
        sub.close()
    report = next(
        m.json() for m in sub.on(UPDATE_TOPIC)[seen:] if m.json()["state"] == "rolled_back"
    )
    assert "on probation when the agent stopped" in report["reason"]
    assert report["model"] == {"name": NAME, "version": "2", "sha256": sha256(V2)[:12]}
    assert "was on probation when the agent stopped; rolled back" in second.text()


def test_a_manifest_and_a_signature_of_two_releases_are_checked_again_soon(
    tmp_path: Path, site: Site, server: StaticServer, ca: CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caught while the operator uploads release 3: its manifest, release 2's
    signature. The next check comes in seconds, not at the hourly interval."""
    monkeypatch.setattr(random, "uniform", lambda low, high: low)  # the soonest of each range
    site.publish(V2, 2)
    stale = site.signature.read_bytes()
    site.publish(V3, 3)
    fresh = site.signature.read_bytes()
    site.signature.write_bytes(stale)
    device = Device(tmp_path / "state", server.url(MANIFEST), [site.public()], ca.cert_file)
    stop = threading.Event()
    thread = threading.Thread(target=device.manager.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: "rejected" in device.states(), 20, "the mismatch seen")
        site.signature.write_bytes(fresh)  # the upload completes
        wait_until(lambda: "installed" in device.states(), 25, "release 3 installed")
    finally:
        stop.set()
        thread.join(15)
        device.close()
    rejected = device.reports[device.states().index("rejected")]
    assert "signature does not verify" in rejected["reason"]
    assert device.pipeline.model.sha256 == sha256(V3)

"""The device side of fleet operations on real `edge-agent run` processes, a real
mosquitto and a real HTTP server: tag targeting, the will delay, what a broker
restart without persistence gets back, and the fleet nudge's jitter."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest

from edge_agent import __version__
from tests.broker import Mosquitto
from tests.conftest import PROJECT
from tests.fleet_helpers import NAME, FleetSite, agent_config, cli, wait_for
from tests.subscriber import Subscriber
from tests.tcpproxy import TcpProxy
from tests.update.servers import StaticServer

pytestmark = pytest.mark.integration
FAST_RETRY = "reconnect_min = 0.2\nreconnect_max = 2.0\nfirst_retry_window = 0.5"


class Agent:
    """One `edge-agent run` process, its log kept for the test to read."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
                cwd=PROJECT,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.stop()


def start(
    agents: list[Agent],
    tmp_path: Path,
    device: str,
    port: int,
    url: str,
    site: FleetSite,
    **kw: Any,
) -> Agent:
    config = agent_config(tmp_path / device, device, port, url, site.public, **kw)
    agent = Agent(config, tmp_path / f"{device}.log")
    agents.append(agent)
    return agent


def updates(watcher: Subscriber, device: str) -> list[dict[str, Any]]:
    return [m.json() for m in watcher.on(f"{device}/update")]


def has_update(watcher: Subscriber, device: str, state: str, manifest: int | None = None) -> bool:
    return any(
        u["state"] == state and (manifest is None or u["manifest_version"] == manifest)
        for u in updates(watcher, device)
    )


def committed(watcher: Subscriber, device: str, version: str) -> bool:
    return any(
        u["state"] == "committed" and (u["model"] or {}).get("version") == version
        for u in updates(watcher, device)
    )


def last_info(watcher: Subscriber, device: str) -> dict[str, Any]:
    infos = watcher.on(f"{device}/info")
    assert infos, f"{device} published no info"
    info: dict[str, Any] = infos[-1].json()
    return info


def test_tag_targeting_takes_the_update_on_lab_and_skips_it_on_prod(
    tmp_path: Path, broker: Mosquitto, agents: list[Agent]
) -> None:
    site = FleetSite(tmp_path)
    watcher = Subscriber(broker.port, "edge/#", client_id="targeting-watcher")
    with StaticServer(site.root) as http:
        url = http.url("/manifest.json")
        for device, tag in (("lab-1", "lab"), ("prod-1", "prod")):
            start(agents, tmp_path, device, broker.port, url, site, tags={"site": tag},
                  update_extra="nudge_jitter = 1")  # fmt: skip
        try:
            for device in ("lab-1", "prod-1"):
                wait_for(partial(has_update, watcher, device, "committed"), 50, f"{device} v1")
            # Version 2 of the model, for site=lab only, signed like everything else.
            model = site.root / f"{NAME}-2.tflite"
            cli(["manifest", "create", str(model), "--name", f"{NAME}={model}",
                 "--version", "2", "--target-tags", f"{NAME}:site=lab,depot",
                 "-o", str(site.manifest)])  # fmt: skip
            cli(["manifest", "sign", str(site.manifest), "--key", str(site.private)])
            mqtt_publish.single("edge/fleet/cmd/update", b'{"v": 1, "version": 2}',
                                qos=1, hostname="127.0.0.1", port=broker.port)  # fmt: skip
            wait_for(lambda: committed(watcher, "lab-1", "2"), 50, "lab-1 took v2")
            wait_for(lambda: has_update(watcher, "prod-1", "skipped", 2), 20, "prod-1 skipped")
            wait_for(lambda: last_info(watcher, "lab-1")["manifest"] == 2, 10, "lab-1 info")
            lab, prod = last_info(watcher, "lab-1"), last_info(watcher, "prod-1")
            assert lab["models"][NAME]["version"] == "2"
            assert lab["models"][NAME]["sha256"] == site.v2[:12]
            assert lab["tags"] == {"site": "lab"}
            assert prod["models"][NAME]["version"] == "1"
            assert prod["models"][NAME]["sha256"] == site.v1[:12]
            assert (prod["manifest"], prod["tags"]) == (1, {"site": "prod"})
            assert not has_update(watcher, "prod-1", "downloading", 2)

            # The skipped device kept the manifest's ETag: checking again costs a 304.
            polls = http.count("/manifest.json")
            mqtt_publish.single("edge/prod-1/cmd/update", b"", qos=1, hostname="127.0.0.1",
                                port=broker.port)  # fmt: skip
            wait_for(lambda: has_update(watcher, "prod-1", "unchanged"), 20, "prod-1 re-check")
            assert http.count("/manifest.json") == polls + 1
            assert http.last_status("/manifest.json") == 304
        finally:
            watcher.close()


def last_state(watcher: Subscriber) -> dict[str, Any]:
    states = watcher.on(f"{NAME}/state")
    return states[-1].json() if states else {}


def statuses(watcher: Subscriber, device: str) -> list[bytes]:
    return [m.payload for m in watcher.on(f"{device}/status")]


def test_a_short_drop_is_not_offline_and_a_dead_agent_is_after_the_will_delay(
    tmp_path: Path, broker: Mosquitto, agents: list[Agent]
) -> None:
    site = FleetSite(tmp_path)
    proxy = TcpProxy(broker.port)
    watcher = Subscriber(broker.port, "edge/+/status", client_id="will-watcher")
    with StaticServer(site.root) as http:
        agent = start(agents, tmp_path, "gate-1", proxy.port, http.url("/manifest.json"), site,
                      mqtt_extra=f"will_delay = 3\n{FAST_RETRY}")  # fmt: skip
        try:
            wait_for(lambda: statuses(watcher, "gate-1") == [b"online"], 30, "online")
            proxy.cut()  # the network goes away under the agent; no DISCONNECT
            wait_for(lambda: statuses(watcher, "gate-1").count(b"online") == 2, 20, "reconnect")
            assert proxy.accepted == 2
            agent.process.send_signal(signal.SIGKILL)
            agent.process.wait(10)
            # The dead agent's will, 3 s after the kill: by then the short drop's
            # (which came first) would have been published too.
            wait_for(lambda: b"offline" in statuses(watcher, "gate-1"), 30, "will")
            assert statuses(watcher, "gate-1") == [b"online", b"online", b"offline"]
            assert "reconnecting" in agent.text()
        finally:
            watcher.close()
            proxy.close()


def test_a_broker_restarted_without_persistence_gets_status_info_state_and_update_back(
    tmp_path: Path, agents: list[Agent]
) -> None:
    (tmp_path / "broker-dir").mkdir()
    broker = Mosquitto(tmp_path / "broker-dir", persistence=False)
    broker.start()
    site = FleetSite(tmp_path)
    device = "porch-1"
    try:
        with StaticServer(site.root) as http:
            watcher = Subscriber(broker.port, f"edge/{device}/#", client_id="before-restart")
            # A short recording read once: the pipeline is done long before the
            # restart, so its state can only come back by being re-published.
            start(agents, tmp_path, device, broker.port, http.url("/manifest.json"), site,
                  replays=1, rate=20000, tags={"site": "porch"},
                  mqtt_extra=FAST_RETRY, update_extra="probation_seconds = 1")  # fmt: skip
            wait_for(lambda: has_update(watcher, device, "committed"), 50, "committed")
            windows = 1600 // 64  # the recording's rows, one inference per window
            wait_for(lambda: last_state(watcher).get("inferences") == windows, 20, "all read")
            final_state = watcher.on(f"{NAME}/state")[-1].json()
            watcher.close()
            broker.kill()
            broker.start()
            reader = Subscriber(broker.port, f"edge/{device}/#", client_id="after-restart")
            try:
                wanted = ("status", "info", f"{NAME}/state", "update")
                wait_for(lambda: all(reader.on(t) for t in wanted), 30, "re-published topics")
                assert reader.on("status")[-1].payload == b"online"
                info = reader.on("info")[-1].json()
                assert (info["device"], info["agent"], info["tags"]) == (
                    device,
                    __version__,
                    {"site": "porch"},
                )
                assert info["models"][NAME]["sha256"] == site.v1[:12]
                assert (info["manifest"], info["bucket"]) == (1, None)  # no rollout in v1
                state = reader.on(f"{NAME}/state")[-1].json()
                same = ("state", "since", "model", "inputs", "inferences", "events")
                assert {k: state[k] for k in same} == {k: final_state[k] for k in same}
                assert reader.on("update")[-1].json()["state"] == "committed"
            finally:
                reader.close()
    finally:
        broker.stop()


NUDGE_LINE = re.compile(r"fleet nudge: checking for updates in ([0-9.]+) s")


def test_a_fleet_nudge_makes_each_agent_check_within_the_jitter(
    tmp_path: Path, broker: Mosquitto, agents: list[Agent]
) -> None:
    jitter = 4.0
    site = FleetSite(tmp_path)
    watcher = Subscriber(broker.port, "edge/+/update", client_id="nudge-watcher")
    devices = ("n-1", "n-2")
    with StaticServer(site.root) as http:
        started = [
            start(
                agents,
                tmp_path,
                d,
                broker.port,
                http.url("/manifest.json"),
                site,
                update_extra=f"nudge_jitter = {jitter}",
            )
            for d in devices
        ]
        try:
            for d in devices:  # the start-up check, then nothing for an hour
                wait_for(partial(has_update, watcher, d, "installed"), 50, f"{d} checked")
            before = http.count("/manifest.json")
            mqtt_publish.single("edge/fleet/cmd/update", b'{"v": 1}', qos=1,
                                hostname="127.0.0.1", port=broker.port)  # fmt: skip
            # Each agent checks once, after its own random delay within the jitter
            # (plus the manager's one-second wake-up and a loaded CI machine's slack).
            wait_for(lambda: http.count("/manifest.json") == before + 2, jitter + 6, "checks")
            delays = [float(m[1]) for a in started for m in NUDGE_LINE.finditer(a.text())]
            assert len(delays) == 2
            assert all(0.0 <= delay <= jitter for delay in delays)
            assert delays[0] != delays[1]  # drawn per device, not one delay for the fleet
        finally:
            watcher.close()

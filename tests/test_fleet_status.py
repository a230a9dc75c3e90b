"""`edge-agent fleet status` and `fleet history` on a real broker: two real
`edge-agent run` processes beside a handful of simulated devices."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.cli import main as edge_agent
from edge_agent.devtools.fleetsim import FleetSim, SimOptions
from tests.broker import Mosquitto
from tests.conftest import PROJECT
from tests.fleet_helpers import FleetSite, agent_config, wait_for
from tests.subscriber import Subscriber
from tests.update.servers import StaticServer

pytestmark = pytest.mark.integration
AGENTS = ("agent-0", "agent-1")
SIMS = 5


@pytest.fixture
def fleet(tmp_path: Path, broker: Mosquitto) -> Iterator[FleetSim]:
    """Two real agents and five simulated devices, each having published its
    status, state and update topics."""
    site = FleetSite(tmp_path)
    with StaticServer(site.root) as http:
        url = http.url("/manifest.json")
        watcher = Subscriber(broker.port, "edge/#", client_id="fleet-status-watcher")
        agents = [
            subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config",
                 str(agent_config(tmp_path / name, name, broker.port, url, site.public))],
                cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            for name in AGENTS
        ]  # fmt: skip
        sim = FleetSim(
            SimOptions(
                host="127.0.0.1", port=broker.port, count=SIMS, manifest_url=url,
                keys=(site.public,), model_sha256=site.v1, ramp=0.2, will_delay=2,
            )
        )  # fmt: skip
        sim.start()
        try:
            for name in AGENTS:  # each agent installs version 1 from the manifest
                wait_for(functools.partial(_committed, watcher, name), 50, f"{name} committed")
                wait_for(functools.partial(_has_state, watcher, name), 10, f"{name} state")
            wait_for(lambda: len(sim.connected_at) == SIMS, 20, "simulated devices")
            yield sim
        finally:
            for agent in agents:
                agent.terminate()
            for agent in agents:
                agent.wait(20)
            sim.stop()
            watcher.close()


def _has_state(watcher: Subscriber, name: str) -> bool:
    return bool(watcher.on(f"{name}/vibration/state"))


def _committed(watcher: Subscriber, name: str) -> bool:
    return any(m.json()["state"] == "committed" for m in watcher.on(f"{name}/update"))


def test_status_shows_every_device_with_models_updates_and_info_where_published(
    fleet: FleetSim, broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "fleet.db"
    args = ["--port", str(broker.port), "--db", str(db)]
    assert edge_agent(["fleet", "status", "--json", "--seconds", "3", *args]) == 0
    status = json.loads(capsys.readouterr().out)
    devices = {d["device"]: d for d in status["devices"]}
    assert set(devices) == {*AGENTS, *(d.device for d in fleet.devices)}
    for name in AGENTS:
        agent = devices[name]
        assert agent["online"] is True
        assert agent["models"]["vibration"]["name"] == "vibration"
        assert agent["update"]["state"] == "committed"
    for device in fleet.devices:
        sim = devices[device.device]
        assert sim["online"] is True
        assert sim["models"]["vibration"]["sha256"] == device.model.sha256[:12]
        # The simulated devices publish info (the real agent will once it is wired).
        assert sim["agent"] is not None
        assert sim["tags"] == device.tags
    assert status["summary"]["vibration:1"] == {"devices": 7, "online": 7}

    # The table form, and what the history file remembers afterwards.
    assert edge_agent(["fleet", "status", "--seconds", "2", *args]) == 0
    table = capsys.readouterr().out
    assert "7 device(s), 7 online" in table
    assert "vibration:1: 7 device(s), 7 online" in table
    assert edge_agent(["fleet", "history", "--running", "1", "--json", "--db", str(db)]) == 0
    running = json.loads(capsys.readouterr().out)
    assert sorted(r["device"] for r in running) == sorted(devices)


def test_status_says_offline_when_a_device_leaves(
    fleet: FleetSim, broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = fleet.devices[0].device
    fleet.stop()  # connections dropped: each will is published after its delay
    watcher = Subscriber(broker.port, f"edge/{gone}/status", client_id="offline-watcher")
    try:
        wait_for(lambda: [m.payload for m in watcher.on("status")][-1:] == [b"offline"], 30, "will")
    finally:
        watcher.close()
    assert edge_agent(["fleet", "status", "--json", "--port", str(broker.port),
                       "--db", str(tmp_path / "f.db"), "--seconds", "2"]) == 0  # fmt: skip
    devices = {d["device"]: d for d in json.loads(capsys.readouterr().out)["devices"]}
    assert devices[gone]["online"] is False
    assert devices["agent-0"]["online"] is True

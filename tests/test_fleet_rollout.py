"""`edge-agent fleet rollout` against a simulated fleet: a real mosquitto, a real
HTTP server publishing the signed manifests, devices polling them with the real
update client code (edge_agent.devtools.fleetsim)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.cli import main as edge_agent
from edge_agent.devtools.fleetsim import FleetSim, SimOptions
from edge_agent.fleet.history import History
from tests.broker import Mosquitto
from tests.fleet_helpers import FleetSite, wait_for
from tests.update.servers import StaticServer

pytestmark = pytest.mark.integration
DEVICES = 30


@pytest.fixture
def site(tmp_path: Path) -> FleetSite:
    return FleetSite(tmp_path)


@pytest.fixture
def http(site: FleetSite) -> Iterator[StaticServer]:
    with StaticServer(site.root) as server:
        yield server


def simulate(site: FleetSite, broker: Mosquitto, http: StaticServer, **extra: object) -> FleetSim:
    options = SimOptions(
        host="127.0.0.1",
        port=broker.port,
        count=DEVICES,
        manifest_url=http.url("/manifest.json"),
        keys=(site.public,),
        model_sha256=site.v1,
        poll_interval=3600.0,  # only the nudges make them poll
        nudge_jitter=1.0,
        probation=0.3,
        ramp=0.5,
        **extra,  # type: ignore[arg-type]
    )
    sim = FleetSim(options)
    sim.start()
    wait_for(lambda: len(sim.connected_at) == DEVICES, 30, "simulated devices connected")
    return sim


def rollout(site: FleetSite, broker: Mosquitto, db: Path, *extra: str) -> int:
    return edge_agent(
        [
            "fleet", "rollout", str(site.new), "--key", str(site.private),
            "--publish-dir", str(site.root), "--port", str(broker.port), "--db", str(db),
            "--stages", "20,50,100", "--min-devices", "3", "--max-failure", "0.05",
            "--soak", "1s", "--stage-timeout", "40s", "--settle", "2s", "--salt", "test-salt",
            *extra,
        ]
    )  # fmt: skip


def test_a_healthy_rollout_reaches_every_device(
    site: FleetSite,
    broker: Mosquitto,
    http: StaticServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = simulate(site, broker, http)
    try:
        assert rollout(site, broker, tmp_path / "fleet.db", "--json") == 0
        result = json.loads(capsys.readouterr().out)
        assert result["completed"] is True
        assert {row["state"] for row in result["rows"]} == {"committed"}
        assert len(result["rows"]) == DEVICES
        # Three stages, three higher versions; the last one without a percent cap.
        published = site.published()
        assert published["version"] == 5  # above the input (2) and the previous (1)
        assert published["rollout"] == {"percent": 100, "salt": "test-salt"}
        assert {d.model.sha256 for d in sim.devices} == {site.v2}
    finally:
        sim.stop()
    running = History(tmp_path / "fleet.db").running("2", "vibration")
    assert len(running) == DEVICES


def test_a_rollout_with_failing_devices_halts_and_returns_the_fleet(
    site: FleetSite,
    broker: Mosquitto,
    http: StaticServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = simulate(site, broker, http, fail_fraction=0.3, fail_mode="rollback")
    failing = set(sim.failing())
    assert 3 <= len(failing) <= 15  # the hash picks about 30 %
    try:
        assert rollout(site, broker, tmp_path / "fleet.db", "--json") == 1
        result = json.loads(capsys.readouterr().out)
        assert result["completed"] is False
        assert result["halted_at"] == 1
        failed = {row["device"] for row in result["rows"] if row["state"] == "failed"}
        assert failed
        assert failed <= failing
        # The return: the previous model at a higher version, to every device.
        published = site.published()
        assert published["version"] == 4  # stage 1 published 3
        assert "rollout" not in published
        assert published["models"][0]["sha256"] == site.v1
        wait_for(lambda: {d.model.sha256 for d in sim.devices} == {site.v1}, 90, "fleet back on v1")
        assert result["returned"]["committed"] == DEVICES
        # Stage 2 never started: nobody outside the first 20 % took version 2.
        assert all(row["stage"] == 1 for row in result["rows"])
    finally:
        sim.stop()


def test_an_unhealthy_swap_halts_too(
    site: FleetSite,
    broker: Mosquitto,
    http: StaticServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Devices that commit and then count inference errors fail the stage."""
    sim = simulate(site, broker, http, fail_fraction=0.3, fail_mode="errors")
    try:
        assert rollout(site, broker, tmp_path / "fleet.db", "--json", "--soak", "3s") == 1
        result = json.loads(capsys.readouterr().out)
        reasons = {row["reason"] for row in result["rows"] if row["state"] == "failed"}
        assert reasons == {"5 inference error(s) after the swap"}
    finally:
        sim.stop()

"""`edge-agent fleet rollout` against a simulated fleet: a real mosquitto, a real
HTTP server publishing the signed manifests, devices polling them with the real
update client code (edge_agent.devtools.fleetsim)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.cli import main as edge_agent
from edge_agent.devtools.fleetsim import FleetSim, SimOptions
from edge_agent.fleet.history import History
from edge_agent.fleet.stage import StagePlan
from edge_agent.fleet.view import DeviceView, Model
from edge_agent.mqtt.payloads import ModelInfo, encode, shadow_payload
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


# --- the shadow gate ---------------------------------------------------------------

Agreement = Callable[[int], tuple[float, int]]  # device index -> agreement, compared


class ShadowReports:
    """Each simulated device's periodic shadow report (QoS 0), the new model in shadow
    beside the one it serves now, as the agent publishes them."""

    def __init__(self, broker: Mosquitto, sim: FleetSim, site: FleetSite, rate: Agreement):
        self.sim, self.site, self.rate = sim, site, rate
        self.stop = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="shadow-reports")
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            for index, device in enumerate(self.sim.devices):
                agreement, compared = self.rate(index)
                payload = shadow_payload(
                    device=device.device,
                    pipeline=device.pipeline,
                    epoch=0.0,
                    serving=device.model,
                    shadow=ModelInfo("vibration", "2", self.site.v2),
                    report={"state": "running", "compared": compared, "agreement": agreement},
                )
                topic = f"edge/{device.device}/{device.pipeline}/shadow"
                self.client.publish(topic, encode(payload), qos=0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.client.disconnect()
        self.client.loop_stop()


def first_stage(site: FleetSite, sim: FleetSim) -> list[int]:
    """The indices of the devices stage 1 (20 %) selects, as the rollout computes it."""
    plan = StagePlan(1, 20.0, 3, "test-salt", {"vibration": site.v2})
    views = [DeviceView(d.device, models={"vibration": Model("vibration", "1", site.v1[:12])})
             for d in sim.devices]  # fmt: skip
    return [i for i, view in enumerate(views) if plan.wants(view)]


def test_a_rollout_goes_live_stage_by_stage_when_the_shadow_agrees(
    site: FleetSite,
    broker: Mosquitto,
    http: StaticServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = simulate(site, broker, http)
    reports = ShadowReports(broker, sim, site, lambda i: (0.96 if i % 2 else 1.0, 100 + i))
    try:
        gate = ("--min-shadow-agreement", "0.95", "--shadow-pipeline", "vibration")
        assert rollout(site, broker, tmp_path / "fleet.db", "--json", *gate) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["completed"] is True
        assert [g["stage"] for g in result["gates"]] == [1, 2, 3]
        first = first_stage(site, sim)
        assert result["gates"][0]["reporting"] == len(first) >= 3
        assert result["gates"][0]["compared"] == sum(100 + i for i in first)
        # Each later stage asks only the devices it moves: not those on version 2.
        assert result["gates"][2]["reporting"] < DEVICES
        assert all(0.96 <= g["agreement"] <= 1.0 for g in result["gates"])
        assert {d.model.sha256 for d in sim.devices} == {site.v2}
    finally:
        reports.close()
        sim.stop()


def test_a_rollout_halts_before_going_live_when_the_shadow_disagrees(
    site: FleetSite,
    broker: Mosquitto,
    http: StaticServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Most devices agree fully on a few inputs, the odd ones poorly on many: the mean of
    the devices' rates passes 0.75, the agreement over the inputs does not."""
    sim = simulate(site, broker, http)
    first = first_stage(site, sim)

    def rate(i: int) -> tuple[float, int]:
        return (0.6, 1000) if i % 2 else (1.0, 10)

    assert sum(rate(i)[0] for i in first) / len(first) >= 0.75  # the unweighted mean passes

    reports = ShadowReports(broker, sim, site, rate)
    try:
        gate = ("--min-shadow-agreement", "0.75", "--shadow-wait", "20s")
        assert rollout(site, broker, tmp_path / "fleet.db", "--json", *gate) == 1
        result = json.loads(capsys.readouterr().out)
        assert (result["completed"], result["halted_at"]) == (False, 1)
        expected = sum(rate(i)[0] * rate(i)[1] for i in first) / sum(rate(i)[1] for i in first)
        assert result["gates"][0]["agreement"] == pytest.approx(expected)
        assert f"shadow agreement {expected:.1%}" in result["reason"]
        assert "below 75.0%" in result["reason"]
        assert result["returned"] is None  # nothing went live: nothing to return
        assert site.published()["version"] == 1  # no stage was published
        assert {d.model.sha256 for d in sim.devices} == {site.v1}
    finally:
        reports.close()
        sim.stop()

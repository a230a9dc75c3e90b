"""The simulated device's probation (edge_agent.devtools.simdevice) follows the
agent's: an install over a model on probation replaces that trial, and a return
to the model the device ran before does not fail on a device that fails updates."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge_agent.devtools.simdevice import SimDevice
from edge_agent.fleet.publish import DirPublisher, Document, render, sign
from edge_agent.mqtt.payloads import ModelInfo
from edge_agent.update.fetch import Fetcher, FetchOptions
from edge_agent.update.keys import load_private_key, load_public_key
from tests.fleet_helpers import NAME, FleetSite
from tests.update.servers import StaticServer


def publish(site: FleetSite, source: Path, version: int) -> None:
    data = render(
        Document.read(source),
        version=version,
        percent=None,
        salt=None,
        now=datetime.now(timezone.utc).replace(microsecond=0),
        valid_for=timedelta(days=1),
    )
    DirPublisher(site.root).publish(data, sign(load_private_key(site.private), data))


@pytest.mark.parametrize("fail", ["rollback", None])
def test_a_return_during_the_probation_of_the_new_model_ends_on_the_old_one(
    tmp_path: Path, fail: str | None
) -> None:
    site = FleetSite(tmp_path)
    previous = tmp_path / "previous.json"
    previous.write_bytes(site.manifest.read_bytes())
    device = SimDevice("sim-1", NAME, ModelInfo(NAME, "1", site.v1), {}, fail=fail)
    keys = (load_public_key(site.public),)
    fetcher = Fetcher(FetchOptions(allow_http=True))
    with StaticServer(site.root) as server:
        url = server.url("/manifest.json")
        publish(site, site.new, 3)  # the stage: version 2 of the model
        assert [r["state"] for r in device.check(fetcher, url, keys)] == ["installed"]
        stage = device.trial
        assert device.model.sha256 == site.v2
        publish(site, previous, 4)  # the return, while version 2 is still on probation
        assert [r["state"] for r in device.check(fetcher, url, keys)] == ["installed"]
    assert device.model.sha256 == site.v1
    # The first trial was replaced: its timer judges nothing, and rolls nothing back.
    assert device.probation_over(stage) is None
    verdict = device.probation_over(device.trial)
    assert verdict is not None
    assert verdict["state"] == "committed"
    assert verdict["model"]["sha256"] == site.v1[:12]
    assert device.model.sha256 == site.v1
    assert site.v1 not in device.rejected

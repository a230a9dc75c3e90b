"""The shadow gate of a rollout, pure: shadow reports read into the fleet view, and
summed over a stage's devices (edge_agent.fleet.view, edge_agent.fleet.stage)."""

from __future__ import annotations

import json

import pytest

from edge_agent.fleet.stage import StagePlan, shadow_tally
from edge_agent.fleet.view import DeviceView, FleetView, Model
from edge_agent.mqtt.payloads import ModelInfo, shadow_payload

OLD, NEW, OTHER = "a" * 64, "b" * 64, "c" * 64
EVERYONE = StagePlan(1, 100.0, 3, None, {"shapes": NEW})


def report(
    device: str,
    agreement: float | None,
    compared: int,
    *,
    shadow: str = NEW,
    serving: str = OLD,
    state: str = "running",
) -> bytes:
    payload = shadow_payload(
        device=device,
        pipeline="cam",
        epoch=0.0,
        serving=ModelInfo("shapes", "1", serving),
        shadow=ModelInfo("candidate", "2", shadow),
        report={"state": state, "reason": None, "compared": compared, "agreement": agreement},
    )
    return json.dumps(payload).encode()


def view_of(*messages: tuple[str, bytes], serving: str = OLD) -> FleetView:
    view = FleetView("edge")
    for topic, payload in messages:
        device = topic.split("/")[1]
        view.devices.setdefault(device, DeviceView(device, online=True))
        view.devices[device].models["cam"] = Model("shapes", "1", serving[:12])
        assert view.apply(topic, payload, 5.0) == []  # periodic: no transition
    return view


def test_the_view_keeps_the_last_report_per_pipeline() -> None:
    view = view_of(
        ("edge/d1/cam/shadow", report("d1", 0.5, 10)),
        ("edge/d1/cam/shadow", report("d1", 0.9, 20)),
    )
    last = view.devices["d1"].shadows["cam"]
    assert (last.agreement, last.compared, last.sha256, last.serving) == (
        0.9,
        20,
        NEW[:12],
        OLD[:12],
    )
    assert view.devices["d1"].as_dict()["shadows"]["cam"]["agreement"] == 0.9


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1]", report("d1", 1.5, 10), report("d1", 0.5, -1), b'{"compared": 3}'],
)
def test_a_bad_report_is_counted_and_skipped(payload: bytes) -> None:
    view = FleetView("edge")
    assert view.apply("edge/d1/cam/shadow", payload, 1.0) == []
    assert view.bad_messages == 1
    assert "cam" not in (view.devices["d1"].shadows if "d1" in view.devices else {})


def test_agreement_is_weighted_by_the_inputs_compared() -> None:
    view = view_of(
        ("edge/d1/cam/shadow", report("d1", 1.0, 10)),
        ("edge/d2/cam/shadow", report("d2", 0.5, 90)),
        ("edge/d3/cam/shadow", report("d3", None, 0)),  # nothing compared yet
    )
    tally = shadow_tally(EVERYONE, view.devices)
    assert (tally.online, tally.reporting, tally.compared) == (3, 2, 100)
    assert tally.agreement == pytest.approx((10 * 1.0 + 90 * 0.5) / 100)  # not (1 + 0.5) / 2
    assert tally.verdict(0.5, 2, None) is None
    reason = tally.verdict(0.6, 2, None)
    assert reason is not None
    assert "55.0%" in reason
    assert "below 60.0%" in reason
    assert "only 2 device(s)" in (tally.verdict(0.5, 3, None) or "")


def test_only_reports_about_the_new_model_on_devices_the_stage_moves_count() -> None:
    view = view_of(
        ("edge/d1/cam/shadow", report("d1", 0.2, 50, shadow=OTHER)),  # another candidate
        ("edge/d2/cam/shadow", report("d2", 0.9, 50)),
        ("edge/d2/mic/shadow", report("d2", 0.1, 50)),  # another pipeline
    )
    tally = shadow_tally(EVERYONE, view.devices, pipeline="cam")
    assert (tally.online, tally.reporting, tally.compared) == (2, 1, 50)
    assert tally.agreement == pytest.approx(0.9)
    # A device serving the new model already (an earlier stage) is not asked again.
    took = view_of(("edge/d3/cam/shadow", report("d3", 1.0, 50, serving=NEW)), serving=NEW)
    assert shadow_tally(EVERYONE, took.devices).online == 0
    # Outside the stage's percent: not counted.
    none = StagePlan(1, 0.001, 3, "salt", {"shapes": NEW})
    assert shadow_tally(none, view.devices).online == 0


def test_a_dropped_shadow_is_named() -> None:
    view = view_of(("edge/d1/cam/shadow", report("d1", 0.9, 40, state="dropped")))
    tally = shadow_tally(EVERYONE, view.devices)
    assert tally.dropped == ("d1",)
    assert "shadow dropped on d1" in tally.describe()

"""A rollout stage judged from device reports (edge_agent.fleet.stage): pure."""

from __future__ import annotations

from edge_agent.fleet.stage import StagePlan, StageTracker
from edge_agent.fleet.view import Change, DeviceView, Model
from edge_agent.update.targeting import parse_targets, rollout_bucket

OLD, NEW = "a" * 64, "b" * 64


def device(name: str, sha: str = OLD, site: str = "lab", online: bool = True) -> DeviceView:
    view = DeviceView(name, online=online, tags={"site": site})
    view.models["cam"] = Model("shapes", "1", sha[:12])
    return view


def update(name: str, state: str, sha: str = NEW, t: float = 1.0) -> Change:
    status = {"state": state, "reason": "why", "model": {"name": "shapes", "sha256": sha[:12]}}
    return Change(name, "update", t, value=state, detail=status)


def fleet(n: int) -> dict[str, DeviceView]:
    return {f"d{i}": device(f"d{i}") for i in range(n)}


def test_the_stage_waits_for_the_devices_its_percent_selects() -> None:
    devices = fleet(200)
    tracker = StageTracker(StagePlan(1, 10.0, 3, "salt", {"shapes": NEW}), devices, 0.0)
    expected = {d for d in devices if rollout_bucket("salt", d) < 10.0}
    assert set(tracker.outcomes) == expected
    assert 5 < len(expected) < 40


def test_commits_and_failures_and_the_early_halt_needs_min_devices() -> None:
    devices = fleet(10)
    tracker = StageTracker(StagePlan(1, 100.0, 3, None, {"shapes": NEW}), devices, 0.0)
    for name in ("d0", "d1", "d2"):
        tracker.observe(devices[name], update(name, "committed"))
    tracker.observe(devices["d3"], update("d3", "rolled_back"))
    assert tracker.counts()["committed"] == 3
    assert tracker.counts()["failed"] == 1
    assert tracker.outcomes["d3"].reason == "rolled_back: why"
    assert not tracker.over_threshold(min_devices=5, max_failure=0.05)  # 4 results < 5
    tracker.observe(devices["d4"], update("d4", "committed"))
    assert tracker.over_threshold(min_devices=5, max_failure=0.05)  # 1 of 5 = 20 %
    assert not tracker.settled()


def test_reports_about_another_model_do_not_count() -> None:
    devices = fleet(2)
    tracker = StageTracker(StagePlan(1, 100.0, 3, None, {"shapes": NEW}), devices, 0.0)
    tracker.observe(devices["d0"], update("d0", "rejected", sha="c" * 64))
    assert tracker.outcomes["d0"].state == "pending"


def test_health_after_the_swap() -> None:
    devices = fleet(3)
    tracker = StageTracker(StagePlan(1, 100.0, 3, None, {"shapes": NEW}), devices, 0.0)
    for name in devices:
        devices[name].errors["cam"] = 2
        tracker.observe(devices[name], update(name, "committed"))
        devices[name].models["cam"] = Model("shapes", "2", NEW[:12])
    tracker.observe(devices["d0"], Change("d0", "errors", 2.0, "cam", "3"))
    alert = {"state": "drift", "measure": "psi"}
    tracker.observe(devices["d1"], Change("d1", "alert", 2.0, "cam", "drift", alert))
    tracker.observe(devices["d2"], Change("d2", "status", 2.0, value="offline"))
    reasons = {n: o.reason for n, o in tracker.outcomes.items()}
    assert reasons == {
        "d0": "1 inference error(s) after the swap",
        "d1": "psi drift alert after the swap",
        "d2": "offline after the swap",
    }


def test_offline_devices_owe_nothing_until_they_return() -> None:
    devices = {"d0": device("d0", online=False), "d1": device("d1")}
    tracker = StageTracker(StagePlan(1, 100.0, 3, None, {"shapes": NEW}), devices, 0.0)
    tracker.observe(devices["d1"], update("d1", "committed"))
    assert tracker.settled()
    tracker.observe(devices["d0"], Change("d0", "status", 3.0, value="online"))
    assert not tracker.settled()


def test_tag_targets_and_already_serving() -> None:
    devices = {
        "lab": device("lab"),
        "field": device("field", site="field"),
        "done": device("done", NEW, site="depot"),
    }
    targets = {"shapes": parse_targets({"tags": {"site": ["lab"]}}, "t")}
    tracker = StageTracker(StagePlan(1, 100.0, 3, None, {"shapes": NEW}, targets), devices, 0.0)
    assert set(tracker.outcomes) == {"lab"}
    plain = StageTracker(StagePlan(1, 100.0, 3, None, {"shapes": NEW}), devices, 0.0)
    assert plain.outcomes["done"].state == "committed"


def test_the_return_counts_a_device_that_rolled_back_by_itself() -> None:
    devices = {"d0": device("d0", NEW)}
    tracker = StageTracker(StagePlan(0, 100.0, 5, None, {"shapes": OLD}), devices, 0.0)
    assert tracker.outcomes["d0"].state == "pending"
    devices["d0"].models["cam"] = Model("shapes", "1", OLD[:12])
    tracker.observe(devices["d0"], Change("d0", "model", 4.0, "cam", "shapes:1"))
    assert tracker.outcomes["d0"].state == "committed"


def test_the_return_judges_no_health() -> None:
    """A device that rolled back counted errors doing it: that is not a failure of
    the return to the model it now serves."""
    devices = {"d0": device("d0", OLD)}
    tracker = StageTracker(StagePlan(0, 100.0, 5, None, {"shapes": OLD}), devices, 0.0)
    tracker.observe(devices["d0"], Change("d0", "errors", 4.0, "cam", "3"))
    assert tracker.outcomes["d0"].state == "committed"

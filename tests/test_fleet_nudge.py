"""The fleet-wide nudge (edge_agent.update.nudge): random delays within bounds, merged."""

import random
import threading

import pytest

from edge_agent.update.nudge import FleetNudge, fleet_update_topic, nudge_delay


def test_delays_cover_the_window_and_stay_inside_it() -> None:
    rng = random.Random(5)
    delays = [nudge_delay(60.0, rng) for _ in range(3000)]
    assert min(delays) >= 0.0
    assert max(delays) <= 60.0
    quarters = [sum(1 for d in delays if q * 15 <= d < (q + 1) * 15) for q in range(4)]
    assert min(quarters) > 600  # spread, not bunched at one end


def test_zero_jitter_checks_at_once_and_negative_is_refused() -> None:
    assert nudge_delay(0.0, random.Random(1)) == 0.0
    with pytest.raises(ValueError, match="negative"):
        nudge_delay(-1.0, random.Random(1))


def test_topic() -> None:
    assert fleet_update_topic("edge") == "edge/fleet/cmd/update"


def test_nudges_while_one_is_pending_are_merged_into_one_check() -> None:
    checked = threading.Event()
    calls: list[int] = []

    def check_now() -> None:
        calls.append(1)
        checked.set()

    nudge = FleetNudge(0.3, check_now, random.Random(9))
    first = nudge.on_message(b'{"v":1,"version":3}')
    assert first is not None
    assert 0.0 <= first <= 0.3
    assert nudge.on_message(b"") is None  # merged
    assert checked.wait(5)
    assert (nudge.received, nudge.scheduled) == (2, 1)
    # After the check ran, a new nudge schedules a new one.
    checked.clear()
    assert nudge.on_message(b"") is not None
    assert checked.wait(5)
    assert len(calls) == 2


def test_cancel_drops_a_pending_check() -> None:
    calls: list[int] = []
    nudge = FleetNudge(30.0, lambda: calls.append(1), random.Random(2))
    assert nudge.on_message(b"") is not None
    nudge.cancel()
    assert nudge.on_message(b"") is not None  # a new one may be scheduled after cancel
    nudge.cancel()
    assert calls == []

"""The one pacer and the one backoff every source uses, on a clock the test moves."""

from __future__ import annotations

import random
import threading

import pytest

from edge_agent.app import source_wiring
from edge_agent.config.kinds import CAMERA_KINDS, SENSOR_KINDS, SOURCE_KINDS
from edge_agent.sources.pacing import Pacer
from edge_agent.util.backoff import Backoff, BackoffOptions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_the_pacer_keeps_its_grid_when_ticks_come_late(clock: Clock) -> None:
    pacer = Pacer(4.0, clock=clock)  # 0.25 s apart
    assert pacer.delay() == 0.0
    pacer.mark()
    assert pacer.delay() == pytest.approx(0.25)
    clock.now += 0.3  # a little late: the next tick is due on the grid, not 0.25 after this
    pacer.mark()
    assert pacer.delay() == pytest.approx(0.2)


def test_the_pacer_restarts_its_grid_after_a_stall_instead_of_bursting(clock: Clock) -> None:
    pacer = Pacer(4.0, clock=clock)
    pacer.mark()
    clock.now += 10.0
    pacer.mark()
    assert pacer.delay() == pytest.approx(0.25)


def test_a_pacer_at_zero_never_waits_but_still_sees_stop(clock: Clock) -> None:
    pacer, stop = Pacer(0, clock=clock), threading.Event()
    pacer.mark()
    assert pacer.delay() == 0.0
    assert pacer.wait(stop)
    stop.set()
    assert not pacer.wait(stop)


@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_the_pacer_rejects_a_negative_or_nan_rate(value: float) -> None:
    with pytest.raises(ValueError, match=r"^fps: must be >= 0"):
        Pacer(value, what="fps")


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(BackoffOptions(0.5, 3.0, jitter="none"))
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_equal_jitter_stays_in_the_upper_half_of_each_step() -> None:
    backoff = Backoff(BackoffOptions(1.0, 8.0, jitter="equal"), random.Random(3))
    for ceiling in (1.0, 2.0, 4.0, 8.0, 8.0):
        assert ceiling / 2 <= backoff.next_delay() <= ceiling


def test_backoff_wait_returns_false_once_stopped() -> None:
    stop = threading.Event()
    stop.set()
    assert not Backoff(BackoffOptions(5.0, 5.0)).wait(stop)


def test_one_list_of_kinds_and_a_builder_for_each() -> None:
    assert set(CAMERA_KINDS).isdisjoint(SENSOR_KINDS)
    assert set(source_wiring._SOURCE_BUILDERS) == set(SOURCE_KINDS)

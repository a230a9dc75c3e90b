"""The one retry delay (edge_agent.util.backoff): full jitter within its bounds."""

import random
import statistics

import pytest

from edge_agent.util.backoff import Backoff, BackoffOptions


def draws(backoff: Backoff, n: int) -> list[float]:
    return [backoff.next_delay() for _ in range(n)]


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    backoff = Backoff(BackoffOptions(base=0.5, cap=8.0), random.Random(1))
    for attempt in range(12):
        delay = backoff.next_delay()
        assert 0.0 <= delay <= min(8.0, 0.5 * 2**attempt)


def test_ceiling_doubles_then_caps() -> None:
    backoff = Backoff(BackoffOptions(base=1.0, cap=60.0))
    assert [backoff.ceiling(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff.ceiling(10_000) == 60.0  # no overflow for a device down for weeks


def test_first_retry_is_spread_over_the_window_and_later_ones_restart_from_base() -> None:
    rng = random.Random(7)
    firsts, seconds = [], []
    for _ in range(2000):
        backoff = Backoff(BackoffOptions(base=1.0, cap=60.0, first_window=30.0), rng)
        firsts.append(backoff.next_delay())
        seconds.append(backoff.next_delay())
    assert min(firsts) >= 0.0
    assert max(firsts) <= 30.0
    # Spread over the whole window, not bunched: each third of it gets its share.
    thirds = [sum(1 for d in firsts if k * 10 <= d < (k + 1) * 10) for k in range(3)]
    assert min(thirds) > 500
    assert max(seconds) <= 2.0  # attempt 1: uniform(0, base * 2)


def test_without_a_window_the_first_retry_is_full_jitter_on_base() -> None:
    rng = random.Random(3)
    firsts = [Backoff(BackoffOptions(base=2.0, cap=60.0), rng).next_delay() for _ in range(500)]
    assert max(firsts) <= 2.0
    assert 0.8 < statistics.mean(firsts) < 1.2  # uniform(0, 2) has mean 1


def test_reset_starts_over_after_a_success() -> None:
    backoff = Backoff(BackoffOptions(base=1.0, cap=60.0, first_window=5.0), random.Random(2))
    draws(backoff, 6)
    assert backoff.attempt == 6
    backoff.reset()
    assert backoff.attempt == 0
    # The next one is a first retry again: within the window, whatever the exponent was.
    assert backoff.next_delay() <= 5.0


def test_same_seed_same_delays() -> None:
    options = BackoffOptions(base=1.0, cap=30.0, first_window=10.0)
    one = draws(Backoff(options, random.Random(42)), 10)
    two = draws(Backoff(options, random.Random(42)), 10)
    assert one == two


@pytest.mark.parametrize(
    ("base", "cap", "window"), [(0.0, 1.0, 0.0), (2.0, 1.0, 0.0), (1.0, 10.0, 11.0), (1, 2, -1)]
)
def test_nonsense_options_are_refused(base: float, cap: float, window: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        BackoffOptions(base=base, cap=cap, first_window=window)

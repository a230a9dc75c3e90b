"""The capture rules (pure): each fires when it should and not otherwise; the cap."""

from __future__ import annotations

import random

import pytest

from edge_agent.capture.rules import (
    CHANGE,
    DISAGREEMENT,
    DRIFT,
    LOW_CONFIDENCE,
    RANDOM,
    CaptureRules,
    Observation,
    RuleOptions,
)

ALL = RuleOptions(below=0.5, drift=True, change=True, disagreement=True, every=0, per_hour=1000)


def test_low_confidence_fires_only_under_the_threshold() -> None:
    rules = CaptureRules(ALL)
    assert rules.reasons(Observation(confidence=0.49)) == [LOW_CONFIDENCE]
    assert rules.reasons(Observation(confidence=0.5)) == []
    assert rules.reasons(Observation(confidence=None)) == []  # no class scores


@pytest.mark.parametrize(
    ("obs", "why"),
    [
        (Observation(confidence=0.9, drifting=True), [DRIFT]),
        (Observation(confidence=0.9, changed=True), [CHANGE]),
        (Observation(confidence=0.9, disagreed=True), [DISAGREEMENT]),
        (Observation(confidence=0.1, drifting=True, changed=True), [LOW_CONFIDENCE, DRIFT, CHANGE]),
        (Observation(confidence=0.9), []),
    ],
)
def test_each_rule_fires_on_its_own_evidence(obs: Observation, why: list[str]) -> None:
    assert CaptureRules(ALL).reasons(obs) == why


def test_a_rule_that_is_off_never_fires() -> None:
    rules = CaptureRules(RuleOptions())
    everything = Observation(confidence=0.0, drifting=True, changed=True, disagreed=True)
    assert all(rules.reasons(everything) == [] for _ in range(1000))


def test_one_in_n_at_random() -> None:
    always = CaptureRules(RuleOptions(every=1), rng=random.Random(1))
    assert all(always.reasons(Observation()) == [RANDOM] for _ in range(100))
    tenth = CaptureRules(RuleOptions(every=10), rng=random.Random(7))
    fired = sum(bool(tenth.reasons(Observation())) for _ in range(20_000))
    assert 1_800 < fired < 2_200  # 2000 expected; the seeded draw is fixed


def test_the_hourly_cap_refuses_then_admits_after_an_hour() -> None:
    rules = CaptureRules(RuleOptions(change=True, per_hour=3))
    changed = Observation(changed=True)
    assert [bool(rules.check(changed, t)) for t in (0.0, 10.0, 20.0, 30.0)] == [1, 1, 1, 0]
    assert rules.limited == 1
    assert rules.check(changed, 3599.0) == []  # the first slot frees at 3600
    assert rules.check(changed, 3600.0) == [CHANGE]
    assert rules.check(Observation(), 9999.0) == []  # nothing fired: no slot taken
    assert rules.limited == 2


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="below"):
        RuleOptions(below=1.5)
    with pytest.raises(ValueError, match="per_hour"):
        RuleOptions(per_hour=0)

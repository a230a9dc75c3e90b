"""Rollout targeting (edge_agent.update.targeting): pure rules and strict parsing."""

import pytest

from edge_agent.errors import ManifestError
from edge_agent.update.manifest import Rollout, in_rollout
from edge_agent.update.targeting import Targets, parse_targets, rollout_bucket, selected

LAB = {"site": "lab", "hw": "pi4"}


def targets(**fields: object) -> Targets:
    parsed = parse_targets(fields, "models[0].targets")
    assert parsed is not None
    return parsed


def test_bucket_is_the_one_in_rollout_uses() -> None:
    for n in range(300):
        device = f"dev-{n}"
        bucket = rollout_bucket("salt-a", device)
        assert 0.0 <= bucket < 100.0
        for percent in (0.0, 5.0, 37.5, 100.0):
            assert in_rollout(device, Rollout(percent, "salt-a")) == (bucket < percent)


def test_no_targets_means_the_percent_rule_alone() -> None:
    assert selected(None, "d", {}, 10.0, 25.0)
    assert not selected(None, "d", {}, 30.0, 25.0)
    assert selected(None, "d", {}, None, None)  # no rollout: everyone


def test_tags_must_all_match_one_of_the_listed_values() -> None:
    t = targets(tags={"site": ["lab", "depot"], "hw": ["pi4"]})
    assert selected(t, "d", LAB, 1.0, 100.0)
    assert selected(t, "d", {"site": "depot", "hw": "pi4"}, 1.0, 100.0)
    assert not selected(t, "d", {"site": "field", "hw": "pi4"}, 1.0, 100.0)
    assert not selected(t, "d", {"site": "lab"}, 1.0, 100.0)  # no hw tag: no match


def test_tags_and_percent_both_apply() -> None:
    t = targets(tags={"site": ["lab"]})
    assert selected(t, "d", LAB, 4.0, 5.0)
    assert not selected(t, "d", LAB, 6.0, 5.0)


def test_pinned_devices_skip_tags_and_percent_excluded_never() -> None:
    t = targets(tags={"site": ["depot"]}, devices=["gate-2"], exclude=["gate-7"])
    assert selected(t, "gate-2", {}, 99.0, 0.0)
    assert not selected(t, "gate-7", {"site": "depot"}, 0.0, 100.0)
    assert not selected(t, "gate-3", LAB, 0.0, 100.0)


def test_absent_or_null_targets_parse_to_none() -> None:
    assert parse_targets(None, "models[0].targets") is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], r"models\[0\]\.targets: expected an object"),
        ({"tag": {}}, r"models\[0\]\.targets\.tag: unknown field"),
        ({"tags": {"site": "lab"}}, r"targets\.tags\.site: expected a list"),
        ({"tags": {"site": []}}, r"targets\.tags\.site: must list 1 to"),
        ({"tags": {"site": [""]}}, r"targets\.tags\.site\[0\]"),
        ({"tags": {"bad key": ["x"]}}, r"'bad key' is not a valid tag name"),
        ({"devices": ["a/b"]}, r"targets\.devices\[0\]"),
        ({"exclude": [7]}, r"targets\.exclude\[0\]"),
        ({"devices": ["x"], "exclude": ["x"]}, r"'x' is both pinned"),
    ],
)
def test_bad_targets_are_refused_naming_the_field(value: object, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_targets(value, "models[0].targets")

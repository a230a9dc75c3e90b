"""Accuracy from feedback (pure): matching, rolling accuracy per version, episodes."""

from __future__ import annotations

import pytest

from edge_agent.capture.feedback import AccuracyTracker, FeedbackOptions, parse_feedback
from edge_agent.errors import InputError


def tracker(**kw: object) -> AccuracyTracker:
    options = {"remember": 100, "window": 10, "min_labelled": 4, "threshold": 0.75, **kw}
    return AccuracyTracker(FeedbackOptions(**options))  # type: ignore[arg-type]


def test_truth_matches_the_state_or_the_label() -> None:
    t = tracker()
    t.remember("a", "occupied", "person", "1")
    t.remember("b", "occupied", "person", "1")
    t.remember("c", "occupied", "person", "1")
    assert t.label("a", "occupied").correct  # type: ignore[union-attr]
    assert t.label("b", "person").correct  # type: ignore[union-attr]
    assert not t.label("c", "empty").correct  # type: ignore[union-attr]
    assert t.status["versions"]["1"] == {"labelled": 3, "correct": 2, "accuracy": 0.6667}


def test_unknown_forgotten_and_repeated_ids_are_counted_not_scored() -> None:
    t = tracker(remember=2)
    for event in ("a", "b", "c"):
        t.remember(event, "x", None, "1")
    assert t.label("a", "x") is None  # forgotten: only 2 remembered
    assert t.label("zzz", "x") is None
    assert t.label("c", "x") is not None
    assert t.label("c", "x") is None  # labelled once only
    assert t.unknown == 3
    assert t.status["versions"]["1"]["labelled"] == 1


def test_an_episode_starts_once_after_min_labelled_and_clears_once() -> None:
    t = tracker(clear_threshold=0.9)
    alerts = []
    truths = ["x", "y", "y", "y", "y", "y"] + ["x"] * 12
    for i, truth in enumerate(truths):
        t.remember(str(i), "x", None, "1")
        outcome = t.label(str(i), truth)
        assert outcome is not None
        alerts.append((i, outcome.alert, round(outcome.accuracy, 2)))
    raised = [(i, acc) for i, a, acc in alerts if a == "accuracy"]
    cleared = [(i, acc) for i, a, acc in alerts if a == "clear"]
    # under 0.75 from the start, but only alerted once 4 were labelled
    assert raised == [(3, 0.25)]
    # the window holds the last 10: back to >= 0.9 when only one miss is left in it
    assert cleared == [(14, 0.9)]
    assert t.status["state"] == "ok"


def test_accuracy_is_kept_per_model_version() -> None:
    t = tracker()
    t.remember("a", "x", None, "1")
    t.remember("b", "x", None, "2")
    t.label("a", "y")
    t.label("b", "x")
    assert t.status["versions"] == {
        "1": {"labelled": 1, "correct": 0, "accuracy": 0.0},
        "2": {"labelled": 1, "correct": 1, "accuracy": 1.0},
    }


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"truth": "x"}', "id"),
        (b'{"id": "a", "truth": 3}', "truth"),
    ],
)
def test_bad_feedback_says_what_is_wrong(payload: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_feedback(payload)


def test_feedback_is_parsed() -> None:
    assert parse_feedback(b'{"id": "e1", "truth": "cat"}') == ("e1", "cat")

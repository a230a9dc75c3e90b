"""Pure unit tests of the decision policies: whole scenes replayed frame by frame, no mocks."""

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pytest

from edge_agent.mqtt.payloads import Decision
from edge_agent.pipeline.policy import ClassificationPolicy, Policy, ThresholdPolicy

LABELS = ("background", "circle", "square")
SHAPES = {"circle": "ball", "square": "box"}

# (time, state, previous, reason): what a subscriber sees, in order.
Event = tuple[float, str, str | None, str]


def scores(label: str, p: float = 0.9, labels: Sequence[str] = LABELS) -> np.ndarray:
    """A softmax-like vector: ``p`` on ``label``, the rest shared by the others."""
    rest = (1.0 - p) / (len(labels) - 1)
    return np.array([p if name == label else rest for name in labels], dtype=np.float32)


def binary(p: float) -> np.ndarray:
    """Two-class [background, circle] scores with ``p`` on circle."""
    return np.array([1.0 - p, p], dtype=np.float32)


def run(
    policy: Policy, frames: Sequence[np.ndarray], times: Sequence[float] | None = None
) -> list[Decision | None]:
    """decide() on every frame, at t = frame index unless times are given."""
    clock = times if times is not None else [float(i) for i in range(len(frames))]
    assert len(clock) == len(frames)
    return [policy.decide(frame, now) for frame, now in zip(frames, clock, strict=True)]


def events(
    policy: Policy, frames: Sequence[np.ndarray], times: Sequence[float] | None = None
) -> list[Event]:
    """The published events as (time, state, previous, reason)."""
    clock = times if times is not None else [float(i) for i in range(len(frames))]
    return [
        (now, d.state, d.previous, d.reason)
        for now, d in zip(clock, run(policy, frames, times), strict=True)
        if d is not None
    ]


# --- first decision, scores and labels ---------------------------------------


def test_first_decision_has_previous_none_and_state_tracks_it() -> None:
    policy = ClassificationPolicy(LABELS, states=SHAPES)
    before = policy.state
    assert before is None
    first = policy.decide(scores("circle"), 0.0)
    assert first is not None
    assert (first.state, first.previous, first.reason, first.label) == (
        "ball",
        None,
        "change",
        "circle",
    )
    assert first.score == pytest.approx(0.9)
    assert isinstance(first.score, float)
    assert policy.state == "ball"
    assert policy.decide(scores("circle"), 1.0) is None
    assert policy.state == "ball"


def test_decision_is_frozen() -> None:
    decision = ThresholdPolicy().decide(np.array([0.7]), 0.0)
    assert decision is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.state = "x"  # type: ignore[misc]


def test_both_policies_work_through_the_protocol() -> None:
    """What the pipeline relies on, used only through `Policy` (mypy checks the types):
    the first result is always published, and `state` follows it."""
    policies: list[Policy] = [ClassificationPolicy(LABELS), ThresholdPolicy()]
    firsts = [p.decide(np.array([0.1, 0.8, 0.1]), 0.0) for p in policies]
    assert [(d.state, d.previous, d.reason) for d in firsts if d is not None] == [
        ("circle", None, "change"),
        ("off", None, "change"),
    ]
    assert [p.state for p in policies] == ["circle", "off"]


def test_any_output_shape_is_flattened() -> None:
    policy = ClassificationPolicy(LABELS, states=SHAPES)
    decision = policy.decide(scores("square").reshape(1, 3), 0.0)
    assert decision is not None
    assert (decision.state, decision.label) == ("box", "square")
    assert policy.decide(scores("circle").reshape(3, 1), 1.0) is not None
    assert policy.state == "ball"


# --- a whole scene -------------------------------------------------------------


def scene() -> list[np.ndarray]:
    """300 frames: background, circle at 75, square at 150, background at 225.

    Deterministic noise of +-0.02 on every score and one-frame glitches inside
    each segment (a flicker of another class), as a real camera produces.
    """
    rng = np.random.default_rng(7)
    segments = [(0, "background"), (75, "circle"), (150, "square"), (225, "background")]
    glitches = {40: "circle", 120: "square", 190: "background", 260: "square"}
    frames = []
    for i in range(300):
        label = next(name for start, name in reversed(segments) if i >= start)
        base = scores(glitches.get(i, label))
        frames.append((base + rng.uniform(-0.02, 0.02, size=3)).astype(np.float32))
    return frames


def test_scene_with_three_changes_gives_exactly_four_events() -> None:
    # smoothing 4 + debounce 3: each change lands 2 frames (smoothing) + 2 (debounce) late.
    policy = ClassificationPolicy(
        LABELS, states=SHAPES, threshold=0.6, off_threshold=0.4, smoothing=4, debounce=3
    )
    decisions = run(policy, scene())
    assert [(i, d.state, d.previous, d.reason, d.label) for i, d in enumerate(decisions) if d] == [
        (2, "none", None, "change", "background"),
        (79, "ball", "none", "change", "circle"),
        (154, "box", "ball", "change", "square"),
        (229, "none", "box", "change", "background"),
    ]


def test_same_scene_without_smoothing_or_debounce_publishes_every_glitch() -> None:
    policy = ClassificationPolicy(LABELS, states=SHAPES, threshold=0.6)
    assert events(policy, scene()) == [
        (0.0, "none", None, "change"),
        (40.0, "ball", "none", "change"),
        (41.0, "none", "ball", "change"),
        (75.0, "ball", "none", "change"),
        (120.0, "box", "ball", "change"),
        (121.0, "ball", "box", "change"),
        (150.0, "box", "ball", "change"),
        (190.0, "none", "box", "change"),
        (191.0, "box", "none", "change"),
        (225.0, "none", "box", "change"),
        (260.0, "box", "none", "change"),
        (261.0, "none", "box", "change"),
    ]


# --- smoothing -----------------------------------------------------------------


def test_smoothing_is_the_mean_of_the_last_k_results() -> None:
    policy = ClassificationPolicy(("background", "circle"), threshold=0.5, smoothing=3)
    circle = [0.0, 0.6, 1.0, 1.0, 0.1, 0.0, 0.0]
    decisions = run(policy, [binary(p) for p in circle])
    # Mean circle score: 0, 0.3, 0.533, 0.867, 0.7, then 0.367 (1.0, 0.1, 0.0): with a
    # window of 4 it would still be 0.525 and stay "circle".
    assert [(i, d.state, d.label) for i, d in enumerate(decisions) if d] == [
        (0, "background", "background"),
        (2, "circle", "circle"),
        (5, "background", "background"),
    ]
    entered = decisions[2]
    assert entered is not None
    assert entered.score == pytest.approx(1.6 / 3)


# --- hysteresis ----------------------------------------------------------------


HOVERING = [binary(0.1)] * 3 + [binary(0.9)] + [binary(0.55), binary(0.45)] * 10 + [binary(0.2)]


def test_hysteresis_holds_a_state_while_the_score_hovers_between_thresholds() -> None:
    policy = ClassificationPolicy(
        ("background", "circle"), states={"circle": "ball"}, threshold=0.5, off_threshold=0.3
    )
    assert events(policy, HOVERING) == [
        (0.0, "none", None, "change"),
        (3.0, "ball", "none", "change"),
        (24.0, "none", "ball", "change"),
    ]


def test_without_hysteresis_a_hovering_score_flaps() -> None:
    policy = ClassificationPolicy(("background", "circle"), states={"circle": "ball"})
    flaps: list[Event] = [
        (float(i), "none", "ball", "change") if i % 2 else (float(i), "ball", "none", "change")
        for i in range(5, 24)
    ]
    assert events(policy, HOVERING) == [
        (0.0, "none", None, "change"),
        (3.0, "ball", "none", "change"),
        *flaps,
    ]


def test_enter_at_threshold_inclusive_leave_strictly_below_off_threshold() -> None:
    policy = ClassificationPolicy(
        ("background", "circle"), states={"circle": "ball"}, threshold=0.75, off_threshold=0.25
    )
    frames = [binary(0.5), binary(0.75), binary(0.25), binary(0.125)]
    assert events(policy, frames) == [
        (0.0, "none", None, "change"),
        (1.0, "ball", "none", "change"),
        (3.0, "none", "ball", "change"),
    ]


def test_hysteresis_keeps_the_state_even_when_another_label_is_top1() -> None:
    labels = ("background", "circle", "square")
    policy = ClassificationPolicy(labels, states=SHAPES, threshold=0.6, off_threshold=0.3)
    frames = [
        np.array([0.05, 0.9, 0.05]),
        np.array([0.0, 0.35, 0.65]),  # square top-1 above threshold, ball still >= 0.3
        np.array([0.0, 0.25, 0.75]),  # ball below 0.3: leave, and square is top-1
    ]
    decisions = run(policy, frames)
    assert [d.state if d else None for d in decisions] == ["ball", None, "box"]
    second = policy.decide(np.array([0.0, 0.25, 0.75]), 3.0)
    assert second is None


# --- debounce ------------------------------------------------------------------


def test_debounce_ignores_short_glitches_and_applies_to_the_first_state() -> None:
    policy = ClassificationPolicy(LABELS, states=SHAPES, debounce=3)
    bg, circle = scores("background"), scores("circle")
    frames = [bg] * 5 + [circle] + [bg] * 3 + [circle] * 2 + [bg] + [circle] * 3
    assert events(policy, frames) == [
        (2.0, "none", None, "change"),
        (14.0, "ball", "none", "change"),
    ]


def test_debounce_restarts_when_the_candidate_switches() -> None:
    policy = ClassificationPolicy(LABELS, states=SHAPES, debounce=3)
    bg, circle, square = scores("background"), scores("circle"), scores("square")
    frames = [bg] * 3 + [circle, circle, square, square, square]
    assert events(policy, frames) == [
        (2.0, "none", None, "change"),
        (7.0, "box", "none", "change"),
    ]


def test_alternating_candidates_never_settle() -> None:
    policy = ClassificationPolicy(LABELS, states=SHAPES, debounce=2)
    frames = [scores("circle"), scores("square")] * 10
    assert events(policy, frames) == []
    assert policy.state is None


# --- states mapping and default state ------------------------------------------


def test_unmapped_labels_and_low_scores_give_the_default_state() -> None:
    labels = ("background", "circle", "square", "triangle")
    policy = ClassificationPolicy(labels, states=SHAPES, default_state="empty", threshold=0.6)
    frames = [
        scores("triangle", labels=labels),  # unmapped label above threshold
        scores("circle", labels=labels),
        scores("circle", p=0.5, labels=labels),  # top-1 below threshold
    ]
    decisions = [d for d in run(policy, frames) if d is not None]
    assert [(d.state, d.label) for d in decisions] == [
        ("empty", "triangle"),
        ("ball", "circle"),
        ("empty", "circle"),
    ]
    # The default state's score sums the labels that map to it (background + triangle).
    assert decisions[0].score == pytest.approx(0.9 + 0.1 / 3)
    assert decisions[2].score == pytest.approx(2 * 0.5 / 3)


def test_without_states_every_label_is_its_own_state() -> None:
    policy = ClassificationPolicy(LABELS, threshold=0.6)
    frames = [scores("square"), scores("circle", p=0.4), scores("background")]
    decisions = [d for d in run(policy, frames) if d is not None]
    assert [(d.state, d.label) for d in decisions] == [
        ("square", "square"),
        ("none", "circle"),
        ("background", "background"),
    ]
    # No label maps to the default state "none": nothing supports it but absence.
    assert decisions[1].score == 0.0


def test_labels_sharing_a_state_sum_their_scores() -> None:
    policy = ClassificationPolicy(
        LABELS, states={"circle": "shape", "square": "shape"}, threshold=0.6, off_threshold=0.5
    )
    first = policy.decide(np.array([0.1, 0.7, 0.2]), 0.0)
    assert first is not None
    assert (first.state, first.label) == ("shape", "circle")
    assert first.score == pytest.approx(0.9)
    # Neither label alone reaches off_threshold, together they do: stay.
    assert policy.decide(np.array([0.4, 0.3, 0.3]), 1.0) is None
    left = policy.decide(np.array([0.6, 0.2, 0.2]), 2.0)
    assert left is not None
    assert (left.state, left.previous) == ("none", "shape")


def test_duplicate_labels_share_a_state() -> None:
    policy = ClassificationPolicy(("crane", "dog", "crane"), states={"crane": "bird"})
    decision = policy.decide(np.array([0.1, 0.1, 0.8]), 0.0)
    assert decision is not None
    assert (decision.state, decision.label) == ("bird", "crane")
    assert decision.score == pytest.approx(0.9)


# --- heartbeat and min_interval, for both policies -------------------------------


class Case(NamedTuple):
    """A policy factory and the inputs that drive it to its two states."""

    make: Callable[..., Policy]
    on: np.ndarray
    off: np.ndarray
    on_state: str
    off_state: str


CASES = {
    "classification": Case(
        lambda **kw: ClassificationPolicy(LABELS, states=SHAPES, **kw),
        scores("circle"),
        scores("background"),
        "ball",
        "none",
    ),
    "threshold": Case(ThresholdPolicy, np.array([0.9]), np.array([0.1]), "on", "off"),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def test_heartbeat_repeats_the_state_every_period_without_events(case: Case) -> None:
    policy = case.make(heartbeat=10)
    got = events(policy, [case.on] * 36)
    on = case.on_state
    assert got == [
        (0.0, on, None, "change"),
        (10.0, on, on, "heartbeat"),
        (20.0, on, on, "heartbeat"),
        (30.0, on, on, "heartbeat"),
    ]


def test_heartbeat_period_restarts_after_a_change(case: Case) -> None:
    policy = case.make(heartbeat=10)
    frames = [case.off] * 15 + [case.on] * 21
    on, off = case.on_state, case.off_state
    assert events(policy, frames) == [
        (0.0, off, None, "change"),
        (10.0, off, off, "heartbeat"),
        (15.0, on, off, "change"),
        (25.0, on, on, "heartbeat"),
        (35.0, on, on, "heartbeat"),
    ]


def test_heartbeat_is_measured_from_the_last_event_with_irregular_calls(case: Case) -> None:
    policy = case.make(heartbeat=10)
    times = [0.0, 7.0, 13.0, 22.0, 24.0, 33.9]
    on = case.on_state
    assert events(policy, [case.on] * len(times), times) == [
        (0.0, on, None, "change"),
        (13.0, on, on, "heartbeat"),
        (24.0, on, on, "heartbeat"),
    ]


def test_no_heartbeat_by_default(case: Case) -> None:
    policy = case.make()
    assert len(events(policy, [case.on] * 100, [i * 60.0 for i in range(100)])) == 1


def test_min_interval_defers_a_change_without_losing_it(case: Case) -> None:
    policy = case.make(min_interval=5)
    frames = [case.off, case.on, case.on, case.on, case.on, case.on, case.on]
    on, off = case.on_state, case.off_state
    decisions = run(policy, frames)
    assert policy.state == on
    assert [(i, d.state, d.previous) for i, d in enumerate(decisions) if d] == [
        (0, off, None),
        (5, on, off),  # deferred from t=1, emitted at the interval (inclusive)
    ]


def test_min_interval_emits_a_deferred_change_at_the_next_call_however_late(case: Case) -> None:
    policy = case.make(min_interval=5)
    times = [0.0, 1.0, 2.0, 60.0]
    frames = [case.off, case.on, case.on, case.on]
    assert events(policy, frames, times) == [
        (0.0, case.off_state, None, "change"),
        (60.0, case.on_state, case.off_state, "change"),
    ]


def test_min_interval_drops_a_change_that_reverted(case: Case) -> None:
    policy = case.make(min_interval=5)
    frames = [case.off, case.on, case.on, case.off, case.off, case.off, case.off]
    assert events(policy, frames) == [(0.0, case.off_state, None, "change")]
    assert policy.state == case.off_state


def test_state_lags_while_a_change_is_deferred(case: Case) -> None:
    policy = case.make(min_interval=5)
    policy.decide(case.off, 0.0)
    assert policy.decide(case.on, 1.0) is None
    assert policy.state == case.off_state


def test_min_interval_spaces_heartbeats(case: Case) -> None:
    policy = case.make(heartbeat=2, min_interval=5)
    on = case.on_state
    assert events(policy, [case.on] * 12) == [
        (0.0, on, None, "change"),
        (5.0, on, on, "heartbeat"),
        (10.0, on, on, "heartbeat"),
    ]


def test_min_interval_publishes_only_the_latest_of_several_changes() -> None:
    policy = ClassificationPolicy(LABELS, states=SHAPES, min_interval=3)
    frames = [scores("circle"), scores("square"), scores("background"), scores("background")]
    assert events(policy, frames) == [
        (0.0, "ball", None, "change"),
        (3.0, "none", "ball", "change"),
    ]


# --- threshold policy ----------------------------------------------------------


def test_threshold_policy_on_a_regression_output_selected_by_index() -> None:
    # A sensor model's output [[temperature, humidity, pressure]]; humidity drives the state.
    policy = ThresholdPolicy(
        index=1,
        on_threshold=70.0,
        off_threshold=60.0,
        on_state="humid",
        off_state="dry",
        smoothing=2,
    )
    humidity = [50.0, 55.0, 80.0, 90.0, 65.0, 62.0, 58.0, 50.0]
    frames = [np.array([[21.5, h, 1013.0]], dtype=np.float32) for h in humidity]
    decisions = run(policy, frames)
    # smoothed: 50, 52.5, 67.5, 85, 77.5, 63.5, 60 (stays: >= off), 54
    assert [(i, d.state, d.previous, d.score, d.label) for i, d in enumerate(decisions) if d] == [
        (0, "dry", None, 50.0, None),
        (3, "humid", "dry", 85.0, None),
        (7, "dry", "humid", 54.0, None),
    ]


def test_threshold_policy_accepts_negative_and_large_thresholds() -> None:
    policy = ThresholdPolicy(on_threshold=-2.0, off_threshold=-40.0)
    assert events(policy, [np.array([-50.0]), np.array([-1.0]), np.array([-39.0])]) == [
        (0.0, "off", None, "change"),
        (1.0, "on", "off", "change"),
    ]
    assert ThresholdPolicy(on_threshold=1e6).decide(np.array([2e6]), 0.0) is not None


def test_threshold_policy_initial_state_respects_debounce() -> None:
    policy = ThresholdPolicy(debounce=2)
    frames = [np.array([0.9]), np.array([0.1]), np.array([0.1]), np.array([0.8])]
    assert events(policy, frames) == [(2.0, "off", None, "change")]


def test_threshold_policy_hysteresis_versus_flapping() -> None:
    hovering = [np.array([0.9])] + [np.array([0.55]), np.array([0.45])] * 5
    with_hysteresis = ThresholdPolicy(on_threshold=0.5, off_threshold=0.4)
    without = ThresholdPolicy(on_threshold=0.5)
    assert events(with_hysteresis, hovering) == [(0.0, "on", None, "change")]
    assert len(events(without, hovering)) == 1 + 5 + 4


# --- bad inputs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.array([0.5, 0.5]), r"^expected 3 scores \(one per label\), got 2$"),
        (np.zeros((2, 2)), r"^expected 3 scores \(one per label\), got 4$"),
        (np.array([0.5, math.nan, 0.5]), r"^scores contain NaN or infinity$"),
        (np.array([0.5, math.inf, 0.5]), r"^scores contain NaN or infinity$"),
    ],
)
def test_classification_rejects_bad_vectors(bad: np.ndarray, message: str) -> None:
    policy = ClassificationPolicy(LABELS)
    with pytest.raises(ValueError, match=message):
        policy.decide(bad, 0.0)


def test_threshold_rejects_an_index_out_of_range_and_nan() -> None:
    policy = ThresholdPolicy(index=3)
    with pytest.raises(ValueError, match=r"^index 3 is out of range for 3 outputs$"):
        policy.decide(np.array([1.0, 2.0, 3.0]), 0.0)
    with pytest.raises(ValueError, match=r"^scores contain NaN"):
        policy.decide(np.array([1.0, 2.0, 3.0, math.nan]), 0.0)


def test_non_finite_time_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"^now must be a finite time"):
        ThresholdPolicy().decide(np.array([1.0]), math.nan)


def test_a_rejected_vector_leaves_the_policy_untouched() -> None:
    policy = ClassificationPolicy(LABELS, states=SHAPES, smoothing=2, debounce=2)
    assert policy.decide(scores("circle"), 0.0) is None
    with pytest.raises(ValueError, match="NaN"):
        policy.decide(np.array([math.nan, 0.0, 0.0]), 1.0)
    decision = policy.decide(scores("circle"), 2.0)
    assert decision is not None
    # Neither the smoothing window nor the debounce count saw the NaN.
    assert decision.state == "ball"
    assert decision.score == pytest.approx(0.9)


# --- constructor validation ------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ClassificationPolicy([]), r"^labels must be a non-empty sequence"),
        (lambda: ClassificationPolicy("abc"), r"^labels must be a non-empty sequence"),
        (lambda: ClassificationPolicy(LABELS, threshold=1.5), r"^threshold must be in \[0, 1\]"),
        (lambda: ClassificationPolicy(LABELS, threshold=-0.1), r"^threshold must be in \[0, 1\]"),
        (
            lambda: ClassificationPolicy(LABELS, threshold=math.nan),
            r"^threshold must be in \[0, 1\]",
        ),
        (
            lambda: ClassificationPolicy(LABELS, threshold=0.5, off_threshold=0.6),
            r"^off_threshold must be <= threshold \(0.5\), got 0.6$",
        ),
        (
            lambda: ClassificationPolicy(LABELS, off_threshold=-0.1),
            r"^off_threshold must be in \[0, threshold\]",
        ),
        (
            lambda: ClassificationPolicy(LABELS, off_threshold=math.nan),
            r"^off_threshold must be a finite number",
        ),
        (lambda: ClassificationPolicy(LABELS, smoothing=0), r"^smoothing must be an integer >= 1"),
        (lambda: ClassificationPolicy(LABELS, debounce=0), r"^debounce must be an integer >= 1"),
        (
            lambda: ClassificationPolicy(LABELS, heartbeat=-1),
            r"^heartbeat must be a finite number of seconds >= 0",
        ),
        (
            lambda: ClassificationPolicy(LABELS, heartbeat=math.inf),
            r"^heartbeat must be a finite number of seconds >= 0",
        ),
        (
            lambda: ClassificationPolicy(LABELS, min_interval=-0.5),
            r"^min_interval must be a finite number of seconds >= 0",
        ),
        (
            lambda: ClassificationPolicy(LABELS, states={"circle": "ball", "hexagon": "x"}),
            r"^states has keys that are not labels: \['hexagon'\]$",
        ),
        (
            lambda: ClassificationPolicy(LABELS, states={"circle": ""}),
            r"^states\['circle'\] must be a non-empty string",
        ),
        (
            lambda: ClassificationPolicy(LABELS, default_state=""),
            r"^default_state must be a non-empty string",
        ),
        (lambda: ThresholdPolicy(index=-1), r"^index must be an integer >= 0"),
        (lambda: ThresholdPolicy(on_threshold=math.nan), r"^on_threshold must be a finite number"),
        (
            lambda: ThresholdPolicy(on_threshold=10.0, off_threshold=11.0),
            r"^off_threshold must be <= on_threshold \(10.0\), got 11.0$",
        ),
        (lambda: ThresholdPolicy(on_state=""), r"^on_state must be a non-empty string"),
        (
            lambda: ThresholdPolicy(on_state="x", off_state="x"),
            r"^off_state must differ from on_state",
        ),
        (lambda: ThresholdPolicy(smoothing=0), r"^smoothing must be an integer >= 1"),
        (lambda: ThresholdPolicy(debounce=-3), r"^debounce must be an integer >= 1"),
        (
            lambda: ThresholdPolicy(min_interval=math.nan),
            r"^min_interval must be a finite number of seconds >= 0",
        ),
    ],
)
def test_bad_arguments_are_rejected_by_name(make: Callable[[], Policy], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_boundary_arguments_are_accepted() -> None:
    ClassificationPolicy(["only"], threshold=0.0, off_threshold=0.0, heartbeat=0, min_interval=0)
    ClassificationPolicy(LABELS, threshold=1.0, off_threshold=1.0, smoothing=1, debounce=1)
    ThresholdPolicy(on_threshold=-5.0, off_threshold=-5.0, index=0)

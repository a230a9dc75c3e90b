import numpy as np
import pytest

from edge_agent.model.detection import nms as nms_module
from edge_agent.model.detection.nms import iou, nms, pairwise_iou

# Same class: B overlaps A by 90/110, C overlaps A by 50/150 and B by 60/140.
# D is A's twin in another class.
BOXES = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]], dtype=np.float32)
SCORES = np.array([0.7, 0.9, 0.8, 0.6], dtype=np.float32)  # C, A, B, D
CLASSES = np.array([0, 0, 0, 1])


def test_iou_of_hand_computed_boxes() -> None:
    got = iou(np.array([0.0, 0.0, 2.0, 2.0]), np.array([[1.0, 1.0, 3.0, 3.0], [2, 2, 3, 3]]))
    assert got == pytest.approx([1 / 7, 0.0])


def test_iou_of_degenerate_boxes_is_zero_not_nan() -> None:
    got = iou(np.zeros(4), np.zeros((1, 4)))
    assert got.tolist() == [0.0]


@pytest.mark.parametrize(
    ("threshold", "kept"),
    [
        (0.45, [1, 0, 3]),  # B (0.82) goes, C (0.33) stays, D is another class
        (0.3, [1, 3]),  # C goes too
        (0.9, [1, 2, 0, 3]),  # nothing overlaps that much
    ],
)
def test_nms_is_greedy_best_first_and_class_wise(threshold: float, kept: list[int]) -> None:
    assert nms(BOXES, SCORES, CLASSES, threshold, 100).tolist() == kept


def test_nms_stops_at_max_keep() -> None:
    assert nms(BOXES, SCORES, CLASSES, 0.45, 2).tolist() == [1, 0]


def test_a_suppressed_box_does_not_suppress_others() -> None:
    # C overlaps B by 60/140 = 0.43 > 0.4, but A already dropped B, and only kept
    # boxes suppress: C (0.33 with A) stays.
    assert nms(BOXES[:3], SCORES[:3], CLASSES[:3], 0.4, 100).tolist() == [1, 0]


def test_nms_of_nothing() -> None:
    got = nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int), 0.45, 10)
    assert got.tolist() == []


def test_pairwise_iou_agrees_with_one_box_at_a_time() -> None:
    rng = np.random.default_rng(1)
    corner = rng.uniform(0, 1, size=(30, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0, 0.3, size=(30, 2))], axis=1)
    boxes[3] = [0.5, 0.5, 0.5, 0.9]  # no area
    matrix = pairwise_iou(boxes)
    for i, box in enumerate(boxes):
        assert matrix[i] == pytest.approx(iou(box, boxes))


@pytest.mark.parametrize("seed", range(5))
def test_both_suppression_paths_keep_the_same_boxes(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Few candidates take the all-pairs matrix, many the pass per kept box."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.1, 0.9, size=(300, 2))
    size = rng.uniform(0.02, 0.2, size=(300, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    scores = rng.uniform(0, 1, size=300)
    classes = rng.integers(0, 4, size=300)
    by_matrix = nms(boxes, scores, classes, 0.45, 50)
    monkeypatch.setattr(nms_module, "MATRIX_MAX", 10)
    by_pass = nms(boxes, scores, classes, 0.45, 50)
    assert by_matrix.tolist() == by_pass.tolist()
    assert 10 < len(by_matrix) <= 50

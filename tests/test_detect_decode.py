"""Decoding every detector family against hand-computed cases."""

import numpy as np
import pytest

from edge_agent.errors import ConfigError
from edge_agent.model.detection.decode import DecodeOptions, Decoder
from edge_agent.model.detection.layouts import DetectionLayout, recognise
from edge_agent.model.detection.types import Detections
from edge_agent.model.preprocess import Placement

from .detect_fakes import image_input, spec, ssd_tf1, ssd_tf2

OPTIONS = DecodeOptions(min_score=0.25, iou=0.45)
SIZE = (320, 160)  # width, height: not square, so x and y scale differently

# YOLOv8 head [4+C, N] in input pixels, C = 2; one column per anchor.
YOLOV8_PIXELS = np.array(
    [
        # cx,  cy,  w,  h,  class 0, class 1
        [160, 80, 64, 32, 0.9, 0.1],  # class 0, box x 0.4-0.6, y 0.4-0.6
        [164, 80, 64, 32, 0.2, 0.8],  # class 1 on the same spot: kept (class-wise NMS)
        [162, 82, 64, 32, 0.7, 0.0],  # class 0 again, overlaps the first: suppressed
        [100, 100, 10, 10, 0.1, 0.2],  # below the minimum score
        [32, 16, 32, 16, 0.0, 0.5],  # class 1, box x 0.05-0.15, y 0.05-0.15
    ],
    dtype=np.float32,
).T

YOLOV8_EXPECTED_BOXES = [
    [0.4, 0.4, 0.6, 0.6],
    [0.4125, 0.4, 0.6125, 0.6],
    [0.05, 0.05, 0.15, 0.15],
]


def yolo(family: str, transposed: bool = False) -> Decoder:
    layout = DetectionLayout(family, SIZE, 2, transposed=transposed)  # type: ignore[arg-type]
    return Decoder(layout, OPTIONS)


def check(
    found: Detections, boxes: list[list[float]], scores: list[float], classes: list[int]
) -> None:
    np.testing.assert_allclose(found.boxes, np.array(boxes).reshape(-1, 4), atol=1e-6)
    assert found.scores.tolist() == pytest.approx(scores)
    assert found.classes.tolist() == classes


def test_yolov8_in_input_pixels() -> None:
    found = yolo("yolov8").decode([YOLOV8_PIXELS[None]])
    check(found, YOLOV8_EXPECTED_BOXES, [0.9, 0.8, 0.5], [0, 1, 1])


def test_yolov8_normalized_gives_the_same() -> None:
    normalized = YOLOV8_PIXELS.copy()
    normalized[[0, 2]] /= SIZE[0]
    normalized[[1, 3]] /= SIZE[1]
    found = yolo("yolov8").decode([normalized[None]])
    check(found, YOLOV8_EXPECTED_BOXES, [0.9, 0.8, 0.5], [0, 1, 1])


def test_yolov8_exported_transposed() -> None:
    found = yolo("yolov8", transposed=True).decode([YOLOV8_PIXELS.T[None]])
    check(found, YOLOV8_EXPECTED_BOXES, [0.9, 0.8, 0.5], [0, 1, 1])


def test_yolov8_iou_threshold_decides_the_overlap() -> None:
    strict = Decoder(DetectionLayout("yolov8", SIZE, 2), DecodeOptions(iou=0.95))
    found = strict.decode([YOLOV8_PIXELS[None]])
    assert found.scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.5])


def test_yolov5_confidence_is_objectness_times_class_score() -> None:
    head = np.array(
        [
            # cx, cy,  w,   h,  obj, class 0, class 1
            [0.5, 0.5, 0.2, 0.4, 0.9, 0.5, 1.0],  # class 1 at 0.9
            [0.5, 0.5, 0.2, 0.4, 0.2, 1.0, 0.0],  # 0.2 x 1.0: below the minimum
            [0.5, 0.5, 0.2, 0.4, 0.8, 0.5, 0.25],  # class 0 at 0.4, another class: kept
            [0.5, 0.5, 0.2, 0.4, 0.6, 0.1, 0.9],  # class 1 at 0.54, same box: suppressed
            [0.5, 0.5, 0.2, 0.4, 0.3, 0.5, 0.5],  # 0.15 both: below the minimum
        ],
        dtype=np.float32,
    )
    found = yolo("yolov5").decode([head[None]])
    check(found, [[0.4, 0.3, 0.6, 0.7]] * 2, [0.9, 0.4], [1, 0])


def test_end_to_end_rows_are_filtered_and_sorted_not_suppressed() -> None:
    head = np.zeros((8, 6), dtype=np.float32)  # padded with empty rows, as exports are
    head[:4] = [
        [64, 32, 160, 96, 0.6, 2],  # pixels: 0.2-0.5 x, 0.2-0.6 y
        [0, 0, 320, 80, 0.9, 0],
        [10, 10, 20, 20, 0.1, 1],  # below the minimum
        [64, 32, 160, 96, 0.5, 2],  # a duplicate the model chose to keep
    ]
    found = yolo("yolo-e2e").decode([head[None]])
    boxes = [[0, 0, 1, 0.5], [0.2, 0.2, 0.5, 0.6], [0.2, 0.2, 0.5, 0.6]]
    check(found, boxes, [0.9, 0.6, 0.5], [0, 2, 2])


def ssd_arrays(order: list[str]) -> list[np.ndarray]:
    """An SSD frame (count 3, two above 0.25), listed in `order`."""
    by_role = {
        "boxes": np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.5, 1.0, 1.0], [0, 0, 1, 1], [0] * 4]]),
        "classes": np.array([[17.0, 0.0, 3.0, 0.0]]),
        "scores": np.array([[0.8, 0.6, 0.2, 0.0]]),
        "count": np.array([3.0]),
    }
    return [by_role[role].astype(np.float32) for role in order]


SSD_BOXES = [[0.2, 0.1, 0.6, 0.5], [0.5, 0.0, 1.0, 1.0]]  # xmin, ymin, xmax, ymax


def test_ssd_tf1_order() -> None:
    layout = recognise(image_input(300, 300), ssd_tf1(4))
    found = Decoder(layout, OPTIONS).decode(ssd_arrays(["boxes", "classes", "scores", "count"]))
    check(found, SSD_BOXES, [0.8, 0.6], [17, 0])


def test_ssd_tf2_order_is_resolved_from_the_values() -> None:
    layout = recognise(image_input(300, 300), ssd_tf2(4))
    decoder = Decoder(layout, OPTIONS)
    order = ["scores", "boxes", "count", "classes"]
    empty = ssd_arrays(order)
    empty[2][0] = 0.0  # no detection: nothing tells classes from scores yet
    assert len(decoder.decode(empty)) == 0
    check(decoder.decode(ssd_arrays(order)), SSD_BOXES, [0.8, 0.6], [17, 0])
    # Once known, kept: classes 0 and 1 with scores of exactly 1.0, which values
    # alone could not tell apart (read the other way round: one detection of class 1).
    frame = ssd_arrays(order)
    frame[3][0, :2], frame[0][0, :2], frame[2][0] = [0.0, 1.0], [1.0, 1.0], 2.0
    check(decoder.decode(frame), SSD_BOXES, [1.0, 1.0], [0, 1])


def test_ssd_classes_told_by_values_when_all_ids_are_small() -> None:
    # Only class 0 and 1 in the frame: the scores' fractions tell them apart.
    specs = [spec("a", (1, 4)), spec("b", (1, 4, 4)), spec("c", (1,)), spec("d", (1, 4))]
    decoder = Decoder(recognise(image_input(300, 300), specs), OPTIONS)
    frame = ssd_arrays(["classes", "boxes", "count", "scores"])
    frame[0][0, 0] = 1.0
    check(decoder.decode(frame), SSD_BOXES, [0.8, 0.6], [1, 0])


def test_ssd_signature_names_say_which_is_which() -> None:
    specs = [
        spec("detection_scores", (1, 4)),
        spec("detection_classes", (1, 4)),
        spec("detection_boxes", (1, 4, 4)),
        spec("num_detections", (1,)),
    ]
    layout = recognise(image_input(300, 300), specs)
    assert layout.ssd is not None
    assert layout.ssd.named == (1, 0)


def test_ssd_count_beyond_the_rows_is_clipped() -> None:
    layout = recognise(image_input(300, 300), ssd_tf1(4))
    frame = ssd_arrays(["boxes", "classes", "scores", "count"])
    frame[3][0] = 99.0
    found = Decoder(layout, DecodeOptions(min_score=0.0)).decode(frame)
    assert len(found) == 4


def test_max_detections_keeps_the_best() -> None:
    layout = recognise(image_input(300, 300), ssd_tf1(4))
    decoder = Decoder(layout, DecodeOptions(max_detections=1))
    found = decoder.decode(ssd_arrays(["boxes", "classes", "scores", "count"]))
    assert found.scores.tolist() == pytest.approx([0.8])


def test_boxes_mapped_to_the_frame_drop_those_in_the_bands() -> None:
    found = Detections.ranked(
        np.array([[0.25, 0.5, 0.75, 0.75], [0.1, 0.0, 0.2, 0.1]], dtype=np.float32),
        np.array([0.9, 0.8], dtype=np.float32),
        np.array([1, 2]),
    )
    # A 2:1 frame letterboxed into 100x100: it fills rows 25 to 75.
    mapped = found.to_frame(Placement(0, 25, 100, 50), (100, 100))
    check(mapped, [[0.25, 0.5, 0.75, 1.0]], [0.9], [1])


@pytest.mark.parametrize("options", [{"min_score": 1.5}, {"iou": -0.1}, {"max_detections": 0}])
def test_bad_options_are_config_errors(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        DecodeOptions(**options)  # type: ignore[arg-type]

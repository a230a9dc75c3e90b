"""Letterbox, crop and stretch placements, and boxes mapped back to the frame."""

import numpy as np
import pytest
from PIL import Image

from edge_agent.model.detection.detector import pixel_table
from edge_agent.model.detection.geometry import default_resize, to_frame, to_normalized
from edge_agent.model.preprocess import YOLO_FILL, ImageLayout, Placement, fit, place
from edge_agent.model.runtime import TensorSpec

SQUARE = ImageLayout(320, 320, 3)


def test_letterbox_placement_of_a_4_3_frame() -> None:
    # 640x480 scaled by 0.5 is 320x240, centred: 40 rows of padding above.
    assert place((640, 480), SQUARE, "letterbox") == Placement(0, 40, 320, 240)
    assert place((480, 640), SQUARE, "letterbox") == Placement(40, 0, 240, 320)


def test_crop_placement_overhangs_the_tensor() -> None:
    # The centre 100x100 of a 300x100 frame fills a 10x10 tensor: scale 0.1.
    assert place((300, 100), ImageLayout(10, 10, 3), "crop") == Placement(-10, 0, 30, 10)


def test_stretch_placement_fills_the_tensor() -> None:
    assert place((640, 480), SQUARE, "stretch") == Placement(0, 0, 320, 320)


def test_letterboxed_box_maps_back_to_the_frame() -> None:
    placement = place((640, 480), SQUARE, "letterbox")
    boxes = np.array([[0.0, 40 / 320, 1.0, 280 / 320], [0.5, 0.5, 0.75, 0.75]])
    mapped = to_frame(boxes, placement, (320, 320))
    expected = np.array([[0, 0, 1, 1], [0.5, 0.5, 0.75, 200 / 240]])
    np.testing.assert_allclose(mapped, expected, atol=1e-6)


def test_cropped_box_maps_back_to_the_whole_frame() -> None:
    placement = place((300, 100), ImageLayout(10, 10, 3), "crop")
    mapped = to_frame(np.array([[0.0, 0.0, 1.0, 1.0]]), placement, (10, 10))
    np.testing.assert_allclose(mapped, [[1 / 3, 0, 2 / 3, 1]], atol=1e-6)


def test_stretched_boxes_are_unchanged_and_clipped() -> None:
    boxes = np.array([[-0.1, 0.2, 0.5, 1.2]])
    mapped = to_frame(boxes, Placement(0, 0, 300, 300), (300, 300))
    np.testing.assert_allclose(mapped, [[0.0, 0.2, 0.5, 1.0]], atol=1e-6)


def test_letterbox_pads_with_the_fill_and_keeps_the_frame() -> None:
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    boxed = np.asarray(fit(image, ImageLayout(10, 10, 3), "letterbox", YOLO_FILL))
    assert boxed[:2].tolist() == [[[114, 114, 114]] * 10] * 2  # 2.5 rows of band
    assert boxed[3:7].reshape(-1, 3).tolist() == [[255, 0, 0]] * 40
    grey = np.asarray(fit(image.convert("L"), ImageLayout(10, 10, 1), "letterbox", 114))
    assert grey[0].tolist() == [114] * 10


def test_pixels_or_normalized_boxes() -> None:
    pixels = np.array([[32.0, 16.0, 64.0, 48.0]])
    np.testing.assert_allclose(to_normalized(pixels, (320, 160)), [[0.1, 0.1, 0.2, 0.3]])
    normalized = np.array([[0.1, 0.1, 1.2, 0.3]])  # a box may overhang a little
    assert to_normalized(normalized, (320, 160)) is normalized


def test_yolo_letterboxes_and_ssd_stretches_by_default() -> None:
    assert default_resize("yolov8") == "letterbox"
    assert default_resize("yolo-e2e") == "letterbox"
    assert default_resize("ssd") == "stretch"


def input_spec(dtype: str, scale: float, zero_point: int) -> TensorSpec:
    return TensorSpec("in", 0, (1, 8, 8, 3), np.dtype(dtype), scale, zero_point)


@pytest.mark.parametrize(
    ("spec", "family", "expected"),
    [
        # The SSD starter model: real = (q - 128) / 128 ~ (pixel - 127.5) / 127.5.
        (input_spec("uint8", 1 / 128, 128), "ssd", {0: 0, 64: 64, 127: 127, 255: 255}),
        # The usual int8 YOLO: pixel / 255 is q + 128 steps of 1/255.
        (input_spec("int8", 1 / 255, -128), "yolov8", {0: -128, 100: -28, 255: 127}),
        # Another int8 YOLO export: pixel / 255 through its own scale and zero point.
        (input_spec("int8", 0.0187, -14), "yolov8", {0: -14, 255: 39}),
        (input_spec("float32", 0.0, 0), "yolov8", {0: 0.0, 51: 0.2, 255: 1.0}),
        (input_spec("float32", 0.0, 0), "ssd", {0: -1.0, 255: 1.0}),
        (input_spec("uint8", 0.0, 0), "yolov5", {0: 0, 200: 200}),
    ],
)
def test_pixel_table_uses_the_input_quantization(
    spec: TensorSpec, family: str, expected: dict[int, float]
) -> None:
    table = pixel_table(spec, family)
    assert table.dtype == spec.dtype
    assert {p: float(table[p]) for p in expected} == pytest.approx(expected)

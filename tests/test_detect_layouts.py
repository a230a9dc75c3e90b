"""Recognising the detector family from a model's tensors."""

import pytest

from edge_agent.errors import ModelError
from edge_agent.model.detection.layouts import anchors, looks_like_detector, model_kind, recognise

from .detect_fakes import image_input, spec, ssd_tf1, ssd_tf2


def test_anchor_counts_of_the_usual_sizes() -> None:
    assert anchors((640, 640)) == 8400
    assert anchors((320, 320)) == 2100
    assert anchors((640, 480)) == 80 * 60 + 40 * 30 + 20 * 15


@pytest.mark.parametrize(
    ("shape", "size", "family", "classes", "transposed"),
    [
        ((1, 84, 8400), 640, "yolov8", 80, False),
        ((1, 6, 2100), 320, "yolov8", 2, False),
        ((1, 8400, 84), 640, "yolov8", 80, True),  # anchor count on the other axis
        ((1, 84, 500), 96, "yolov8", 80, False),  # no anchor count matches: by shape
        ((1, 25200, 85), 640, "yolov5", 80, False),
        ((1, 25200, 6), 640, "yolov5", 1, False),  # one class: [N, 6], told by N
        ((1, 300, 6), 640, "yolo-e2e", 0, False),
        ((1, 1000, 8), 640, "yolov5", 3, False),  # more rows than values: by shape
    ],
)
def test_yolo_heads(
    shape: tuple[int, ...], size: int, family: str, classes: int, transposed: bool
) -> None:
    layout = recognise(image_input(size, size), [spec("Identity", shape)])
    assert (layout.family, layout.classes, layout.transposed) == (family, classes, transposed)
    assert layout.input_size == (size, size)


def test_ssd_tf1_is_recognised_and_named() -> None:
    layout = recognise(image_input(300, 300), ssd_tf1())
    assert layout.family == "ssd"
    assert layout.ssd is not None
    assert (layout.ssd.boxes, layout.ssd.count, layout.ssd.named) == (0, 3, (1, 2))


def test_ssd_tf2_is_recognised_by_shape_and_left_to_the_values() -> None:
    layout = recognise(image_input(320, 320), ssd_tf2())
    assert layout.ssd is not None
    assert (layout.ssd.boxes, layout.ssd.count, layout.ssd.pair) == (1, 2, (0, 3))
    assert layout.ssd.named is None


def test_kind_overrides_the_guess() -> None:
    head = [spec("Identity", (1, 300, 6))]
    assert recognise(image_input(), head, kind="yolov5").family == "yolov5"
    assert recognise(image_input(), head, kind="yolo-e2e", classes=3).classes == 3


def test_kind_that_does_not_fit_names_the_outputs() -> None:
    with pytest.raises(
        ModelError, match=r"unrecognised ssd detection outputs: 'Identity' \[1,84,8400\]"
    ):
        recognise(image_input(), [spec("Identity", (1, 84, 8400))], kind="ssd")


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ModelError, match="kind 'classifier' is not a detector"):
        recognise(image_input(), [spec("Identity", (1, 84, 8400))], kind="classifier")


@pytest.mark.parametrize(
    "outputs",
    [
        [spec("head", (1, 3, 4))],
        [spec("head", (1, 84, 8400, 1))],
        [spec("a", (1, 10, 4)), spec("b", (1, 10)), spec("c", (1, 9)), spec("d", (1,))],
        [spec("a", (1, 10, 4)), spec("b", (1, 10))],
    ],
)
def test_unrecognised_layouts_name_every_output(outputs: list) -> None:  # type: ignore[type-arg]
    with pytest.raises(ModelError, match="unrecognised detection outputs") as caught:
        recognise(image_input(), outputs, source="det.tflite")
    message = str(caught.value)
    assert message.startswith("det.tflite: ")
    for output in outputs:
        assert f"'{output.name}' [{','.join(map(str, output.shape))}]" in message


def test_a_detector_needs_an_image_input() -> None:
    with pytest.raises(ModelError, match="takes one image input"):
        recognise([spec("x", (1, 10))], [spec("Identity", (1, 84, 8400))])


def test_model_kind_for_inspect() -> None:
    assert model_kind(image_input(), [spec("p", (1, 1001), "uint8")]) == "classifier"
    assert model_kind([spec("x", (1, 1))], [spec("y", (1, 1))]) == "other"
    assert model_kind(image_input(), [spec("h", (1, 84, 8400))]) == "yolov8"
    assert model_kind(image_input(300, 300), ssd_tf2()) == "ssd"
    assert model_kind(image_input(), [spec("h", (1, 3, 4))]) == "other"


def test_looks_like_detector() -> None:
    assert looks_like_detector(image_input(), [spec("h", (1, 3, 4))])
    assert looks_like_detector(image_input(), [spec("b", (1, 5, 4)), spec("c", (1, 5))])
    assert not looks_like_detector(image_input(), [spec("p", (1, 1001))])
    assert not looks_like_detector(image_input(), [spec("mask", (1, 64, 64, 21))])
    assert not looks_like_detector([spec("seq", (1, 28, 28, 5))], [spec("h", (1, 3, 4))])

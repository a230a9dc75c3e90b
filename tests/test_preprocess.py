import io

import numpy as np
import pytest
from PIL import Image

from edge_agent.errors import InputError, ModelError
from edge_agent.model.preprocess import (
    ImageLayout,
    ImagePreprocessor,
    fit,
    open_image,
    pixels_to_tensor,
)
from edge_agent.model.runtime import TensorSpec

from .conftest import FIXTURE_IMAGES


def spec(shape: tuple[int, ...], dtype: type = np.uint8) -> TensorSpec:
    return TensorSpec("input", 0, shape, np.dtype(dtype), 1.0 / 255, 0)


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_layout_reads_nhwc_and_grey_sequences() -> None:
    assert ImageLayout.of(spec((1, 96, 64, 3))) == ImageLayout(96, 64, 3)
    assert ImageLayout.of(spec((1, 28, 28))).mode == "L"
    with pytest.raises(ModelError, match="does not take an image"):
        ImageLayout.of(spec((1, 1)))


def test_prepare_converts_colour_mode_and_size() -> None:
    rgba = Image.new("RGBA", (300, 200), (10, 20, 30, 255))
    tensor = ImagePreprocessor(spec((1, 32, 48, 1))).prepare(encode(rgba))
    assert tensor.shape == (1, 32, 48, 1)
    assert tensor.dtype == np.uint8
    grey = round(0.299 * 10 + 0.587 * 20 + 0.114 * 30)
    assert abs(int(tensor.mean()) - grey) <= 1


@pytest.mark.parametrize(
    ("dtype", "expected"), [(np.uint8, 200), (np.int8, 72), (np.float32, pytest.approx(200 / 255))]
)
def test_pixels_map_to_tensor_by_dtype(dtype: type, expected: object) -> None:
    pixels = np.full((2, 2, 3), 200, dtype=np.uint8)
    tensor = pixels_to_tensor(pixels, spec((1, 2, 2, 3), dtype))
    assert tensor.dtype == np.dtype(dtype)
    assert tensor.shape == (1, 2, 2, 3)
    assert tensor.flat[0] == expected


def test_crop_keeps_the_centre_and_letterbox_pads() -> None:
    # Left third red, middle third green, right third blue.
    image = Image.new("RGB", (300, 100))
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        image.paste(colour, (i * 100, 0, (i + 1) * 100, 100))
    layout = ImageLayout(10, 10, 3)
    cropped = np.asarray(fit(image, layout, "crop"))
    assert cropped[:, :, 1].min() > 200  # the green middle fills the frame
    assert cropped[:, 1:-1, [0, 2]].max() == 0  # red and blue are cut off
    boxed = np.asarray(fit(image, layout, "letterbox"))
    assert boxed[0].max() == 0  # top rows are padding
    assert boxed[5, 0, 0] > 200  # the red left edge is kept
    assert boxed[5, 9, 2] > 200  # and the blue right edge


def test_draft_decoding_keeps_at_least_the_model_size() -> None:
    data = (FIXTURE_IMAGES / "cat_720p.jpg").read_bytes()
    preprocessor = ImagePreprocessor(spec((1, 128, 128, 3)))
    encoded = Image.open(io.BytesIO(data))
    preprocessor._use_draft(encoded)
    assert encoded.size == (320, 180)  # libjpeg decoded at 1/4 scale
    fast = preprocessor.prepare(data).astype(np.int16)
    slow = ImagePreprocessor(spec((1, 128, 128, 3)), draft=False).prepare(data).astype(np.int16)
    assert np.abs(fast - slow).mean() < 4.0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty image"),
        (b"this is not an image at all", "not a readable image"),
        (encode(Image.new("RGB", (64, 64)), "JPEG")[:200], "not a readable image"),
    ],
    ids=["zero-byte", "not-an-image", "truncated-jpeg"],
)
def test_bad_images_raise_input_error(data: bytes, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        ImagePreprocessor(spec((1, 8, 8, 3))).prepare(data)


@pytest.mark.parametrize(
    ("size", "reason"),
    [((20000, 20000), "image too large"), ((8000, 6000), "8000x6000 pixels exceeds the limit")],
)
def test_oversized_images_are_refused_before_decoding(size: tuple[int, int], reason: str) -> None:
    bomb = encode(Image.new("1", size))
    assert len(bomb) < 200_000
    with pytest.raises(InputError, match=reason):
        ImagePreprocessor(spec((1, 8, 8, 3))).prepare(bomb)


def test_jpeg_opened_directly_decodes_as_image_open_does() -> None:
    data = (FIXTURE_IMAGES / "cat_720p.jpg").read_bytes()
    direct, generic = open_image(data), Image.open(io.BytesIO(data))
    assert (direct.format, direct.size, direct.mode) == (generic.format, generic.size, generic.mode)
    direct.draft("RGB", (224, 224))
    generic.draft("RGB", (224, 224))
    assert np.array_equal(np.asarray(direct), np.asarray(generic))


def test_damaged_jpeg_headers_are_input_errors_never_crashes() -> None:
    """Every truncation of a JPEG's header region and random bytes written into
    it: the direct JPEG path must turn whatever Pillow's parser raises into an
    InputError, as Image.open does for other formats."""
    good = encode(Image.new("RGB", (48, 32), (200, 30, 60)), "JPEG")
    preprocessor = ImagePreprocessor(spec((1, 8, 8, 3)))
    damaged = [good[:n] for n in range(3, 700, 7)]
    rng = np.random.default_rng(3)
    for _ in range(300):
        corrupt = bytearray(good)
        at = rng.integers(3, 620, size=rng.integers(1, 6))
        noise = rng.integers(0, 256, size=len(at)).astype(np.uint8).tobytes()
        corrupt[at[0] : at[0] + len(at)] = noise
        damaged.append(bytes(corrupt))
    refusals, shapes = [], set()
    for data in damaged:
        try:
            shapes.add(preprocessor.prepare(data).shape)
        except InputError as exc:  # anything else fails the test
            refusals.append(str(exc))
    assert len(refusals) > 50  # the damage was real: many headers cannot be read
    assert all(refusals)
    assert shapes <= {(1, 8, 8, 3)}

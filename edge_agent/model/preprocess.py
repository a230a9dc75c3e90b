"""Image preprocessing: encoded bytes in, a tensor shaped for the model out."""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from edge_agent.errors import InputError, ModelError
from edge_agent.model.runtime import TensorSpec

ResizeMode = Literal["stretch", "crop", "letterbox"]

DEFAULT_MAX_PIXELS = 40_000_000  # above 8K video; a 20000x20000 bomb is 400M
YOLO_FILL = 114  # the grey YOLO models were trained to see around a letterboxed frame


@dataclass(frozen=True)
class Placement:
    """Where the frame landed in the input tensor: its rectangle in tensor pixels.
    Stretch fills the tensor; letterbox leaves bands; crop overhangs it (negative
    left or top), so a point in the tensor maps back to the whole frame."""

    left: float
    top: float
    width: float
    height: float


MIN_SIDE = 8  # pixels; image models take far more, sequence models' channels are fewer


@dataclass(frozen=True)
class ImageLayout:
    """Where an image sits in a model's input tensor."""

    height: int
    width: int
    channels: int

    @classmethod
    def of(cls, spec: TensorSpec) -> ImageLayout:
        """[1, H, W, C] with C in (1, 3), or [1, H, W] for one grey channel; H and W
        at least MIN_SIDE, so that a sensor model's [1, 64, 3] (64 samples of 3
        channels) is not taken for a 64x3 grey image."""
        shape = spec.shape
        layout = None
        if len(shape) == 4 and shape[0] == 1 and shape[3] in (1, 3):
            layout = cls(shape[1], shape[2], shape[3])
        elif len(shape) == 3 and shape[0] == 1:
            layout = cls(shape[1], shape[2], 1)
        if layout is None or min(layout.height, layout.width) < MIN_SIDE:
            raise ModelError(f"input {spec.name!r} with shape {list(shape)} does not take an image")
        return layout

    @property
    def mode(self) -> str:
        return "RGB" if self.channels == 3 else "L"


class ImagePreprocessor:
    """Decode, convert and resize one frame for one model input; `prepare` is its verb.

    Pixels map to the tensor by the usual TFLite convention for image models:
    uint8 tensors take the pixel values, int8 tensors pixel - 128, float
    tensors pixel / 255.
    """

    def __init__(
        self,
        spec: TensorSpec,
        *,
        resize: ResizeMode = "stretch",
        draft: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        fill: int = 0,
    ) -> None:
        self.spec = spec
        self.layout = ImageLayout.of(spec)
        self.resize = resize
        self.draft = draft
        self.max_pixels = max_pixels
        self.fill = fill

    def prepare(self, data: bytes) -> np.ndarray:
        """The input tensor for one encoded image; `InputError` if it is unusable."""
        pixels = np.asarray(self.decode(data), dtype=np.uint8)
        return pixels_to_tensor(pixels, self.spec)

    def decode(self, data: bytes) -> Image.Image:
        """The frame as a PIL image of the model's size and colour mode."""
        return self.decode_placed(data)[0]

    def decode_placed(self, data: bytes) -> tuple[Image.Image, Placement]:
        """`decode`, and where the frame sits in the result (to map boxes back)."""
        if not data:
            raise InputError("empty image (0 bytes)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                encoded = open_image(data)
                self._check_size(encoded)
                if self.draft:
                    self._use_draft(encoded)
                if encoded.mode in WIDE_MODES:
                    encoded = to_8_bit(encoded)
                if encoded.mode != self.layout.mode:  # convert() would copy even then
                    encoded = encoded.convert(self.layout.mode)
                # Draft decoding keeps the aspect ratio, so a placement computed on the
                # decoded size holds for the original frame in normalized coordinates.
                placement = place(encoded.size, self.layout, self.resize)
                return fit(encoded, self.layout, self.resize, self.fill), placement
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InputError(f"image too large: {exc}") from exc
        except (OSError, SyntaxError, ValueError, IndexError, TypeError, struct.error) as exc:
            # The last three: what a plugin's header parser raises on garbage, which
            # Image.open would have turned into an OSError (see open_image).
            raise InputError(f"not a readable image: {str(exc) or type(exc).__name__}") from exc

    def _check_size(self, image: Image.Image) -> None:
        width, height = image.size
        if width * height > self.max_pixels:
            raise InputError(
                f"image of {width}x{height} pixels exceeds the limit of {self.max_pixels} pixels"
            )

    def _use_draft(self, image: Image.Image) -> None:
        """Let libjpeg decode at 1/2, 1/4 or 1/8 scale while the result still covers
        the model's size: its scaled IDCT averages pixels as a resize would, at a
        fraction of the cost of decoding every pixel."""
        if image.format == "JPEG":
            image.draft(self.layout.mode, (self.layout.width, self.layout.height))


JPEG_START = b"\xff\xd8\xff"  # SOI, then the first marker
# Greyscale with more than 8 bits a pixel: 16-bit PNG and TIFF (thermal, depth and
# machine-vision cameras). Pillow's convert() clips these to 255 instead of scaling.
WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_WIDE_MAX = 65535  # "I" holds 32-bit values; from a camera they are 16-bit ones


def to_8_bit(image: Image.Image) -> Image.Image:
    """A 16-bit greyscale image scaled to 8 bits ("L"): 0 stays 0, 65535 becomes
    255, each value rounded to the nearest of the 256 levels."""
    wide = np.clip(np.asarray(image), 0, _WIDE_MAX).astype(np.uint32)
    narrow = ((wide * 255 + _WIDE_MAX // 2) // _WIDE_MAX).astype(np.uint8)
    return Image.fromarray(narrow)


def open_image(data: bytes) -> Image.Image:
    """The encoded image, not yet decoded. JPEG, what cameras send, goes straight to
    Pillow's JPEG plugin: `Image.open` would first import the BMP, GIF, PPM and PNG
    plugins too, 0.7 MB of resident memory for formats a camera never sends. Any
    other format goes through `Image.open`."""
    if data.startswith(JPEG_START):
        from PIL import JpegImagePlugin  # noqa: PLC0415 - loaded on the first frame

        return JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    return Image.open(io.BytesIO(data))


def fit(image: Image.Image, layout: ImageLayout, mode: ResizeMode, fill: int = 0) -> Image.Image:
    """Resize to the layout's size: stretch the whole frame, centre-crop, or letterbox
    (bands of grey level `fill`)."""
    size = (layout.width, layout.height)
    if mode == "stretch" or image.size == size:
        return image.resize(size, Image.Resampling.BILINEAR)
    if mode == "crop":
        return image.resize(size, Image.Resampling.BILINEAR, box=_crop_box(image.size, size))
    left, top, width, height = _letterbox_rect(image.size, size)
    colour = fill if image.mode == "L" else (fill,) * len(image.getbands())
    canvas = Image.new(image.mode, size, colour)
    canvas.paste(image.resize((width, height), Image.Resampling.BILINEAR), (left, top))
    return canvas


def place(frame: tuple[int, int], layout: ImageLayout, mode: ResizeMode) -> Placement:
    """The frame's rectangle in the tensor as `fit` puts it there (sizes are width, height)."""
    size = (layout.width, layout.height)
    if mode == "stretch" or frame == size:
        return Placement(0.0, 0.0, float(size[0]), float(size[1]))
    if mode == "crop":
        x0, y0, x1, y1 = _crop_box(frame, size)
        scale_x, scale_y = size[0] / (x1 - x0), size[1] / (y1 - y0)
        return Placement(-x0 * scale_x, -y0 * scale_y, frame[0] * scale_x, frame[1] * scale_y)
    left, top, width, height = _letterbox_rect(frame, size)
    return Placement(float(left), float(top), float(width), float(height))


def _crop_box(frame: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centred region of the frame with the tensor's aspect ratio."""
    width, height = frame
    dst_ratio = size[0] / size[1]
    if width / height > dst_ratio:
        new_width = round(height * dst_ratio)
        left = (width - new_width) // 2
        return (left, 0, left + new_width, height)
    new_height = round(width / dst_ratio)
    top = (height - new_height) // 2
    return (0, top, width, top + new_height)


def _letterbox_rect(frame: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """left, top, width, height of the whole frame scaled to fit, centred."""
    scale = min(size[0] / frame[0], size[1] / frame[1])
    width, height = max(1, round(frame[0] * scale)), max(1, round(frame[1] * scale))
    return (size[0] - width) // 2, (size[1] - height) // 2, width, height


def pixels_to_tensor(pixels: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """uint8 pixels (H, W[, C]) as the tensor `spec` takes, with its batch dimension."""
    if spec.dtype == np.uint8:
        tensor = pixels
    elif spec.dtype == np.int8:
        tensor = (pixels.astype(np.int16) - 128).astype(np.int8)
    elif spec.dtype.kind == "f":
        tensor = pixels.astype(spec.dtype) / np.float32(255.0)
    else:
        raise ModelError(f"input {spec.name!r} of type {spec.dtype.name} cannot take pixels")
    return tensor.reshape(spec.shape)

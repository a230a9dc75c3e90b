"""A loaded detection model behind one verb: `detect(frame) -> Detections`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from PIL import Image

from edge_agent.errors import ModelError
from edge_agent.model.detection.decode import DecodeOptions, Decoder
from edge_agent.model.detection.geometry import default_resize
from edge_agent.model.detection.labels import DetectionLabels
from edge_agent.model.detection.layouts import DetectionLayout, recognise
from edge_agent.model.detection.types import Detections
from edge_agent.model.preprocess import (
    DEFAULT_MAX_PIXELS,
    YOLO_FILL,
    ImagePreprocessor,
    Placement,
    ResizeMode,
    fit,
    place,
)
from edge_agent.model.quant import quantize
from edge_agent.model.runtime import Model, TensorSpec

log = logging.getLogger(__name__)


class Detector:
    """A detection model with its layout, resize and decoding settled at start: an
    output layout it cannot read is refused here (`ModelError`), not on a frame.

    `detect` is the verb. A pipeline that decodes frames ahead of the model uses
    its halves: `prepare` (frame -> tensor and placement), then `model.infer`,
    then `decode` (outputs and placement -> detections on the frame)."""

    def __init__(
        self,
        model: Model,
        *,
        kind: str | None = None,
        options: DecodeOptions | None = None,
        resize: ResizeMode | None = None,
        classes: int | None = None,
        labels: DetectionLabels | None = None,
        draft: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.model = model
        self.labels = labels or DetectionLabels()
        self.layout: DetectionLayout = recognise(
            model.inputs, model.outputs, kind=kind, classes=classes, source=model.label
        )
        self.resize: ResizeMode = resize or default_resize(self.layout.family)
        spec = model.inputs[0]
        self._pre = ImagePreprocessor(
            spec, resize=self.resize, draft=draft, max_pixels=max_pixels, fill=YOLO_FILL
        )
        self._table = pixel_table(spec, self.layout.family)
        self._decoder = Decoder(self.layout, options or DecodeOptions(), model.label)
        log.debug(
            "%s: %s detector, %dx%d input (%s, %s), %s",
            model.label,
            self.layout.family,
            *self.layout.input_size,
            spec.dtype.name,
            self.resize,
            f"{self.layout.classes} classes" if self.layout.classes else "classes unknown",
        )

    @property
    def options(self) -> DecodeOptions:
        return self._decoder.options

    def detect(self, frame: bytes | Image.Image) -> Detections:
        """Detections on one frame (encoded bytes or a decoded image), best first,
        boxes normalized to the frame; `InputError` for an unreadable frame."""
        tensor, placement = self.prepare(frame)
        return self.decode(self.model.infer(tensor), placement)

    def prepare(self, frame: bytes | Image.Image) -> tuple[np.ndarray, Placement]:
        """The input tensor for a frame, and where the frame sits in it."""
        if isinstance(frame, Image.Image):
            image, placement = self._fit(frame)
        else:
            image, placement = self._pre.decode_placed(frame)
        pixels = np.asarray(image, dtype=np.uint8)
        return self._table[pixels].reshape(self.model.inputs[0].shape), placement

    def decode(self, outputs: Sequence[np.ndarray], placement: Placement) -> Detections:
        """One inference's dequantized outputs -> named detections on the frame."""
        found = self._decoder.decode(outputs)
        return found.to_frame(placement, self.layout.input_size).named(self.labels)

    def _fit(self, image: Image.Image) -> tuple[Image.Image, Placement]:
        layout = self._pre.layout
        if image.mode != layout.mode:
            image = image.convert(layout.mode)
        placement = place(image.size, layout, self.resize)
        return fit(image, layout, self.resize, YOLO_FILL), placement


def pixel_table(spec: TensorSpec, family: str) -> np.ndarray:
    """The input value for each pixel value 0..255, quantized with the input's own
    scale and zero point: a lookup per pixel then prepares the whole frame.

    The real values are what each family was trained on: YOLO takes pixel / 255,
    the TensorFlow SSDs (pixel - 127.5) / 127.5. An int8 YOLO export calibrated
    with another range (scale 0.0187, zero point -14 is one) is still fed pixel /
    255, as its training expects, through its own quantization."""
    pixels = np.arange(256, dtype=np.float32)
    real = pixels / np.float32(127.5) - np.float32(1.0) if family == "ssd" else pixels / 255
    if spec.dtype.kind == "f":
        return real.astype(spec.dtype)
    if spec.dtype.kind not in "iu":
        raise ModelError(f"input {spec.name!r} of type {spec.dtype.name} cannot take pixels")
    if not spec.quantized:  # an integer input without parameters takes the pixels themselves
        offset = 128 if spec.dtype.kind == "i" else 0
        return (pixels - offset).astype(spec.dtype)
    return quantize(real, spec.scale, spec.zero_point, spec.dtype)

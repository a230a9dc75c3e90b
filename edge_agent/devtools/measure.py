"""Measurements shared by the bench and the detection bench: timed loops, the
CPU-bound limit, and the frames they run on (synthetic, or photos varied)."""

from __future__ import annotations

import glob
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edge_agent.errors import ConfigError
from edge_agent.model.preprocess import ImagePreprocessor
from edge_agent.model.runtime import Model
from edge_agent.util.percentile import percentiles

FRAME_SIZE = (1280, 720)
FRAME_COUNT = 8
DEVICE = "bench"
WARMUP_CALLS = 5


# -- timing loops ------------------------------------------------------------------


@dataclass(frozen=True)
class LoopStats:
    """`items` calls of one function: wall and process CPU seconds, latency percentiles."""

    items: int
    wall: float
    cpu: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.items / self.wall if self.wall else 0.0

    @property
    def cpu_per_item(self) -> float:
        return self.cpu / self.items if self.items else 0.0

    def plus(self, other: LoopStats) -> LoopStats:
        """Two spans of the same loop as one (a baseline measured before and after
        what it is compared with, on a machine whose speed drifts): totals add up,
        percentiles are the mean of the two."""
        return LoopStats(
            self.items + other.items,
            self.wall + other.wall,
            self.cpu + other.cpu,
            (self.p50_ms + other.p50_ms) / 2,
            (self.p99_ms + other.p99_ms) / 2,
        )


def percentiles_ms(seconds: Sequence[float]) -> tuple[float, float]:
    if not seconds:
        return 0.0, 0.0
    p50, p99 = percentiles(seconds, (50, 99))  # not numpy's: see edge_agent/percentile.py
    return p50 * 1e3, p99 * 1e3


def timed_loop(step: Callable[[int], object], seconds: float) -> LoopStats:
    """Call `step(i)` for `seconds` of wall time, on this thread, after a short warm-up."""
    for i in range(WARMUP_CALLS):
        step(i)
    calls: list[float] = []
    clock = time.perf_counter
    cpu0, start = time.process_time(), clock()
    end = start + seconds
    now = start
    while now < end or not calls:
        step(len(calls))
        after = clock()
        calls.append(after - now)
        now = after
    cpu = time.process_time() - cpu0
    return LoopStats(len(calls), now - start, cpu, *percentiles_ms(calls))


def measure_ceiling(model: Model, seconds: float) -> LoopStats:
    """`Model.infer` on a ready tensor of the input's dtype: the model's own speed."""
    spec = model.inputs[0]
    tensor = np.random.default_rng(0).integers(0, 256, size=spec.shape).astype(spec.dtype)
    return timed_loop(lambda _: model.infer(tensor), seconds)


def measure_decode(model: Model, frames: Sequence[bytes], seconds: float) -> LoopStats:
    """The pipeline's preprocessing of encoded frames, as a camera pipeline does it."""
    prepare = ImagePreprocessor(model.inputs[0]).prepare
    return timed_loop(lambda i: prepare(frames[i % len(frames)]), seconds)


def cpu_bound_limit(invoke_1: LoopStats, decode: LoopStats, cores: int) -> float:
    """Frames/s that decode + invoke allow on `cores`: cores / (CPU per invoke on one
    thread + CPU per decode), whatever threads a pipeline uses (more threads per
    invoke cost more CPU, never less; several interpreters can keep every core busy)."""
    per_frame = invoke_1.cpu_per_item + decode.cpu_per_item
    return cores / per_frame if per_frame else 0.0


# -- frames ------------------------------------------------------------------------------


def synthetic_frame(seed: int, size: tuple[int, int] = FRAME_SIZE) -> Image.Image:
    """A camera-like scene: a lit gradient, a few objects, slight blur, sensor noise."""
    # Imported here, not at the top: the pipeline's child process (measured for
    # its peak RSS) would otherwise carry modules the agent itself never loads.
    from PIL import ImageDraw, ImageFilter  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    width, height = size
    shade = np.linspace(0.0, 1.0, height)[:, None, None]
    sky, ground = rng.uniform(60, 220, 3), rng.uniform(30, 160, 3)
    pixels = np.broadcast_to(sky * (1 - shade) + ground * shade, (height, width, 3))
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(40, 320, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x, y, x + w, y + h), fill=colour)
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    noisy = blurred + rng.normal(0, 5, blurred.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def photo_variation(
    photo: Image.Image, seed: int, size: tuple[int, int] = FRAME_SIZE
) -> Image.Image:
    """A crop of `photo` at the frame's aspect ratio, resized, maybe mirrored, relit."""
    from PIL import ImageEnhance  # noqa: PLC0415 - see synthetic_frame

    rng = np.random.default_rng(seed)
    ratio = size[0] / size[1]
    crop_w = min(photo.width, photo.height * ratio) * rng.uniform(0.8, 1.0)
    crop_h = crop_w / ratio
    left, top = rng.uniform(0, photo.width - crop_w), rng.uniform(0, photo.height - crop_h)
    box = (left, top, left + crop_w, top + crop_h)
    frame = photo.convert("RGB").resize(size, Image.Resampling.BILINEAR, box=box)
    if rng.random() < 0.5:
        frame = frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return ImageEnhance.Brightness(frame).enhance(rng.uniform(0.85, 1.15))


def make_frames(
    dest: Path,
    count: int = FRAME_COUNT,
    photos: Sequence[Path] = (),
    quality: int = 85,
    size: tuple[int, int] = FRAME_SIZE,
) -> list[Path]:
    """`count` JPEGs of `size` in `dest`: variations of `photos`, or synthetic scenes."""
    dest.mkdir(parents=True, exist_ok=True)
    opened = [Image.open(p) for p in photos]
    paths = []
    for i in range(count):
        frame = (
            photo_variation(opened[i % len(opened)], i, size)
            if opened
            else synthetic_frame(i, size)
        )
        path = dest / f"frame_{i:03d}.jpg"
        frame.save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


def frame_files(pattern: str) -> list[Path]:
    found = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
    if not found:
        raise ConfigError(f"--frames: no file matches {pattern!r}")
    return found


# -- the pipeline, in a child process ----------------------------------------------------

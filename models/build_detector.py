"""Build the int8 shapes detectors (three YOLO-style output layouts) and the detection demo frames.

Run from the repository root, with TensorFlow in a separate virtualenv (see build.py):

    .venv-build/bin/python models/build_detector.py      # or: models/build.py --only detectors

One small anchor-free network is trained on synthetic 320x240 scenes with 0-3 circles
and squares, then exported three times with different head transforms:

- shapes_yolov8_int8.tflite: [1, 4+C, N]  cx, cy, w, h normalized, then C class scores
- shapes_yolov5_int8.tflite: [1, N, 5+C]  cx, cy, w, h in input pixels, objectness, C scores
- shapes_e2e_int8.tflite:    [1, K, 6]    x1, y1, x2, y2 normalized, score, class (top-K in model)

detect_check.py (pure numpy reference decoder) scores every export on held-out scenes
and on the demo frames. models/README.md documents the tensors and the measured numbers.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import tempfile
import time
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from detect_check import (
    DEMO_DIR,
    LABELS_FILE,
    Detection,
    demo_frames,
    evaluate,
    print_table,
)
from PIL import Image
from tensorflow.lite.python.util import modify_model_io_type

from build import (
    FRAME_SIZE,
    MODELS_DIR,
    Shape,
    contrasting_color,
    jpeg_bytes,
    random_background,
    shape_mask,
    write_bytes,
    write_lines,
)

DET_SEED = 20240602
TRAIN_SEED, HELDOUT_SEED, DEMO_SEED = 11, 12, 13
LABELS = ("circle", "square")  # what the shapes classifier knows, minus "empty"
C = len(LABELS)
SIZE = 128  # square input; 320x240 frames letterbox to 128x96
LEVELS = ((16, 8), (32, 4))  # (stride, grid): N = 8*8 + 4*4 = 80 cells, P4 first, row-major
N = sum(grid * grid for _, grid in LEVELS)
SMALL_LEVEL_MAX = 24  # boxes up to 24 input pixels on the longer side go to stride 16
TOP_K = 10
TRAIN_COUNT, HELDOUT_COUNT, EPOCHS, BATCH = 6000, 600, 16, 32
E2E_INPUT_RANGE = (-0.1, 1.1)  # deliberately not 1/255: see README


# ---------------------------------------------------------------- scenes


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    boxes: tuple[tuple[float, float, float, float], ...]  # visible x1 y1 x2 y2, frame pixels


def shape_box(shape: Shape) -> tuple[float, float, float, float]:
    """The visible axis-aligned box of a (possibly rotated, possibly cut) shape, frame pixels."""
    (cx, cy), half = shape.center, shape.size / 2
    if shape.kind == "square":
        theta = np.deg2rad(shape.angle) + np.pi / 4 + np.arange(4) * np.pi / 2
        xs, ys = cx + half * np.sqrt(2) * np.cos(theta), cy + half * np.sqrt(2) * np.sin(theta)
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
    else:
        x1, y1, x2, y2 = cx - half, cy - half, cx + half, cy + half
    width, height = FRAME_SIZE
    return (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))


def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over the smaller box: how much one shape would hide the other."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def random_detect_shape(rng: np.random.Generator, background: np.ndarray) -> Shape:
    """A circle or square 12-40 % of the frame height; one in five is cut by the frame edge."""
    width, height = FRAME_SIZE
    kind = LABELS[int(rng.integers(C))]
    size = rng.uniform(0.12, 0.40) * height
    margin = size * (0.72 if rng.random() < 0.8 else 0.1)
    center = (rng.uniform(margin, width - margin), rng.uniform(margin, height - margin))
    x, y, half = int(center[0]), int(center[1]), int(size / 2)
    patch = np.clip(background[max(y - half, 0) : y + half, max(x - half, 0) : x + half], 0, 255)
    color = contrasting_color(rng, patch.reshape(-1, 3).mean(axis=0))
    angle = rng.uniform(-20, 20) if kind == "square" else 0.0
    return Shape(kind, center, size, angle, color)


def random_scene(rng: np.random.Generator, background: np.ndarray) -> Scene:
    count = int(rng.choice(4, p=(0.15, 0.35, 0.3, 0.2)))
    shapes: list[Shape] = []
    boxes: list[tuple[float, float, float, float]] = []
    for _ in range(count * 8):
        if len(shapes) == count:
            break
        shape = random_detect_shape(rng, background)
        box = shape_box(shape)
        visible = (box[2] - box[0]) * (box[3] - box[1]) / shape.size**2
        if visible > 0.5 and all(overlap(box, other) < 0.25 for other in boxes):
            shapes.append(shape)
            boxes.append(box)
    return Scene(tuple(shapes), tuple(boxes))


def render(
    background: np.ndarray, scene: Scene, noise: np.ndarray, brightness: float
) -> Image.Image:
    frame = background
    for shape in scene.shapes:
        mask = shape_mask(shape)
        frame = frame * (1 - mask) + np.array(shape.color, dtype=np.float32) * mask
    return Image.fromarray(np.clip(frame * brightness + noise, 0, 255).astype(np.uint8))


def random_frame(rng: np.random.Generator) -> tuple[Image.Image, Scene]:
    """A random scene, lit and noisy, after a JPEG round trip at a random quality."""
    background = random_background(rng)
    scene = random_scene(rng, background)
    noise = rng.normal(0, rng.uniform(2, 12), (*FRAME_SIZE[::-1], 3))
    image = render(background, scene, noise, rng.uniform(0.6, 1.25))
    data = jpeg_bytes(image, int(rng.integers(30, 91)))
    return Image.open(io.BytesIO(data)).convert("RGB"), scene


def to_model_input(
    image: Image.Image, boxes: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox (pad 114, 0 or grey; 3 in 4) or stretch the frame; boxes as cx cy w h 0-1."""
    width, height = image.size
    if rng.random() < 0.75:
        scale = min(SIZE / width, SIZE / height)
        sx = sy = scale
        inner = (round(width * scale), round(height * scale))
        dx, dy = (SIZE - inner[0]) // 2, (SIZE - inner[1]) // 2
        pad = (114, 0, int(rng.integers(0, 256)))[int(rng.choice(3, p=(0.6, 0.2, 0.2)))]
        canvas = Image.new("RGB", (SIZE, SIZE), (pad,) * 3)
        canvas.paste(image.resize(inner, Image.Resampling.BILINEAR), (dx, dy))
    else:
        sx, sy, dx, dy = SIZE / width, SIZE / height, 0, 0
        canvas = image.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    pixels = np.asarray(canvas, dtype=np.uint8)
    xyxy = boxes.reshape(-1, 4) * [sx, sy, sx, sy] + [dx, dy, dx, dy]
    cxcywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
        cxcywh[:, 0] = SIZE - cxcywh[:, 0]
    return np.ascontiguousarray(pixels), cxcywh / SIZE


def targets(cxcywh: np.ndarray, labels: list[int]) -> np.ndarray:
    """(N, 4+1+C) training targets: one positive cell per shape, at the cell holding its centre."""
    target = np.zeros((N, 5 + C), dtype=np.float32)
    for box, label in zip(cxcywh, labels, strict=True):
        level = 0 if max(box[2], box[3]) * SIZE <= SMALL_LEVEL_MAX else 1
        stride, grid = LEVELS[level]
        first = sum(g * g for _, g in LEVELS[:level])
        col = min(int(box[0] * SIZE / stride), grid - 1)
        row = min(int(box[1] * SIZE / stride), grid - 1)
        cell = first + row * grid + col
        target[cell, :4], target[cell, 4] = box, 1.0
        target[cell, 5:] = 0.0
        target[cell, 5 + label] = 1.0
    return target


def dataset(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (count, SIZE, SIZE, 3) model inputs and their (count, N, 5+C) targets."""
    rng = np.random.default_rng(seed)
    inputs, all_targets = [], []
    for _ in range(count):
        image, scene = random_frame(rng)
        pixels, boxes = to_model_input(image, np.array(scene.boxes, dtype=np.float64), rng)
        inputs.append(pixels)
        all_targets.append(targets(boxes, [LABELS.index(s.kind) for s in scene.shapes]))
    return np.stack(inputs), np.stack(all_targets)


def heldout_frames(count: int, seed: int) -> list[tuple[Image.Image, list[Detection]]]:
    """Whole 320x240 frames with their truth normalized to the frame, for detect_check."""
    rng = np.random.default_rng(seed)
    frames = []
    scale = np.array(FRAME_SIZE * 2, dtype=np.float64)
    for _ in range(count):
        image, scene = random_frame(rng)
        truth = [
            Detection(LABELS.index(s.kind), 1.0, tuple(float(v) for v in np.array(b) / scale))
            for s, b in zip(scene.shapes, scene.boxes, strict=True)
        ]
        frames.append((image, truth))
    return frames


# ---------------------------------------------------------------- network


class Decode(tf.keras.layers.Layer):
    """Raw head (B, g, g, 5+C) -> boxes (B, g*g, 4) cx cy w h normalized, logits (B, g*g, 1+C).

    Boxes and logits stay separate tensors: int8 gives each tensor one scale, and logits
    (about -20..10) would leave boxes a resolution of 1/10 of the frame.
    """

    def __init__(self, stride: int, grid: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.stride, self.grid = stride, grid
        xs, ys = np.meshgrid(np.arange(grid), np.arange(grid))
        self.offsets = np.stack([xs, ys], axis=-1).reshape(1, grid * grid, 2).astype(np.float32)

    def call(self, raw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raw = tf.reshape(raw, (-1, self.grid * self.grid, 5 + C))
        unit = self.stride / SIZE
        xy = (tf.sigmoid(raw[..., :2]) * 2.0 - 0.5 + self.offsets) * unit
        half_wh = tf.sigmoid(raw[..., 2:4])
        wh = half_wh * half_wh * (4.0 * unit)  # (2 sigmoid)^2 strides; SQUARE has no int8 kernel
        return tf.concat([xy, wh], axis=-1), raw[..., 4:]

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "stride": self.stride, "grid": self.grid}


def conv(x: tf.Tensor, filters: int, stride: int = 1, kernel: int = 3) -> tf.Tensor:
    x = tf.keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
    x = tf.keras.layers.BatchNormalization()(x)
    return tf.keras.layers.ReLU()(x)


def build_network() -> tuple[tf.keras.Model, tf.keras.Model]:
    """Backbone to stride 32, a light FPN merge at stride 16, one head per level.

    Returns the training model, (B, N, 5+C) boxes then logits, and the export model with
    the same layers and two outputs, boxes (B, N, 4) and logits (B, N, 1+C).
    """
    inputs = tf.keras.Input((SIZE, SIZE, 3))
    x = conv(inputs, 16, 2)
    x = conv(conv(x, 24, 2), 24)
    x = conv(conv(x, 32, 2), 32)
    p4 = conv(conv(x, 48, 2), 48)
    p5 = conv(conv(p4, 64, 2), 64)
    merged = tf.keras.layers.Concatenate()([p4, tf.keras.layers.UpSampling2D(2)(p5)])
    boxes, logits = [], []
    for (stride, grid), features in zip(LEVELS, (conv(merged, 48), conv(p5, 64)), strict=True):
        level_boxes, level_logits = Decode(stride, grid)(tf.keras.layers.Conv2D(5 + C, 1)(features))
        boxes.append(level_boxes)
        logits.append(level_logits)
    box_out = tf.keras.layers.Concatenate(axis=1)(boxes)
    logit_out = tf.keras.layers.Concatenate(axis=1)(logits)
    training = tf.keras.Model(inputs, tf.keras.layers.Concatenate()([box_out, logit_out]))
    return training, tf.keras.Model(inputs, [box_out, logit_out], name="shapes_det")


def box_iou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Elementwise IoU of cx cy w h boxes."""
    a1, a2 = a[..., :2] - a[..., 2:4] / 2, a[..., :2] + a[..., 2:4] / 2
    b1, b2 = b[..., :2] - b[..., 2:4] / 2, b[..., :2] + b[..., 2:4] / 2
    wh = tf.maximum(tf.minimum(a2, b2) - tf.maximum(a1, b1), 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return inter / (union + 1e-9)


def detection_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Objectness BCE on all cells (positives x4); box L1 + (1 - IoU) and class BCE on positives."""
    positive = y_true[..., 4]
    count = tf.maximum(tf.reduce_sum(positive), 1.0)
    obj = tf.nn.sigmoid_cross_entropy_with_logits(labels=positive, logits=y_pred[..., 4])
    obj_loss = tf.reduce_sum(obj * (1.0 + 3.0 * positive)) / count
    l1 = tf.reduce_sum(tf.abs(y_true[..., :4] - y_pred[..., :4]), axis=-1) * 5.0
    box_loss = tf.reduce_sum(positive * (l1 + 1.0 - box_iou(y_true, y_pred))) / count
    cls = tf.nn.sigmoid_cross_entropy_with_logits(labels=y_true[..., 5:], logits=y_pred[..., 5:])
    cls_loss = tf.reduce_sum(positive * tf.reduce_sum(cls, axis=-1)) / count
    return obj_loss + 2.0 * box_loss + cls_loss


def train(model: tf.keras.Model, inputs: np.ndarray, target: np.ndarray) -> None:
    steps = EPOCHS * int(np.ceil(len(inputs) / BATCH))
    schedule = tf.keras.optimizers.schedules.CosineDecay(3e-3, steps, warmup_target=None)
    model.compile(optimizer=tf.keras.optimizers.Adam(schedule), loss=detection_loss)
    data = (
        tf.data.Dataset.from_tensor_slices((inputs, target))
        .shuffle(len(inputs), seed=DET_SEED, reshuffle_each_iteration=True)
        .batch(BATCH)
        .map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
    )
    model.fit(data, epochs=EPOCHS, verbose=2)


# ---------------------------------------------------------------- export heads


def yolov8_head(boxes: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    scores = tf.sigmoid(logits[..., :1]) * tf.sigmoid(logits[..., 1:])
    return tf.transpose(tf.concat([boxes, scores], axis=-1), (0, 2, 1))


def yolov5_head(boxes: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    rows = tf.concat([boxes, tf.sigmoid(logits)], axis=-1)
    return rows * tf.constant([float(SIZE)] * 4 + [1.0] * (1 + C))  # boxes to input pixels


def peaks(scores: tf.Tensor, grid: int) -> tf.Tensor:
    """(1, g*g, C) scores as a (1, g, g, C) map, zero where a 3x3 neighbour scores higher."""
    grid_scores = tf.reshape(scores, (1, grid, grid, C))
    best = tf.nn.max_pool2d(grid_scores, 3, 1, "SAME")
    return tf.where(grid_scores >= best, grid_scores, tf.zeros_like(grid_scores))


def e2e_head(boxes: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-class 3x3 peak suppression on each level, then top-K over (cell, class) pairs.

    A cell also has to beat the same place on the other level (parent or children), so
    one shape seen by both levels is reported once.
    """
    scores = tf.sigmoid(logits[..., :1]) * tf.sigmoid(logits[..., 1:])
    (_, g4), (_, g5) = LEVELS
    s4, s5 = peaks(scores[:, : g4 * g4], g4), peaks(scores[:, g4 * g4 :], g5)
    parent = tf.image.resize(s5, (g4, g4), method="nearest")
    children = tf.nn.max_pool2d(s4, 2, 2, "VALID")
    s4 = tf.where(s4 >= parent, s4, tf.zeros_like(s4))
    s5 = tf.where(s5 >= children, s5, tf.zeros_like(s5))
    flat = tf.concat([tf.reshape(s4, (1, -1)), tf.reshape(s5, (1, -1))], axis=1)
    top, index = tf.math.top_k(flat, k=TOP_K)
    cell, label = index[0] // C, index[0] % C
    xy, half = boxes[0, :, :2], boxes[0, :, 2:4] / 2
    corners = tf.clip_by_value(tf.concat([xy - half, xy + half], axis=-1), 0.0, 1.0)
    # A lookup instead of a cast keeps the class column in int8 (CAST int32->float is float).
    class_value = tf.gather(tf.constant(np.arange(C, dtype=np.float32)), label)
    rows = tf.concat([tf.gather(corners, cell), top[0][:, None], class_value[:, None]], axis=-1)
    return rows[None]


HEADS = {
    "shapes_yolov8_int8.tflite": (yolov8_head, tf.int8, tf.int8, (0.0, 1.0)),
    "shapes_yolov5_int8.tflite": (yolov5_head, tf.uint8, tf.float32, (0.0, 1.0)),
    "shapes_e2e_int8.tflite": (e2e_head, tf.int8, tf.int8, E2E_INPUT_RANGE),
}


def export(
    model: tf.keras.Model,
    head: object,
    calibration: np.ndarray,
    types: tuple[tf.DType, tf.DType],
    input_range: tuple[float, float],
) -> bytes:
    """Full-integer quantize model + head; the first calibration sample pins the input range."""
    spec = tf.TensorSpec((1, SIZE, SIZE, 3), tf.float32)

    def representative() -> object:
        for index, pixels in enumerate(calibration):
            sample = pixels.astype(np.float32)[None] / 255.0
            if index == 0:
                sample.flat[0], sample.flat[1] = input_range
            yield [sample]

    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive = tf.keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve", lambda x: head(*model(x, training=False)), input_signature=[spec]
        )
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type, converter.inference_output_type = types
        if types[1] != tf.float32:
            return converter.convert()
        return float_tail(converter, representative, saved_model_dir)


def float_tail(converter: tf.lite.TFLiteConverter, representative: object, saved: str) -> bytes:
    """Quantize everything but the last op (boxes to pixels), which stays float.

    Pixel boxes (0..128) and scores (0..1) in one int8 tensor would share one scale of
    about 0.5, leaving scores three values; the int8 rows are normalized (0..1), and
    a float multiply after the dequantize turns the boxes into pixels.
    """
    plain = tf.lite.Interpreter(
        model_content=tf.lite.TFLiteConverter.from_saved_model(saved).convert()
    )
    output_name = plain.get_output_details()[0]["name"]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=[output_name])
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=representative, debug_options=options
    )
    # The debugger leaves a float input; set the input type as the converter would have.
    return modify_model_io_type(
        debugger.get_nondebug_quantized_model(), converter.inference_input_type, tf.float32
    )


def describe(name: str, model_bytes: bytes) -> str:
    """A model's I/O tensors and size, read back from the flatbuffer (scale 0: not quantized)."""
    interpreter = tf.lite.Interpreter(model_content=model_bytes)
    lines = [f"{name}: {len(model_bytes)} bytes"]
    tensors = (interpreter.get_input_details()[0], interpreter.get_output_details()[0])
    for role, details in zip(("input", "output"), tensors, strict=True):
        scale, zero_point = details["quantization"]
        lines.append(
            f"  {role}: {details['dtype'].__name__} {[int(d) for d in details['shape']]} "
            f"scale={scale!r} zero_point={zero_point}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- demo frames

DEMO_FRAMES = 50
DEMO_JPEG_QUALITY = 60
CIRCLE_PATH = ((-25.0, 75.0), (345.0, 75.0))  # centre moves linearly over all frames
SQUARE_KEYS = ((10, (-30.0, 185.0)), (18, (80.0, 185.0)), (31, (80.0, 185.0)), (45, (-45.0, 105.0)))


def square_center(index: int) -> tuple[float, float] | None:
    """Piecewise-linear square path: slides in from the left, waits, leaves up and left."""
    for (f0, p0), (f1, p1) in itertools.pairwise(SQUARE_KEYS):
        if f0 <= index <= f1:
            t = (index - f0) / (f1 - f0)
            return (p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1]))
    return None


def demo_scene(index: int, circle: Shape, square: Shape) -> Scene:
    (x0, y0), (x1, y1) = CIRCLE_PATH
    t = index / (DEMO_FRAMES - 1)
    shapes = [
        Shape(circle.kind, (x0 + t * (x1 - x0), y0 + t * (y1 - y0)), circle.size, 0, circle.color)
    ]
    center = square_center(index)
    if center is not None:
        shapes.append(Shape(square.kind, center, square.size, square.angle, square.color))
    visible = [s for s in shapes if is_visible(s)]
    return Scene(tuple(visible), tuple(shape_box(s) for s in visible))


def is_visible(shape: Shape) -> bool:
    """At least half the shape's width is inside the frame (what the truth file lists)."""
    x1, _, x2, _ = shape_box(shape)
    return x2 - x1 >= shape.size / 2


def build_demo() -> None:
    """50 frames of one scene: a circle crossing x=0.5, a square visiting the lower-left zone."""
    rng = np.random.default_rng(DEMO_SEED)
    background = random_background(rng)
    circle = Shape("circle", (0, 0), 48.0, 0.0, (235, 70, 60))
    square = Shape("square", (0, 0), 46.0, 10.0, (250, 220, 40))
    for stale in DEMO_DIR.glob("frame_*.jpg"):
        stale.unlink()
    rows = []
    for index in range(DEMO_FRAMES):
        scene = demo_scene(index, circle, square)
        noise = rng.normal(0, 3.0, (*FRAME_SIZE[::-1], 3))
        image = render(background, scene, noise, rng.uniform(0.97, 1.03))
        name = f"frame_{index:03d}.jpg"
        write_bytes(DEMO_DIR / name, jpeg_bytes(image, DEMO_JPEG_QUALITY))
        for shape, box in zip(scene.shapes, scene.boxes, strict=True):
            norm = np.array(box) / np.array(FRAME_SIZE * 2)
            rows.append([name, shape.kind, *(f"{v:.4f}" for v in norm)])
    with (DEMO_DIR / "truth.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["frame", "label", "x1", "y1", "x2", "y2"])
        writer.writerows(rows)


# ---------------------------------------------------------------- build


def build_detectors() -> None:
    started = time.monotonic()
    tf.keras.utils.set_random_seed(DET_SEED)
    tf.config.experimental.enable_op_determinism()
    build_demo()
    write_lines(MODELS_DIR / LABELS_FILE, LABELS)
    inputs, target = dataset(TRAIN_COUNT, TRAIN_SEED)
    print(
        f"detector data: {len(inputs)} scenes, {int(target[..., 4].sum())} shapes, "
        f"{time.monotonic() - started:.0f} s"
    )
    model, export_model = build_network()
    print(f"detector network: {model.count_params()} parameters")
    train(model, inputs, target)
    for name, (head, in_type, out_type, input_range) in HEADS.items():
        model_bytes = export(export_model, head, inputs[:300], (in_type, out_type), input_range)
        write_bytes(MODELS_DIR / name, model_bytes)
        print(describe(name, model_bytes))
    heldout = heldout_frames(HELDOUT_COUNT, HELDOUT_SEED)
    tallies = {name: evaluate(MODELS_DIR / name, heldout, C) for name in HEADS}
    print_table(f"held-out scenes, seed {HELDOUT_SEED} ({len(heldout)} frames)", tallies)
    demo = demo_frames(list(LABELS))
    tallies = {name: evaluate(MODELS_DIR / name, demo, C) for name in HEADS}
    print_table(f"detect_demo frames ({len(demo)})", tallies)
    print(f"detector build wall time: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    build_detectors()

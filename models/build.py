"""Build the edge-agent int8 TFLite models and their sample inputs.

Run from the repository root (TensorFlow is needed only here, never at runtime):

    python3 -m venv .venv-build && .venv-build/bin/pip install tensorflow-cpu pillow && .venv-build/bin/python models/build.py

Everything under models/ is regenerated from fixed seeds, with no downloads:

- shapes_int8.tflite + shapes_labels.txt: camera frame -> empty / circle / square.
- vibration_int8.tflite + vibration_labels.txt: 3-axis accelerometer window -> normal / anomaly.
- bench/mobilenet_v2_224_int8.tflite: MobileNetV2 with random weights, for speed benchmarks only.
- samples/camera/frame_NNN.jpg and samples/vibration.csv: demo inputs with a known story.
- shapes_{yolov8,yolov5,e2e}_int8.tflite + shapes_detect_labels.txt + detect_demo/: the shapes
  detectors and the detection demo frames (build_detector.py; `--only detectors` builds just those).

The training data is synthetic. At the end the quantized models are evaluated with
tf.lite.Interpreter on held-out data (generated from other seeds) and on the samples.
models/README.md documents the tensors, preprocessing constants and measured accuracies.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parent
SEED = 20240601
TRAIN_SEED, HELDOUT_SEED, SAMPLE_SEED = 1, 2, 3

# Camera: frames are rendered at FRAME_SIZE, then the whole frame is resized to 96x96.
FRAME_SIZE = (320, 240)  # (width, height)
CAMERA_INPUT = (96, 96, 3)
CAMERA_LABELS = ("empty", "circle", "square")
CAMERA_RANGE = (0.0, 1.0)  # float input x/255 -> uint8 input scale 1/255, zero point 0
CAMERA_TRAIN, CAMERA_HELDOUT, CAMERA_EPOCHS = 9000, 1500, 14
CAMERA_STORY = (("empty", 10), ("circle", 10), ("empty", 8), ("square", 12))
SAMPLE_JPEG_QUALITY = 70

# Vibration: windows of 64 samples x (ax, ay, az) in g at 400 Hz, normalised per channel.
SAMPLE_RATE_HZ = 400.0
WINDOW = 64
VIB_MEAN = np.array([0.0, 0.0, 1.0])
VIB_STD = np.array([0.5, 0.5, 0.5])
VIB_RANGE = (-4.0, 4.0 - 1 / 32)  # normalised clip range -> int8 input scale 1/32, zero point 0
VIB_LABELS = ("normal", "anomaly")
VIB_TRAIN, VIB_HELDOUT, VIB_EPOCHS = 16000, 3000, 30
VIB_STORY = (("normal", 640), ("anomaly", 384), ("normal", 576))

BENCH_INPUT = (224, 224, 3)


# ---------------------------------------------------------------- TFLite helpers


def representative(calibration: np.ndarray, input_range: tuple[float, float]) -> Iterator[list[np.ndarray]]:
    """Yield calibration samples; the first is pinned to input_range so the input scale is exact."""
    anchor = calibration[0].copy()
    anchor.flat[0], anchor.flat[1] = input_range
    for sample in (anchor, *calibration[1:]):
        yield [sample[None].astype(np.float32)]


def convert_int8(
    model: tf.keras.Model,
    calibration: np.ndarray,
    io_type: tf.DType,
    input_range: tuple[float, float],
) -> bytes:
    """Full-integer quantize a Keras model with a fixed batch-1 input and io_type input/output."""
    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive = tf.keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=[spec])
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: representative(calibration, input_range)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
        return converter.convert()


def io_details(model_bytes: bytes) -> tuple[dict, dict]:
    """Return the (input, output) tensor details of a single-input single-output TFLite model."""
    interpreter = tf.lite.Interpreter(model_content=model_bytes)
    return interpreter.get_input_details()[0], interpreter.get_output_details()[0]


def check_io(model_bytes: bytes, dtype: type, input_shape: tuple[int, ...], classes: int) -> None:
    """Fail unless the model's input and output tensors have exactly the expected dtype and shape."""
    inp, out = io_details(model_bytes)
    assert inp["dtype"] == dtype and tuple(inp["shape"]) == (1, *input_shape), inp
    assert out["dtype"] == dtype and tuple(out["shape"]) == (1, classes), out


def describe(name: str, model_bytes: bytes) -> str:
    """One-paragraph summary of a model's I/O tensors and size, read back from the flatbuffer."""
    lines = [f"{name}: {len(model_bytes)} bytes"]
    for role, details in zip(("input", "output"), io_details(model_bytes)):
        scale, zero_point = details["quantization"]
        lines.append(
            f"  {role}: {details['dtype'].__name__} {[int(d) for d in details['shape']]} "
            f"scale={scale!r} (1/{1 / scale:.4f}) zero_point={zero_point}"
        )
    return "\n".join(lines)


def tflite_predict(model_bytes: bytes, inputs: np.ndarray) -> np.ndarray:
    """Run a batch-1 model over inputs already in its input dtype; return the raw (quantized) outputs."""
    interpreter = tf.lite.Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    outputs = []
    for sample in inputs:
        interpreter.set_tensor(inp["index"], sample[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[0])
    return np.stack(outputs)


def quantize(x: np.ndarray, details: dict) -> np.ndarray:
    """Quantize float values with a tensor's (scale, zero point), saturating to its dtype."""
    scale, zero_point = details["quantization"]
    info = np.iinfo(details["dtype"])
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(details["dtype"])


def train(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, epochs: int, learning_rate: float) -> None:
    """Train a softmax classifier with Adam and cosine learning-rate decay."""
    steps = epochs * int(np.ceil(len(x) / 64))
    schedule = tf.keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=64, epochs=epochs, shuffle=True, verbose=2)


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_lines(path: Path, lines: Iterable[str]) -> None:
    write_bytes(path, "".join(f"{line}\n" for line in lines).encode())


# ---------------------------------------------------------------- camera scenes


@dataclass(frozen=True)
class Shape:
    kind: str  # "circle" or "square"
    center: tuple[float, float]  # pixels, (x, y)
    size: float  # diameter or side length, pixels
    angle: float  # rotation in degrees (squares)
    color: tuple[int, int, int]


def upsample(grid: np.ndarray) -> np.ndarray:
    """Bicubically upsample an (h, w, 3) float grid to a full frame."""
    channels = [np.asarray(Image.fromarray(grid[..., c].astype(np.float32)).resize(FRAME_SIZE, Image.BICUBIC))
                for c in range(3)]
    return np.stack(channels, axis=-1)


def random_background(rng: np.random.Generator) -> np.ndarray:
    """A float (h, w, 3) background: base colour, lighting gradient, blotches and fine grain."""
    width, height = FRAME_SIZE
    base = rng.uniform(30, 210, size=3)
    cells = (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3)
    blotches = upsample(rng.normal(0, rng.uniform(8, 35), cells))
    grain = upsample(rng.normal(0, rng.uniform(3, 12), (height // 4, width // 4, 3)))
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    gradient = (rng.uniform(-40, 40) * xx + rng.uniform(-40, 40) * yy)[..., None]
    return base + blotches + grain + gradient


def contrasting_color(rng: np.random.Generator, reference: np.ndarray) -> tuple[int, int, int]:
    """A random colour at least 100 (RGB Euclidean) away from the reference colour."""
    while True:
        color = rng.integers(0, 256, size=3)
        if np.linalg.norm(color - reference) >= 100:
            return tuple(int(c) for c in color)


def random_shape(rng: np.random.Generator, kind: str, background: np.ndarray) -> Shape:
    """A shape 15-45% of the frame height across, fully inside the frame, contrasting with the background."""
    width, height = FRAME_SIZE
    size = rng.uniform(0.15, 0.45) * height
    margin = size * 0.72 + 2
    center = (rng.uniform(margin, width - margin), rng.uniform(margin, height - margin))
    (cx, cy), half = center, size / 2
    patch = background[int(cy - half):int(cy + half), int(cx - half):int(cx + half)]
    color = contrasting_color(rng, np.clip(patch, 0, 255).mean(axis=(0, 1)))
    angle = rng.uniform(-15, 15) if kind == "square" else 0.0
    return Shape(kind, center, size, angle, color)


def shape_mask(shape: Shape) -> np.ndarray:
    """A float (h, w) mask, 1 inside the shape."""
    mask = Image.new("L", FRAME_SIZE, 0)
    draw = ImageDraw.Draw(mask)
    (cx, cy), half = shape.center, shape.size / 2
    if shape.kind == "circle":
        draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=255)
    else:
        theta = np.deg2rad(shape.angle) + np.pi / 4 + np.arange(4) * np.pi / 2
        radius = half * np.sqrt(2)
        draw.polygon([(cx + radius * np.cos(a), cy + radius * np.sin(a)) for a in theta], fill=255)
    return np.asarray(mask, dtype=np.float32)[..., None] / 255


def render_frame(
    background: np.ndarray, shape: Shape | None, rng: np.random.Generator, brightness: float, noise_std: float
) -> Image.Image:
    """Composite the shape over the background, then apply brightness and sensor noise."""
    frame = background
    if shape is not None:
        mask = shape_mask(shape)
        frame = frame * (1 - mask) + np.array(shape.color, dtype=np.float32) * mask
    frame = frame * brightness + rng.normal(0, noise_std, frame.shape)
    return Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def preprocess_frame(image: Image.Image) -> np.ndarray:
    """Runtime preprocessing: whole frame, RGB, PIL bilinear resize to 96x96, raw uint8 pixels."""
    return np.asarray(image.convert("RGB").resize(CAMERA_INPUT[:2], Image.BILINEAR), dtype=np.uint8)


def random_frame(rng: np.random.Generator, label: int) -> np.ndarray:
    """A random scene of the given class, JPEG round-tripped at a random quality and preprocessed."""
    background = random_background(rng)
    shape = None if label == 0 else random_shape(rng, CAMERA_LABELS[label], background)
    image = render_frame(background, shape, rng, rng.uniform(0.6, 1.25), rng.uniform(2, 12))
    data = jpeg_bytes(image, int(rng.integers(30, 91)))
    return preprocess_frame(Image.open(io.BytesIO(data)))


def camera_dataset(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced uint8 (count, 96, 96, 3) frames and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % len(CAMERA_LABELS))
    frames = np.stack([random_frame(rng, int(label)) for label in labels])
    return frames, labels


def camera_story(rng: np.random.Generator) -> list[tuple[bytes, int]]:
    """The sample clip: one fixed scene, the circle and the square appearing in turn with slight jitter."""
    background = random_background(rng)
    shapes = {kind: random_shape(rng, kind, background) for kind in ("circle", "square")}
    frames = []
    for kind, count in CAMERA_STORY:
        for _ in range(count):
            shape = shapes.get(kind)
            if shape is not None:
                (cx, cy), jitter = shape.center, rng.normal(0, 2, 3)
                shape = replace(shape, center=(cx + jitter[0], cy + jitter[1]), size=shape.size + jitter[2])
            image = render_frame(background, shape, rng, rng.uniform(0.95, 1.05), 4.0)
            frames.append((jpeg_bytes(image, SAMPLE_JPEG_QUALITY), CAMERA_LABELS.index(kind)))
    return frames


def build_camera_model() -> tf.keras.Model:
    """A small CNN on x/255 in [0, 1]: five 3x3 conv-BN-ReLU blocks, global average pooling, softmax."""
    inputs = tf.keras.Input(CAMERA_INPUT)
    x = inputs
    for filters, stride in ((16, 2), (32, 2), (32, 1), (64, 2), (64, 2)):
        x = tf.keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        x = tf.keras.layers.BatchNormalization()(x)
        x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(len(CAMERA_LABELS), activation="softmax")(x)
    return tf.keras.Model(inputs, outputs, name="shapes")


# ---------------------------------------------------------------- vibration signals


@dataclass(frozen=True)
class Machine:
    shaft_hz: float
    amplitude_g: np.ndarray  # (3,) 1x amplitude per axis
    harmonics: np.ndarray  # (2,) 2x and 3x amplitude relative to 1x
    phase: np.ndarray  # (3, 3) phase per harmonic order per axis
    noise_g: float
    gravity_g: np.ndarray  # (3,) gravity vector of a slightly tilted sensor


def random_machine(rng: np.random.Generator) -> Machine:
    tilt = rng.normal(0, 0.08, 2)
    return Machine(
        shaft_hz=rng.uniform(20, 60),
        amplitude_g=rng.uniform(0.02, 0.12, 3),
        harmonics=rng.uniform(0.05, 0.4, 2),
        phase=rng.uniform(0, 2 * np.pi, (3, 3)),
        noise_g=rng.uniform(0.005, 0.03),
        gravity_g=np.array([tilt[0], tilt[1], np.sqrt(1 - tilt @ tilt)]),
    )


def rotation(machine: Machine, t: np.ndarray, order: int, amplitude_g: np.ndarray) -> np.ndarray:
    """The order-x shaft-speed sinusoid on each axis, (len(t), 3)."""
    return amplitude_g * np.sin(2 * np.pi * order * machine.shaft_hz * t[:, None] + machine.phase[order - 1])


def normal_signal(machine: Machine, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Healthy running: gravity, 1x with small 2x and 3x harmonics, sensor noise."""
    signal = machine.gravity_g + rotation(machine, t, 1, machine.amplitude_g)
    for order, relative in zip((2, 3), machine.harmonics):
        signal += rotation(machine, t, order, machine.amplitude_g * relative)
    return signal + rng.normal(0, machine.noise_g, (len(t), 3))


def imbalance(machine: Machine, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Extra 1x vibration, mostly radial (x, y)."""
    extra = rng.uniform(0.25, 0.7) * np.array([1.0, 1.0, 0.3]) * rng.uniform(0.7, 1.0, 3)
    return rotation(machine, t, 1, extra)


def impacts(machine: Machine, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bearing-fault impacts: periodic decaying ringing bursts along one dominant direction."""
    period, ring_hz, decay = rng.uniform(8, 24), rng.uniform(90, 170), rng.uniform(1.5, 4.0)
    direction = rng.normal(0, 0.3, 3)
    direction[rng.integers(3)] = 1.0
    steps = np.arange(len(t))
    burst = np.zeros(len(t))
    for onset in np.arange(rng.uniform(0, period), len(t), period):
        dt = np.maximum(steps - onset, 0)
        strength = rng.uniform(0.4, 1.5) * (steps >= onset)
        burst += strength * np.exp(-dt / decay) * np.sin(2 * np.pi * ring_hz * dt / SAMPLE_RATE_HZ)
    return burst[:, None] * direction


def broadband(machine: Machine, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A broadband noise increase (looseness, rubbing, cavitation)."""
    return rng.normal(0, rng.uniform(0.1, 0.3), (len(t), 3))


ANOMALIES: tuple[Callable[[Machine, np.ndarray, np.random.Generator], np.ndarray], ...] = (
    imbalance,
    impacts,
    broadband,
)


def normalise(raw_g: np.ndarray) -> np.ndarray:
    """Runtime preprocessing: (x - VIB_MEAN) / VIB_STD per channel, clipped to the int8 input range."""
    return np.clip((raw_g - VIB_MEAN) / VIB_STD, *VIB_RANGE).astype(np.float32)


def vibration_window(rng: np.random.Generator, label: int) -> np.ndarray:
    """One raw (WINDOW, 3) window in g of a random machine, with a random anomaly if label is 1."""
    machine = random_machine(rng)
    t = np.arange(WINDOW) / SAMPLE_RATE_HZ
    signal = normal_signal(machine, t, rng)
    if label == 1:
        signal += ANOMALIES[rng.integers(len(ANOMALIES))](machine, t, rng)
    return signal


def vibration_dataset(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced normalised float (count, WINDOW, 3) windows and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % len(VIB_LABELS))
    windows = np.stack([normalise(vibration_window(rng, int(label))) for label in labels])
    return windows, labels


def vibration_story(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The sample recording in g, one machine throughout, bearing impacts in the middle; per-line labels."""
    labels = np.concatenate([np.full(count, VIB_LABELS.index(state)) for state, count in VIB_STORY])
    machine = random_machine(rng)
    t = np.arange(len(labels)) / SAMPLE_RATE_HZ
    signal = normal_signal(machine, t, rng)
    anomalous = labels == 1
    signal[anomalous] += impacts(machine, t[anomalous], rng)
    return signal, labels


def build_vibration_model() -> tf.keras.Model:
    """A small 1-D CNN on normalised windows: three conv layers, global average pooling, softmax."""
    inputs = tf.keras.Input((WINDOW, 3))
    x = tf.keras.layers.Conv1D(16, 5, padding="same", activation="relu")(inputs)
    x = tf.keras.layers.Conv1D(32, 5, strides=2, padding="same", activation="relu")(x)
    x = tf.keras.layers.Conv1D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = tf.keras.layers.GlobalAveragePooling1D()(x)
    x = tf.keras.layers.Dense(16, activation="relu")(x)
    outputs = tf.keras.layers.Dense(len(VIB_LABELS), activation="softmax")(x)
    return tf.keras.Model(inputs, outputs, name="vibration")


# ---------------------------------------------------------------- builds


def build_camera() -> dict[str, float]:
    """Train, quantize and evaluate the shapes model; write it, its labels and the sample frames."""
    x_train, y_train = camera_dataset(CAMERA_TRAIN, TRAIN_SEED)
    model = build_camera_model()
    print(f"camera model: {model.count_params()} parameters")
    train(model, x_train.astype(np.float32) / 255, y_train, CAMERA_EPOCHS, 3e-3)
    model_bytes = convert_int8(model, x_train[:200].astype(np.float32) / 255, tf.uint8, CAMERA_RANGE)
    check_io(model_bytes, np.uint8, CAMERA_INPUT, len(CAMERA_LABELS))
    write_bytes(MODELS_DIR / "shapes_int8.tflite", model_bytes)
    write_lines(MODELS_DIR / "shapes_labels.txt", CAMERA_LABELS)
    print(describe("shapes_int8.tflite", model_bytes))
    x_test, y_test = camera_dataset(CAMERA_HELDOUT, HELDOUT_SEED)
    float_acc = float(np.mean(model.predict(x_test.astype(np.float32) / 255, verbose=0).argmax(1) == y_test))
    heldout_acc = float(np.mean(tflite_predict(model_bytes, x_test).argmax(1) == y_test))
    return {"camera float held-out": float_acc, "camera int8 held-out": heldout_acc,
            "camera int8 samples": evaluate_camera_samples(model_bytes)}


def evaluate_camera_samples(model_bytes: bytes) -> float:
    """Write the sample frames, read them back from disk and classify them with the int8 model."""
    sample_dir = MODELS_DIR / "samples" / "camera"
    frames = camera_story(np.random.default_rng(SAMPLE_SEED))
    for index, (data, _) in enumerate(frames):
        write_bytes(sample_dir / f"frame_{index:03d}.jpg", data)
    paths = [sample_dir / f"frame_{index:03d}.jpg" for index in range(len(frames))]
    inputs = np.stack([preprocess_frame(Image.open(path)) for path in paths])
    predictions = tflite_predict(model_bytes, inputs).argmax(1)
    truth = np.array([label for _, label in frames])
    for index in np.flatnonzero(predictions != truth):
        print(f"  sample frame {index:03d}: truth {CAMERA_LABELS[truth[index]]}, "
              f"predicted {CAMERA_LABELS[predictions[index]]}")
    return float(np.mean(predictions == truth))


def build_vibration() -> dict[str, float]:
    """Train, quantize and evaluate the vibration model; write it, its labels and the sample CSV."""
    x_train, y_train = vibration_dataset(VIB_TRAIN, TRAIN_SEED)
    model = build_vibration_model()
    print(f"vibration model: {model.count_params()} parameters")
    train(model, x_train, y_train, VIB_EPOCHS, 3e-3)
    model_bytes = convert_int8(model, x_train[:500], tf.int8, VIB_RANGE)
    check_io(model_bytes, np.int8, (WINDOW, 3), len(VIB_LABELS))
    write_bytes(MODELS_DIR / "vibration_int8.tflite", model_bytes)
    write_lines(MODELS_DIR / "vibration_labels.txt", VIB_LABELS)
    print(describe("vibration_int8.tflite", model_bytes))
    x_test, y_test = vibration_dataset(VIB_HELDOUT, HELDOUT_SEED)
    float_acc = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test))
    heldout = tflite_predict(model_bytes, quantize(x_test, io_details(model_bytes)[0]))
    return {"vibration float held-out": float_acc,
            "vibration int8 held-out": float(np.mean(heldout.argmax(1) == y_test)),
            **evaluate_vibration_samples(model_bytes)}


def evaluate_vibration_samples(model_bytes: bytes) -> dict[str, float]:
    """Write the sample CSV, read it back and classify its windows that lie inside one state."""
    path = MODELS_DIR / "samples" / "vibration.csv"
    signal, labels = vibration_story(np.random.default_rng(SAMPLE_SEED))
    write_lines(path, (f"{ax:.4f},{ay:.4f},{az:.4f}" for ax, ay, az in signal))
    recorded = np.loadtxt(path, delimiter=",")
    results = {}
    for name, stride in (("non-overlapping", WINDOW), ("stride-16", 16)):
        starts = [s for s in range(0, len(labels) - WINDOW + 1, stride) if len(set(labels[s:s + WINDOW])) == 1]
        windows = np.stack([normalise(recorded[s:s + WINDOW]) for s in starts])
        predictions = tflite_predict(model_bytes, quantize(windows, io_details(model_bytes)[0])).argmax(1)
        results[f"vibration int8 samples {name} ({len(starts)} windows)"] = float(
            np.mean(predictions == labels[starts]))
    return results


def build_bench() -> None:
    """Quantize a randomly initialised MobileNetV2 (uint8 in/out) for speed benchmarks."""
    model = tf.keras.applications.MobileNetV2(input_shape=BENCH_INPUT, weights=None, classes=1000)
    calibration = np.random.default_rng(SEED).uniform(0, 1, (20, *BENCH_INPUT)).astype(np.float32)
    model_bytes = convert_int8(model, calibration, tf.uint8, (0.0, 1.0))
    check_io(model_bytes, np.uint8, BENCH_INPUT, 1000)
    write_bytes(MODELS_DIR / "bench" / "mobilenet_v2_224_int8.tflite", model_bytes)
    print(describe("bench/mobilenet_v2_224_int8.tflite", model_bytes))


PARTS = ("vibration", "camera", "bench", "detectors")


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the edge-agent demo models under models/.")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="build only this part (repeatable); default: all, in the order listed")
    parts = set(parser.parse_args().only or PARTS)
    started = time.monotonic()
    # One seed for the classifier parts in this order: building a subset of them gives other bytes.
    tf.keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    results: dict[str, float] = {}
    if "vibration" in parts:
        results.update(build_vibration())
    if "camera" in parts:
        results.update(build_camera())
    if "bench" in parts:
        build_bench()
    if results:
        print("\nresults (int8 rows measured with tf.lite.Interpreter):")
        for name, accuracy in results.items():
            print(f"  {name}: {accuracy:.4f}")
    if "detectors" in parts:
        # The detector build reseeds itself: its bytes never depend on the parts above.
        from build_detector import build_detectors

        build_detectors()
    print(f"build wall time: {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()

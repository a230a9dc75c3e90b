"""`edge-agent inspect` and `edge-agent infer`: a model and inputs, no daemon.

The parser is built for every command, so this module imports numpy, the runtime
and the detection code only inside the commands that use them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.commands.options import add_model_options, fraction
from edge_agent.errors import InputError, ModelError

if TYPE_CHECKING:
    import numpy as np

    from edge_agent.model.runtime import Model, TensorSpec

NUMERIC_SUFFIXES = {".csv", ".txt"}
KINDS = ["auto", "classifier", "ssd", "yolov8", "yolov5", "yolo-e2e"]


def register(commands: Any) -> None:
    inspect = commands.add_parser("inspect", help="show a model's inputs, outputs and checksum")
    inspect.add_argument("model", help="path to a .tflite model")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    add_model_options(inspect)
    inspect.set_defaults(handler=cmd_inspect)

    infer = commands.add_parser("infer", help="run a model on inputs, one JSON line each")
    infer.add_argument("--model", required=True, help="a .tflite model, or a wake-word .json")
    infer.add_argument("--labels", help="labels file, one per line")
    infer.add_argument("--top-k", type=int, default=3, help="classes to show (default 3)")
    infer.add_argument(
        "--resize",
        choices=["stretch", "crop", "letterbox"],
        default=None,
        help="fit images by stretching the whole frame, crop or letterbox "
        "(default: letterbox for YOLO detectors, else stretch)",
    )
    infer.add_argument(
        "--kind",
        choices=KINDS,
        default="auto",
        help="what the model is (default: recognised from its tensors)",
    )
    infer.add_argument(
        "--min-score", type=fraction, default=0.25, help="detections: lowest score (0.25)"
    )
    infer.add_argument(
        "--iou", type=fraction, default=0.45, help="detections: NMS overlap threshold (0.45)"
    )
    infer.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image, WAV, .npy file, text file of numbers, or numbers like 0.5,1.2",
    )
    add_model_options(infer)
    infer.set_defaults(handler=cmd_infer)


def load_model(args: argparse.Namespace, path: str) -> Model:
    from edge_agent.model.runtime import Model  # noqa: PLC0415

    return Model.load(path, runtime=args.runtime, num_threads=args.threads, delegate=args.delegate)


def cmd_inspect(args: argparse.Namespace) -> int:
    from edge_agent.model.detection.layouts import model_kind  # noqa: PLC0415

    model = load_model(args, args.model)
    report = {
        "model": str(args.model),
        "size": model.size,
        "sha256": model.sha256,
        "runtime": model.runtime,
        "kind": model_kind(model.inputs, model.outputs),
        "inputs": [spec.as_dict() for spec in model.inputs],
        "outputs": [spec.as_dict() for spec in model.outputs],
    }
    print(json.dumps(report, indent=2) if args.json else _inspect_table(report))
    return 0


def _inspect_table(report: dict[str, Any]) -> str:
    lines = [
        f"model    {report['model']}",
        f"size     {report['size']} bytes",
        f"sha256   {report['sha256']}",
        f"runtime  {report['runtime']}",
        f"kind     {report['kind']}",
        "",
        f"{'':7} {'name':32} {'shape':18} {'dtype':8} {'scale':>12} {'zero point':>10}",
    ]
    for kind in ("inputs", "outputs"):
        for spec in report[kind]:
            shape = "[" + ",".join(str(d) for d in spec["shape"]) + "]"
            lines.append(
                f"{kind[:-1]:7} {spec['name'][:32]:32} {shape:18} {spec['dtype']:8} "
                f"{spec['scale']:>12.6g} {spec['zero_point']:>10}"
            )
    return "\n".join(lines)


def cmd_infer(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415

    from edge_agent.commands.infer_audio import infer_audio, is_audio_request  # noqa: PLC0415
    from edge_agent.model.detection.layouts import FAMILIES, looks_like_detector  # noqa: PLC0415
    from edge_agent.model.labels import align_labels, read_labels, top_k  # noqa: PLC0415

    if is_audio_request(args.model, args.inputs):
        return infer_audio(args)
    model = load_model(args, args.model)
    kind = None if args.kind == "auto" else args.kind
    if kind in FAMILIES or (kind is None and looks_like_detector(model.inputs, model.outputs)):
        return infer_detections(args, model, kind)
    labels = read_labels(args.labels) if args.labels else None
    classifier = _classes(model)
    if labels is not None or classifier:
        names = align_labels(labels, classifier or _size(model.outputs[0]), args.labels or "labels")
    failed = 0
    for item in args.inputs:
        try:
            tensor = read_input(item, model.inputs[0], args.resize or "stretch")
            start = time.perf_counter()
            outputs = model.infer(tensor)
            latency = round((time.perf_counter() - start) * 1000.0, 3)
        except InputError as exc:
            print(f"edge-agent: {item}: {exc}", file=sys.stderr)
            failed += 1
            continue
        result: dict[str, Any] = {"input": item}
        if labels is not None or classifier:
            result["top_k"] = [vars(s) for s in top_k(outputs[0], names, args.top_k)]
        else:
            result["outputs"] = [np.round(o.astype(np.float64), 6).tolist() for o in outputs]
        result["latency_ms"] = latency
        print(json.dumps(result), flush=True)
    return 4 if failed else 0


def infer_detections(args: argparse.Namespace, model: Model, kind: str | None) -> int:
    """One JSON line of detections per image; a layout it cannot read is a ModelError."""
    from edge_agent.model.detection.decode import DecodeOptions  # noqa: PLC0415
    from edge_agent.model.detection.detector import Detector  # noqa: PLC0415
    from edge_agent.model.detection.labels import DetectionLabels  # noqa: PLC0415

    options = DecodeOptions(min_score=args.min_score, iou=args.iou)
    labels = DetectionLabels.read(args.labels)
    detector = Detector(model, kind=kind, options=options, resize=args.resize, labels=labels)
    failed = 0
    for item in args.inputs:
        try:
            tensor, placement = detector.prepare(_read_file(Path(item)))
            start = time.perf_counter()
            found = detector.decode(model.infer(tensor), placement)
            latency = round((time.perf_counter() - start) * 1000.0, 3)
        except InputError as exc:
            print(f"edge-agent: {item}: {exc}", file=sys.stderr)
            failed += 1
            continue
        result = {"input": item, "detections": found.records(), "latency_ms": latency}
        print(json.dumps(result), flush=True)
    return 4 if failed else 0


def _size(spec: TensorSpec) -> int:
    size = 1
    for dim in spec.shape:
        size *= dim
    return size


def _classes(model: Model) -> int:
    """The class count of a classifier (one output of shape [1, N], N > 1), else 0."""
    if len(model.outputs) != 1:
        return 0
    shape = model.outputs[0].shape
    return shape[-1] if len(shape) == 2 and shape[0] == 1 and shape[-1] > 1 else 0


def read_input(item: str, spec: TensorSpec, resize: str) -> np.ndarray:
    """An image file, a .npy array, a text file of numbers, or numbers given inline."""
    import numpy as np  # noqa: PLC0415

    from edge_agent.model.preprocess import ImagePreprocessor  # noqa: PLC0415

    path = Path(item)
    if not path.is_file():
        return parse_numbers(item)
    if path.suffix == ".npy":
        try:
            return np.asarray(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise InputError(f"not a readable .npy array: {exc}") from exc
    data = _read_file(path)
    if path.suffix.lower() in NUMERIC_SUFFIXES:
        return parse_numbers(data.decode("utf-8", errors="replace"))
    try:
        preprocessor = ImagePreprocessor(spec, resize=resize)  # type: ignore[arg-type]
    except ModelError as exc:
        raise InputError(f"looks like an image, but {exc}") from exc
    return preprocessor.prepare(data)


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}") from exc


def parse_numbers(text: str) -> np.ndarray:
    """Comma- (or whitespace-) separated finite floats."""
    import numpy as np  # noqa: PLC0415

    fields = text.replace(",", " ").split()
    try:
        values = np.array([float(f) for f in fields], dtype=np.float32)
    except ValueError as exc:
        raise InputError(f"not a file nor a list of numbers: {exc}") from exc
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise InputError("no numbers, or numbers that are not finite")
    return values

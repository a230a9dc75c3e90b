"""The `edge-agent` command line: parse, dispatch, and turn errors into exit codes.

Command modules are imported only when their command runs, so `edge-agent
infer` does not pay for paho or the sources at start-up.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.commands.encrypt import add_model_encrypt_command
from edge_agent.commands.fleet import add_fleet_commands
from edge_agent.commands.keys import add_keys_commands
from edge_agent.commands.manifest import add_manifest_commands
from edge_agent.commands.samples import add_samples_commands
from edge_agent.errors import ConfigError, EdgeAgentError, InputError, ModelError
from edge_agent.util.logs import configure

EXIT_FAILURE = 1
EXIT_MODEL = 3
EXIT_INPUT = 4
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h; the systemd unit does not restart on it

DEFAULT_CONFIG = Path("/etc/edge-agent/config.toml")
RUNTIMES = ["auto", "litert", "tflite-runtime", "tensorflow"]

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent", description="int8 TFLite inference on edge boards, decisions over MQTT"
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_model_commands(commands)
    _add_daemon_commands(commands)
    add_manifest_commands(commands)
    add_keys_commands(commands)
    add_model_encrypt_command(commands)
    add_fleet_commands(commands)
    add_samples_commands(commands)
    _add_bench_command(commands)
    return parser


def _add_bench_command(commands: Any) -> None:
    bench = commands.add_parser("bench", help="measure model and camera pipeline speed here")
    bench.add_argument("--model", help="a .tflite image model (default: the bundled MobileNetV2)")
    bench.add_argument("--frames", help="glob of images (default: synthetic 1280x720 JPEGs)")
    bench.add_argument(
        "--seconds", type=float, default=5.0, help="seconds per measurement (default 5)"
    )
    bench.add_argument("--json", action="store_true", help="machine-readable output")
    _handler(bench, "bench:cmd_bench")


def _handler(parser: argparse.ArgumentParser, target: str) -> None:
    parser.set_defaults(handler=target)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtime",
        default="auto",
        choices=RUNTIMES,
        help="TFLite runtime (default: the first installed, in this order)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="interpreter threads (default: all cores)"
    )
    parser.add_argument("--delegate", default=None, help="delegate library, e.g. libedgetpu.so.1")


def _add_model_commands(commands: Any) -> None:
    inspect = commands.add_parser("inspect", help="show a model's inputs, outputs and checksum")
    inspect.add_argument("model", help="path to a .tflite model")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    _add_model_options(inspect)
    _handler(inspect, "model:cmd_inspect")

    infer = commands.add_parser("infer", help="run a model on inputs, one JSON line each")
    infer.add_argument("--model", required=True, help="path to a .tflite model")
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
        choices=["auto", "classifier", "ssd", "yolov8", "yolov5", "yolo-e2e"],
        default="auto",
        help="what the model is (default: recognised from its tensors)",
    )
    infer.add_argument(
        "--min-score", type=_fraction, default=0.25, help="detections: lowest score (0.25)"
    )
    infer.add_argument(
        "--iou", type=_fraction, default=0.45, help="detections: NMS overlap threshold (0.45)"
    )
    infer.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image file, .npy file, text file of numbers, or numbers like 0.5,1.2",
    )
    _add_model_options(infer)
    _handler(infer, "model:cmd_infer")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1")
    return value


def _add_config_option(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    help_text = f"TOML config file (default: {DEFAULT_CONFIG})"
    if positional:
        parser.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG, help=help_text)
    else:
        parser.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG, help=help_text)


def _add_daemon_commands(commands: Any) -> None:
    run = commands.add_parser("run", help="run the daemon")
    _add_config_option(run)
    run.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop once every finite source (a glob of files, a file) is exhausted",
    )
    _handler(run, "daemon:cmd_run")

    config = commands.add_parser("config", help="check the configuration or print its schema")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate and print the resolved config")
    _add_config_option(check, positional=True)
    _handler(check, "daemon:cmd_config_check")
    schema = config_commands.add_parser("schema", help="print the JSON Schema of the config")
    _handler(schema, "daemon:cmd_config_schema")

    demo = commands.add_parser("demo", help="the whole pipeline on the bundled models")
    demo.add_argument(
        "--models",
        type=Path,
        default=None,
        help="the bundled models/ directory (default: found beside the package)",
    )
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary directory")
    _handler(demo, "demo:cmd_demo")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    module, name = args.handler.split(":")
    handler: Handler = getattr(importlib.import_module(f"edge_agent.commands.{module}"), name)
    try:
        return handler(args)
    except ConfigError as exc:
        return _fail(exc, EXIT_CONFIG)
    except ModelError as exc:
        return _fail(exc, EXIT_MODEL)
    except InputError as exc:
        return _fail(exc, EXIT_INPUT)
    except EdgeAgentError as exc:
        return _fail(exc, EXIT_FAILURE)
    except KeyboardInterrupt:
        return 130


def _configure_logging(verbose: bool) -> None:
    configure(verbose, journald=bool(os.environ.get("JOURNAL_STREAM")))


def _fail(exc: Exception, code: int) -> int:
    prefix = "<3>" if os.environ.get("JOURNAL_STREAM") else ""  # an error, for journald
    print(f"{prefix}edge-agent: error: {exc}", file=sys.stderr)
    return code

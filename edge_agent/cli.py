"""The `edge-agent` command line: parse, dispatch, and turn errors into exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from edge_agent import __version__
from edge_agent.commands import model as model_cmds
from edge_agent.errors import ConfigError, EdgeAgentError, InputError, ModelError

log = logging.getLogger(__name__)

EXIT_FAILURE = 1
EXIT_MODEL = 3
EXIT_INPUT = 4
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h; systemd units do not restart on it

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent", description="int8 TFLite inference on edge boards, decisions over MQTT"
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser("inspect", help="show a model's inputs, outputs and checksum")
    inspect.add_argument("model", help="path to a .tflite model")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    model_cmds.add_model_options(inspect)
    inspect.set_defaults(handler=model_cmds.cmd_inspect)

    infer = commands.add_parser(
        "infer", help="run a model on images or numbers, one JSON line each"
    )
    infer.add_argument("--model", required=True, help="path to a .tflite model")
    infer.add_argument("--labels", help="labels file, one per line")
    infer.add_argument("--top-k", type=int, default=3, help="classes to show (default 3)")
    infer.add_argument(
        "--resize",
        choices=["stretch", "crop", "letterbox"],
        default="stretch",
        help="fit images by stretching the whole frame (default), centre crop, or letterbox",
    )
    infer.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image file, .npy file, text file of numbers, or numbers like 0.5,1.2",
    )
    model_cmds.add_model_options(infer)
    infer.set_defaults(handler=model_cmds.cmd_infer)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
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


def _fail(exc: Exception, code: int) -> int:
    print(f"edge-agent: error: {exc}", file=sys.stderr)
    return code

"""`edge-agent bench`: model and camera pipeline speed on this board, against the
limits measured in the same run (edge_agent/devtools/bench.py does the measuring)."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    bench = commands.add_parser("bench", help="measure model and camera pipeline speed here")
    add_arguments(bench)
    bench.set_defaults(handler=cmd_bench)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a .tflite image model (default: the bundled MobileNetV2)")
    parser.add_argument(
        "--frames", help="glob of images to use (default: synthetic 1280x720 JPEGs)"
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="seconds per measurement (default 5)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--detector", help="a detection model (default: the bundled shapes detector, if any)"
    )
    parser.add_argument("--detector-labels", help="its label file")


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_agent.devtools.bench import run  # noqa: PLC0415 - numpy, Pillow, the agent

    return run(args)

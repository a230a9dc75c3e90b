"""Options more than one command takes."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/edge-agent/config.toml")
RUNTIMES = ["auto", "litert", "tflite-runtime", "tensorflow"]


def add_model_options(parser: argparse.ArgumentParser) -> None:
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


def add_config_option(parser: argparse.ArgumentParser, positional: bool = False) -> None:
    help_text = f"TOML config file (default: {DEFAULT_CONFIG})"
    if positional:
        parser.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG, help=help_text)
    else:
        parser.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG, help=help_text)


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1")
    return value

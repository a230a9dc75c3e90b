"""`edge-agent demo`: the whole pipeline on the bundled models (edge_agent/devtools/demo.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    demo = commands.add_parser("demo", help="the whole pipeline on the bundled models")
    demo.add_argument(
        "--models",
        type=Path,
        default=None,
        help="the bundled models/ directory (default: found beside the package)",
    )
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary directory")
    demo.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from edge_agent.devtools.demo import run_demo  # noqa: PLC0415 - paho, the agent

    return run_demo(args.models, keep=args.keep, verbose=args.verbose)

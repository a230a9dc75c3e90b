"""The `edge-agent` command line: one parser, each command module registering its
own subcommands, and every error turned into an exit code in one place
(`errors.exit_code`).

Command modules keep their top-level imports light and import what a command
needs when it runs, so `edge-agent keys show` does not pay for numpy, paho or the
runtime at start-up.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from edge_agent import __version__
from edge_agent.errors import EdgeAgentError, exit_code
from edge_agent.util.logs import configure

# In the order `edge-agent --help` lists them.
COMMANDS = ("model", "daemon", "demo", "manifest", "keys", "encrypt", "fleet", "samples", "bench")

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent", description="int8 TFLite inference on edge boards, decisions over MQTT"
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"edge_agent.commands.{name}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(args.verbose, journald=bool(os.environ.get("JOURNAL_STREAM")))
    handler: Handler = args.handler
    try:
        return handler(args)
    except (EdgeAgentError, KeyboardInterrupt) as exc:
        return _fail(exc)


def _fail(exc: BaseException) -> int:
    if isinstance(exc, EdgeAgentError):
        prefix = "<3>" if os.environ.get("JOURNAL_STREAM") else ""  # an error, for journald
        print(f"{prefix}edge-agent: error: {exc}", file=sys.stderr)
    return exit_code(exc)

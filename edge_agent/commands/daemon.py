"""`edge-agent run` and `edge-agent config check|schema`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from edge_agent.commands.options import add_config_option
from edge_agent.errors import ConfigError

log = logging.getLogger(__name__)


def register(commands: Any) -> None:
    run = commands.add_parser("run", help="run the daemon")
    add_config_option(run)
    run.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop once every finite source (a glob of files, a file) is exhausted",
    )
    run.set_defaults(handler=cmd_run)

    config = commands.add_parser("config", help="check the configuration or print its schema")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser(
        "check", help="validate, check what `run` would check, print the resolved config"
    )
    add_config_option(check, positional=True)
    check.set_defaults(handler=cmd_config_check)
    schema = config_commands.add_parser("schema", help="print the JSON Schema of the config")
    schema.set_defaults(handler=cmd_config_schema)


def cmd_run(args: argparse.Namespace) -> int:
    # The daemon's imports only for the daemon: `edge-agent keys show` stays light.
    from edge_agent.app.agent import Agent  # noqa: PLC0415
    from edge_agent.app.sdnotify import Notifier  # noqa: PLC0415
    from edge_agent.config import settings as cfg  # noqa: PLC0415

    settings = cfg.load_settings(args.config)
    logging.getLogger().setLevel(settings.log_level.upper())
    stop = threading.Event()
    reload_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    def request_reload(_signum: int, _frame: FrameType | None) -> None:
        log.info("received SIGHUP, reloading %s", args.config)
        reload_requested.set()

    # Before the agent is built: a SIGTERM while models load still ends in a clean stop.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    agent = Agent(settings, notifier=Notifier.from_environ(os.environ))
    agent.reload_requested = reload_requested
    agent.reloader = lambda: cfg.load_settings(args.config)
    agent.run(stop, until_done=args.exit_when_done)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Valid settings, and everything `run` would check before starting (preflight)."""
    from edge_agent.app import preflight  # noqa: PLC0415
    from edge_agent.config import settings as cfg  # noqa: PLC0415

    settings = cfg.load_settings(args.config)
    found = preflight.problems(settings)
    if found:
        raise ConfigError(f"{args.config}: `run` would refuse this:\n  " + "\n  ".join(found))
    print(json.dumps(cfg.redacted(settings), indent=2))
    return 0


def cmd_config_schema(_args: argparse.Namespace) -> int:
    from edge_agent.config import settings as cfg  # noqa: PLC0415

    print(json.dumps(cfg.json_schema(), indent=2))
    return 0

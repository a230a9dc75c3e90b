"""`edge-agent run` and `edge-agent config check|schema`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from types import FrameType

from edge_agent.app import preflight
from edge_agent.app.agent import Agent
from edge_agent.app.sdnotify import Notifier
from edge_agent.config import settings as cfg
from edge_agent.errors import ConfigError

log = logging.getLogger(__name__)


def cmd_run(args: argparse.Namespace) -> int:
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
    settings = cfg.load_settings(args.config)
    found = preflight.problems(settings)
    if found:
        raise ConfigError(f"{args.config}: `run` would refuse this:\n  " + "\n  ".join(found))
    print(json.dumps(cfg.redacted(settings), indent=2))
    return 0


def cmd_config_schema(_args: argparse.Namespace) -> int:
    print(json.dumps(cfg.json_schema(), indent=2))
    return 0

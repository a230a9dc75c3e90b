"""`edge-agent fleet status|rollout|history`: the fleet operator's view and rollouts.

`cli.py` imports this module to build its parser for every command, so the
fleet package (paho, sqlite3, cryptography) is imported only when a fleet
command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.commands.manifest import parse_duration
from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from edge_agent.fleet.history import History
    from edge_agent.fleet.observe import BrokerOptions


def default_db() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "edge-agent" / "fleet.db"


def register(commands: Any) -> None:
    """Register `fleet ...` on the CLI's subparsers (called by cli.py)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("broker")
    group.add_argument("--host", default="localhost", help="MQTT broker (%(default)s)")
    group.add_argument("--port", type=int, default=1883, help="(%(default)s)")
    group.add_argument("--prefix", default="edge", help="topic prefix of the fleet (%(default)s)")
    group.add_argument("--username", help="MQTT user name")
    group.add_argument("--password-file", type=Path, help="file holding the MQTT password")
    group.add_argument("--tls", action="store_true", help="TLS with the system's CAs")
    group.add_argument("--ca-file", help="TLS, verifying the broker with this CA")
    common.add_argument("--db", type=Path, default=None, help=f"history file ({default_db()})")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    parser = commands.add_parser("fleet", help="fleet status, staged rollouts, history")
    actions = parser.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    status = actions.add_parser("status", parents=[common], help="who runs what, right now")
    status.add_argument("--seconds", type=float, default=3.0, help="read for up to this long")
    status.add_argument("--watch", action="store_true", help="keep the table live (Ctrl-C)")
    status.add_argument("--interval", type=float, default=2.0, help="--watch refresh, seconds")
    status.set_defaults(handler=cmd_status)
    _add_rollout(actions, common)
    history = actions.add_parser("history", parents=[common], help="what fleet saw before")
    history.add_argument("--running", metavar="VERSION", help="devices whose model has VERSION")
    history.add_argument("--model", metavar="NAME", help="with --running: only this model")
    history.add_argument("--device", help="the transitions of one device")
    history.add_argument("--limit", type=int, default=1000)
    history.set_defaults(handler=cmd_history)


def _add_rollout(actions: Any, common: argparse.ArgumentParser) -> None:
    rollout = actions.add_parser(
        "rollout", parents=[common], help="publish a manifest in stages, halt on failures"
    )
    rollout.add_argument("manifest", type=Path, metavar="MANIFEST", help="the new manifest.json")
    rollout.add_argument("--key", type=Path, required=True, help="private signing key")
    where = rollout.add_mutually_exclusive_group(required=True)
    where.add_argument("--publish-dir", type=Path, help="directory the update server serves")
    where.add_argument("--publish-cmd", help="run CMD MANIFEST SIGNATURE to publish")
    rollout.add_argument(
        "--previous", type=Path, help="the manifest the fleet runs now (default: in --publish-dir)"
    )
    rollout.add_argument("--stages", default="5,25,100", help="percents (%(default)s)")
    rollout.add_argument("--min-devices", type=int, default=10, help="results before a halt")
    rollout.add_argument("--max-failure", type=float, default=0.05, help="failure share")
    rollout.add_argument("--max-errors", type=int, default=0, help="errors tolerated after swap")
    duration: dict[str, Any] = {"type": parse_duration, "metavar": "DURATION"}
    rollout.add_argument("--soak", default="10m", **duration, help="healthy this long (10m)")
    rollout.add_argument("--stage-timeout", default="30m", **duration, help="wait (30m)")
    rollout.add_argument("--settle", default="5s", **duration, help="read retained topics (5s)")
    rollout.add_argument("--expires-in", default="30d", **duration, help="manifest validity")
    rollout.add_argument("--salt", help="rollout salt (default: a new random one)")
    rollout.add_argument(
        "--min-shadow-agreement",
        type=float,
        metavar="X",
        help="a stage goes live only if the new model, in shadow on its devices, agrees this "
        "often (0..1) over at least --min-devices devices",
    )
    rollout.add_argument("--shadow-pipeline", metavar="NAME", help="its reports (default: all)")
    rollout.add_argument(
        "--shadow-wait", default="3m", **duration, help="gather shadow reports for up to (3m)"
    )
    rollout.set_defaults(handler=cmd_rollout)


def _broker(args: argparse.Namespace) -> BrokerOptions:
    from edge_agent.fleet.observe import BrokerOptions  # noqa: PLC0415 - lazy, see above

    password = None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"--password-file {args.password_file}: {exc.strerror}") from None
    return BrokerOptions(
        host=args.host,
        port=args.port,
        prefix=args.prefix,
        username=args.username,
        password=password,
        ca_file=args.ca_file,
        tls=args.tls,
    )


def _history(args: argparse.Namespace) -> History:
    from edge_agent.fleet.history import History  # noqa: PLC0415 - lazy, see above

    return History(args.db or default_db())


def cmd_status(args: argparse.Namespace) -> int:
    from edge_agent.fleet import report  # noqa: PLC0415 - lazy, see above
    from edge_agent.fleet.observe import FleetObserver  # noqa: PLC0415

    history = _history(args)
    observer = FleetObserver(_broker(args), history.add)
    observer.start()
    try:
        observer.settle(args.seconds)
        while True:
            devices = observer.snapshot()
            summary = observer.summary()
            render = report.status_json if args.json else report.status_text
            if args.watch and sys.stdout.isatty():
                print("\033[H\033[2J", end="")
            print(render(devices, summary), flush=True)
            history.flush()
            if not args.watch:
                return 0
            time.sleep(args.interval)
    finally:
        observer.stop()
        history.close()


def cmd_history(args: argparse.Namespace) -> int:
    from edge_agent.fleet import report  # noqa: PLC0415 - lazy, see above

    history = _history(args)
    try:
        if args.running is not None:
            rows = history.running(args.running, args.model)
            text = report.running_text(rows)
            data: object = [vars(r) for r in rows]
        else:
            transitions = history.transitions(args.device, args.limit)
            text = report.transitions_text(transitions)
            data = [vars(t) for t in transitions]
        print(json.dumps(data, indent=2) if args.json else text)
        return 0
    finally:
        history.close()


def cmd_rollout(args: argparse.Namespace) -> int:
    from edge_agent.fleet import report  # noqa: PLC0415 - lazy, see above
    from edge_agent.fleet.publish import (  # noqa: PLC0415
        CommandPublisher,
        DirPublisher,
        Publisher,
        check_files,
    )
    from edge_agent.fleet.rollout import Rollout, RolloutOptions, stages_from  # noqa: PLC0415

    previous = args.previous
    publisher: Publisher
    if args.publish_dir is not None:
        publisher = DirPublisher(args.publish_dir)
        previous = previous or args.publish_dir / "manifest.json"
    else:
        publisher = CommandPublisher(args.publish_cmd)
    if previous is None or not previous.is_file():
        raise ConfigError(
            "a halted rollout returns the fleet to the manifest it runs now: pass --previous "
            "(or publish into --publish-dir, which holds it)"
        )
    options = RolloutOptions(
        manifest=args.manifest,
        previous=previous,
        key=args.key,
        stages=stages_from(args.stages),
        min_devices=args.min_devices,
        max_failure=args.max_failure,
        soak=args.soak.total_seconds(),
        stage_timeout=args.stage_timeout.total_seconds(),
        settle=args.settle.total_seconds(),
        max_errors=args.max_errors,
        salt=args.salt,
        valid_for=args.expires_in,
        min_shadow_agreement=args.min_shadow_agreement,
        shadow_pipeline=args.shadow_pipeline,
        shadow_wait=args.shadow_wait.total_seconds(),
    )
    history = _history(args)
    try:
        rollout = Rollout(options, _broker(args), publisher, history=history)
        if args.publish_dir is not None:
            check_files(rollout.base, args.publish_dir)
        result = rollout.run()
    finally:
        history.close()
    if args.json:
        print(json.dumps({**vars(result), "salt": rollout.salt}, indent=2, default=str))
    else:
        print(report.rollout_text(result.rows))
    return 0 if result.completed else 1

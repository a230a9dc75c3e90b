"""`edge-agent keys init|show`: the device key that encrypted models are wrapped to.

Run as the service user, so the key belongs to it:
`sudo -u edge-agent edge-agent keys init`. `cli.py` imports this module to build its
parser for every command, so `cryptography` is imported only when a keys command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError

DEFAULT_STATE_DIR = Path("/var/lib/edge-agent")  # the unit's StateDirectory=


def register(commands: Any) -> None:
    """Register `keys ...` on the CLI's subparsers (called by cli.py)."""
    parser = commands.add_parser("keys", help="the device key that encrypted models open with")
    actions = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    init = actions.add_parser("init", help="make this device's X25519 key pair")
    _add_location(init)
    init.add_argument("--force", action="store_true", help="replace an existing key (rotation)")
    init.add_argument(
        "--stdout",
        action="store_true",
        help="write the private key to stdout, for `systemd-creds encrypt - FILE`, not to disk",
    )
    init.set_defaults(handler=cmd_init)
    show = actions.add_parser("show", help="print the public key and key id, for enrollment")
    _add_location(show)
    show.add_argument("--id", action="store_true", help="print only the key id")
    show.set_defaults(handler=cmd_show)


def _add_location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="the agent's state_dir (default %(default)s): device-key.pem lives there",
    )
    parser.add_argument(
        "--credentials-dir",
        type=Path,
        default=None,
        help="systemd's credentials directory (default: $CREDENTIALS_DIRECTORY)",
    )


def credentials_dir(args: argparse.Namespace) -> Path | None:
    given: Path | None = args.credentials_dir
    if given is None and os.environ.get("CREDENTIALS_DIRECTORY"):
        given = Path(os.environ["CREDENTIALS_DIRECTORY"])
    return given


def cmd_init(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.x25519 import (  # noqa: PLC0415 - lazy
        X25519PrivateKey,
    )

    from edge_agent.update import devicekey  # noqa: PLC0415 - lazy, see above
    from edge_agent.update.envelope import key_id  # noqa: PLC0415

    if args.stdout:
        if sys.stdout.isatty():
            raise ConfigError(
                "--stdout writes a private key: pipe it into `systemd-creds encrypt "
                f"--name={devicekey.CREDENTIAL} - FILE`, not to a terminal"
            )
        key = X25519PrivateKey.generate()
        sys.stdout.buffer.write(devicekey.private_pem(key))
        print(f"device key id {key_id(key)}", file=sys.stderr)
        return 0
    path = args.state_dir / devicekey.KEY_FILE
    key = devicekey.create_device_key(path, replace=args.force)
    print(f"wrote {path} (0600): device key id {key_id(key)}")
    print("enroll it with the fleet operator: edge-agent keys show > <device>.pub")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from edge_agent.update import devicekey  # noqa: PLC0415 - lazy, see above
    from edge_agent.update.envelope import key_id  # noqa: PLC0415

    key = devicekey.load_device_key(args.state_dir, credentials_dir(args))
    if args.id:
        print(key_id(key))
        return 0
    source = devicekey.key_path(args.state_dir, credentials_dir(args))
    print(f"# edge-agent device key {key_id(key)} (from {source})")
    sys.stdout.write(devicekey.public_pem(key.public_key()).decode())
    return 0

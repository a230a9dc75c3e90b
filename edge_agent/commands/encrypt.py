"""Encrypting models for devices: `edge-agent model encrypt`, and `encrypt_release`,
which `manifest create --encrypt --recipients DIR_OR_FILE` calls.

Recipients, as a file or a directory:

    recipients/
      lab-pi.pub              a device (what `edge-agent keys show` printed)
      porch.group/            a group named "porch": one .pub per member device
        porch-pi.pub
        garage-pi.pub
        group-key.pem         the group's private key: made here on first use (0600)
        group-key.members     the member key ids it was last wrapped for

Keep the directory as secret as the signing key: it holds the group keys. Removing a
member's .pub rotates its group's key at the next release (the removed device keeps
the old key, which opens no later release); deleting group-key.pem rotates it too.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from edge_agent.errors import ConfigError, InputError
from edge_agent.util.fs import atomic_write

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

log = logging.getLogger(__name__)

GROUP_SUFFIX = ".group"
GROUP_KEY = "group-key.pem"
GROUP_MEMBERS = "group-key.members"
ENCRYPTED_SUFFIX = ".enc"


@dataclass(frozen=True)
class Group:
    name: str
    key: X25519PrivateKey
    members: dict[str, X25519PublicKey]  # key id -> public key


@dataclass(frozen=True)
class Recipients:
    devices: dict[str, X25519PublicKey] = field(default_factory=dict)  # direct recipients
    groups: tuple[Group, ...] = ()

    def public_keys(self) -> list[X25519PublicKey]:
        return [*self.devices.values(), *(group.key.public_key() for group in self.groups)]


@dataclass(frozen=True)
class Release:
    """What `encrypt_release` wrote, as manifest JSON: `files` maps each source path
    (resolved) to its file object (url, length, sha256 of the ciphertext, and
    `encryption`); `groups` is the manifest's top-level "groups" list."""

    files: dict[Path, dict[str, object]]
    groups: list[dict[str, object]]
    written: list[Path]


def load_recipients(path: Path) -> Recipients:
    """Device keys and groups from a .pub file or a recipients directory; makes or
    rotates group keys as the group directories require (see the module doc)."""
    from edge_agent.update.devicekey import parse_public_key  # noqa: PLC0415 - lazy

    if path.is_file():
        return Recipients(devices=_keyed([parse_public_key(_read(path), str(path))]))
    if not path.is_dir():
        raise ConfigError(f"{path}: no such recipients file or directory")
    devices = _keyed(parse_public_key(_read(p), str(p)) for p in sorted(path.glob("*.pub")))
    groups = tuple(_group(d) for d in sorted(path.glob("*" + GROUP_SUFFIX)) if d.is_dir())
    if not devices and not groups:
        raise ConfigError(f"{path}: no device keys (*.pub) nor groups (*{GROUP_SUFFIX}/)")
    return Recipients(devices, groups)


def _group(directory: Path) -> Group:
    from edge_agent.update import devicekey  # noqa: PLC0415 - lazy

    name = directory.name.removesuffix(GROUP_SUFFIX)
    members = _keyed(
        devicekey.parse_public_key(_read(p), str(p)) for p in sorted(directory.glob("*.pub"))
    )
    if not members:
        raise ConfigError(f"{directory}: a group without members (*.pub)")
    key_file, members_file = directory / GROUP_KEY, directory / GROUP_MEMBERS
    before = set(_read(members_file).decode().split()) if members_file.exists() else set()
    left = before - set(members)
    if key_file.exists() and not left:
        key = devicekey.parse_private_key(_read(key_file), str(key_file))
    else:
        if left:
            log.warning("group %s: %s left the group: rotating its key", name, ", ".join(left))
        key = devicekey.create_device_key(key_file, replace=True)
    atomic_write(members_file, "".join(f"{ident}\n" for ident in sorted(members)).encode())
    return Group(name, key, members)


def _keyed(keys: Any) -> dict[str, X25519PublicKey]:
    from edge_agent.update.envelope import key_id  # noqa: PLC0415 - lazy

    return {key_id(key): key for key in keys}


def encrypt_release(
    sources: Sequence[Path],
    recipients: Path | Recipients,
    out_dir: Path,
    *,
    base_url: str | None = None,
    cipher: str | None = None,
) -> Release:
    """Encrypt each source (models and labels) to `out_dir/<name>.enc` with its own
    content key, and write each group member's key file under `out_dir/groups/`."""
    from edge_agent.update import envelope  # noqa: PLC0415 - lazy

    if isinstance(recipients, Path):
        recipients = load_recipients(recipients)
    publics = recipients.public_keys()
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = sorted(envelope.key_id(key) for key in publics)
    files: dict[Path, dict[str, object]] = {}
    written: list[Path] = []
    for source in sources:
        plaintext = _read(source)
        target = out_dir / (source.name + ENCRYPTED_SUFFIX)
        data = envelope.seal(plaintext, publics, cipher=cipher or envelope.DEFAULT_CIPHER)
        atomic_write(target, data)
        written.append(target)
        files[source.resolve()] = {
            "url": _url(target.name, base_url),
            "length": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "encryption": {
                "cipher": cipher or envelope.DEFAULT_CIPHER,
                "recipients": ids,
                "plaintext_length": len(plaintext),
                "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(),
            },
        }
    groups = [_write_group(group, out_dir, base_url, written) for group in recipients.groups]
    return Release(files, groups, written)


def encrypt_for_manifest(
    sources: Sequence[Path],
    recipients: Path,
    out_dir: Path,
    *,
    base_url: str | None = None,
    cipher: str | None = None,
) -> Release:
    """`manifest create --encrypt`: `encrypt_release` into the manifest's directory,
    saying what it wrote and which plaintext sits where it would be published."""
    names = [path.name for path in sources]
    if len(set(names)) != len(names):
        raise ConfigError("--encrypt: two files of one name would overwrite each other's .enc")
    release = encrypt_release(sources, recipients, out_dir, base_url=base_url, cipher=cipher)
    for path in release.written:
        print(f"wrote {path}")
    for source in sources:
        if source.resolve().parent == out_dir.resolve():
            print(f"note: {source} is plaintext beside the manifest: do not publish it")
    return release


def _write_group(
    group: Group, out_dir: Path, base_url: str | None, written: list[Path]
) -> dict[str, object]:
    from edge_agent.update import envelope  # noqa: PLC0415 - lazy
    from edge_agent.update.groupkey import group_file_name, seal_group_key  # noqa: PLC0415

    ident = envelope.key_id(group.key)
    relative = f"groups/{group.name}/{ident}/"
    directory = out_dir / relative
    directory.mkdir(parents=True, exist_ok=True)
    for member_id, member in group.members.items():
        path = directory / group_file_name(member_id)
        atomic_write(path, seal_group_key(group.name, group.key, member))
        written.append(path)
    return {
        "name": group.name,
        "key_id": ident,
        "public_key": envelope.b64(envelope.raw_public(group.key.public_key())),
        "url": _url(relative, base_url),
    }


def _url(relative: str, base_url: str | None) -> str:
    url = quote(relative)
    return base_url.rstrip("/") + "/" + url if base_url else url


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def cmd_model_encrypt(args: argparse.Namespace) -> int:
    """A model installed by hand, encrypted for this device (or the given devices)."""
    from edge_agent.commands.keys import credentials_dir  # noqa: PLC0415 - lazy
    from edge_agent.update import devicekey, envelope  # noqa: PLC0415 - lazy

    if args.recipient:
        keys = [devicekey.parse_public_key(_read(p), str(p)) for p in args.recipient]
    else:
        keys = [devicekey.load_device_key(args.state_dir, credentials_dir(args)).public_key()]
    output: Path = args.output or args.model.with_name(args.model.name + ENCRYPTED_SUFFIX)
    if output.resolve() == args.model.resolve():
        raise ConfigError(f"{output}: the output would overwrite the model")
    atomic_write(output, envelope.seal(_read(args.model), keys, cipher=args.cipher))
    ids = ", ".join(sorted(envelope.key_id(key) for key in keys))
    print(f"wrote {output}, encrypted for key(s) {ids}")
    print(f"{args.model} is still there in plaintext: remove it once {output} is in place")
    return 0


def register(commands: Any) -> None:
    """Register `model encrypt` on the CLI's subparsers (called by cli.py)."""
    from edge_agent.commands.keys import DEFAULT_STATE_DIR  # noqa: PLC0415 - a light module

    parser = commands.add_parser("model", help="encrypt a model file for devices")
    actions = parser.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    encrypt = actions.add_parser("encrypt", help="encrypt a model for this device or others")
    encrypt.add_argument("model", type=Path, metavar="MODEL")
    encrypt.add_argument("-o", "--output", type=Path, help="(default: MODEL.enc)")
    encrypt.add_argument(
        "--recipient",
        type=Path,
        action="append",
        help="a device's .pub, repeatable (default: this device's own key)",
    )
    encrypt.add_argument(
        "--cipher", choices=["chacha20-poly1305", "aes-256-gcm"], default="chacha20-poly1305"
    )
    encrypt.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    encrypt.add_argument("--credentials-dir", type=Path, default=None)
    encrypt.set_defaults(handler=cmd_model_encrypt)

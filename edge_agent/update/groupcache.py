"""The group key files this device was handed, kept in the update store
(`<state_dir>/updates/groups/`) so that a restart opens models encrypted to a group
without asking the update server: a board may boot with no network.

A file here is what the server sent (the group's private key, wrapped to this
device's key: useless without it) with the group's name and public key from the
signed manifest that named it. It is named `<group key id>-<device key id>.json`, so
a rotated device key never reads a file wrapped to its predecessor. Stdlib only:
the store imports this module and `cryptography` is loaded only when a model is
encrypted.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from edge_agent.util.fs import atomic_write

log = logging.getLogger(__name__)

KEPT = 16  # per device key: rotations are rare, and a rollback may need an older group key
_KEY_ID = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class CachedGroup:
    name: str
    key_id: str  # the group's key id
    public_key: bytes  # raw X25519, as the signed manifest gave it
    data: bytes  # the group key file, as the server sent it
    path: Path


class GroupCache:
    """Group key files by (group key id, device key id), at most KEPT per device key."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def save(self, name: str, key_id: str, public_key: bytes, member: str, data: bytes) -> None:
        """Keep a group key file that opened (the caller checked it)."""
        path = self._path(key_id, member)
        document = {
            "group": name,
            "key_id": key_id,
            "public_key": base64.b64encode(public_key).decode(),
            "member_file": data.decode("utf-8"),
        }
        self._directory.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(document, indent=1).encode())
        self._prune(member)

    def get(self, key_id: str, member: str) -> CachedGroup | None:
        path = self._path(key_id, member)
        return self._read(path) if path.is_file() else None

    def load(self, member: str) -> list[CachedGroup]:
        """Every readable file for the device key `member`, newest first; an
        unreadable one is logged and skipped (its group's models will say why)."""
        found = [self._read(path) for path in self._files(member)]
        return [group for group in found if group is not None]

    def _path(self, key_id: str, member: str) -> Path:
        if not (_KEY_ID.fullmatch(key_id) and _KEY_ID.fullmatch(member)):
            raise ValueError(f"not key ids: {key_id!r}, {member!r}")
        return self._directory / f"{key_id}-{member}.json"

    def _files(self, member: str) -> list[Path]:
        try:
            paths = list(self._directory.glob(f"*-{member}.json"))
        except OSError:
            return []
        return sorted(paths, key=_mtime, reverse=True)

    def _prune(self, member: str) -> None:
        for path in self._files(member)[KEPT:]:
            try:
                path.unlink()
            except OSError as exc:
                log.warning("update: cannot remove the old group key file %s: %s", path, exc)

    @staticmethod
    def _read(path: Path) -> CachedGroup | None:
        try:
            document = json.loads(path.read_bytes())
            public_key = base64.b64decode(document["public_key"], validate=True)
            group = CachedGroup(
                str(document["group"]),
                str(document["key_id"]),
                public_key,
                str(document["member_file"]).encode("utf-8"),
                path,
            )
        except (OSError, ValueError, TypeError, KeyError, binascii.Error) as exc:
            log.warning("update: cached group key file %s is unreadable: %s", path, exc)
            return None
        if len(public_key) != 32 or not path.name.startswith(group.key_id + "-"):
            log.warning("update: cached group key file %s does not match its name", path)
            return None
        return group


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0

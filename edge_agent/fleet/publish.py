"""Signed manifests for a rollout's stages, and where they are published.

Each stage's manifest is the operator's manifest (made by `edge-agent manifest
create`) with a new version, fresh dates and the stage's rollout percent, then
checked with the devices' own parser before it is signed (`update.keys.sign`).

Order of publication: the signature first, then the manifest. A device reads
manifest.json, then manifest.json.sig. Written in this order, a device that got
the new manifest always finds the new signature after it; the only mismatched
pair left is an old manifest with the new signature, seen by a device that
did not trust that old manifest yet, which fails the signature check, is
reported as rejected and retried. The other order would make exactly the
devices that should update fetch a new manifest with the old signature. A CDN
caches the two files apart: see the README (serve both with `Cache-Control:
no-cache`, invalidate both, signature first).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import ConfigError, InputError, ManifestError
from edge_agent.update import keys
from edge_agent.update import manifest as spec
from edge_agent.update.targeting import Targets, parse_targets
from edge_agent.util.fs import atomic_write

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"


@dataclass(frozen=True)
class Document:
    """A manifest as JSON data plus what a rollout needs from it."""

    data: dict[str, Any]
    version: int
    models: dict[str, str]  # name -> sha256
    targets: dict[str, Targets | None]

    @classmethod
    def read(cls, path: Path) -> Document:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            document = json.loads(raw)
            entries = document["models"]
            targets = {
                e["name"]: parse_targets(e.get("targets"), f"models[{i}].targets")
                for i, e in enumerate(entries)
            }
            return cls(
                document,
                int(document["version"]),
                {e["name"]: e["sha256"] for e in entries},
                targets,
            )
        except (ValueError, KeyError, TypeError, ManifestError) as exc:
            raise InputError(f"{path}: not a manifest: {exc}") from None


def render(
    base: Document,
    *,
    version: int,
    percent: float | None,
    salt: str | None,
    now: datetime,
    valid_for: timedelta,
) -> bytes:
    """The base manifest as version `version`, issued now, with this rollout (None:
    every device); checked by the devices' parser. Formatted as `manifest create`
    writes manifests."""
    document = copy.deepcopy(base.data)
    document["version"] = version
    document["issued"] = spec.format_time(now)
    document["expires"] = spec.format_time(now + valid_for)
    document.pop("rollout", None)
    if percent is not None and salt is not None:
        document["rollout"] = {
            "percent": int(percent) if percent.is_integer() else percent,
            "salt": salt,
        }
    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
    parsed = spec.parse_manifest(data)
    spec.check_freshness(parsed, trusted_version=None, now=now)
    return data


def check_files(base: Document, directory: Path) -> int:
    """Every file the manifest names by a relative URL is in `directory`, with the
    length and sha256 the manifest says: a missing model is a bricked rollout."""
    checked = 0
    for entry in base.data["models"]:
        refs = [entry, entry.get("labels"), (entry.get("golden") or {}).get("input")]
        for ref in (r for r in refs if r):
            if urlsplit(ref["url"]).scheme:
                continue  # elsewhere: the operator's to check (edge-agent manifest verify)
            path = directory / unquote(urlsplit(ref["url"]).path)
            _check_file(path, int(ref["length"]), str(ref["sha256"]))
            checked += 1
    return checked


def _check_file(path: Path, length: int, sha256: str) -> None:
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise ConfigError(
            f"{path}: the manifest names it, but it cannot be read: {exc.strerror}"
        ) from None
    if size != length or digest.hexdigest() != sha256:
        raise ConfigError(f"{path}: not the file the manifest describes (length or sha256)")


class Publisher(Protocol):
    def publish(self, manifest: bytes, signature: bytes) -> None: ...


class DirPublisher:
    """Into a directory a web server or a sync job serves: signature, then manifest."""

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise ConfigError(f"--publish-dir {directory}: not a directory")
        self.directory = directory

    def publish(self, manifest: bytes, signature: bytes) -> None:
        atomic_write(self.directory / SIGNATURE, signature)
        atomic_write(self.directory / MANIFEST, manifest)


class CommandPublisher:
    """Runs `COMMAND MANIFEST SIGNATURE` (no shell); it must upload the signature
    first. A non-zero exit stops the rollout before any nudge."""

    def __init__(self, command: str, timeout: float = 300.0) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise ConfigError("--publish-cmd: empty command")
        self.timeout = timeout

    def publish(self, manifest: bytes, signature: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="edge-agent-rollout-") as temp:
            paths = [Path(temp) / MANIFEST, Path(temp) / SIGNATURE]
            paths[0].write_bytes(manifest)
            paths[1].write_bytes(signature)
            try:
                result = subprocess.run(
                    [*self.argv, *map(str, paths)],
                    capture_output=True,
                    timeout=self.timeout,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ConfigError(f"--publish-cmd {self.argv[0]}: {exc}") from exc
        if result.returncode != 0:
            tail = result.stderr.decode(errors="replace").strip()[-500:]
            raise ConfigError(f"--publish-cmd exited with {result.returncode}: {tail}")


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return keys.sign(key, data)

"""Ed25519 keys that sign model update manifests.

The private key stays with the fleet operator and never goes to a device;
devices are configured with one or more public keys (two during a rotation).
Keys are PEM files (PKCS8 / SubjectPublicKeyInfo) so that openssl and other
tools read them too. Loading failures become `ConfigError`s naming the file:
a wrong key path is an operator's configuration mistake, not an update to reject.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from edge_agent.errors import ConfigError

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Write a new key pair; never overwrite a file, since losing a signing key
    locks the fleet out of updates (devices trust only the keys they have)."""
    if private_path.absolute() == public_path.absolute():
        raise ConfigError(f"{private_path}: the private and public key need two different files")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise ConfigError(f"{path}: already exists; refusing to overwrite a key")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _create(private_path, pem, PRIVATE_MODE)
    try:
        _create(public_path, public, PUBLIC_MODE)
    except BaseException:
        private_path.unlink(missing_ok=True)  # half a pair is worse than none
        raise


def _create(path: Path, data: bytes, mode: int) -> None:
    """Create exclusively with the final mode: a private key is never, even
    briefly, readable by others, and a racing writer is not overwritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigError(f"{path}: already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write: {exc.strerror}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The operator's signing key, from an unencrypted PKCS8 PEM file."""
    data = _read(path, "private key")
    if b"PUBLIC KEY-----" in data:
        raise ConfigError(f"{path}: this is a public key; signing needs the private key")
    key = parse_private_pem(data, str(path))
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: a {type(key).__name__}, not an Ed25519 private key")
    return key


def parse_private_pem(data: bytes, where: str) -> PrivateKeyTypes:
    """An unencrypted PEM private key of any type (the signing key, a device key);
    ConfigError naming `where` when it is encrypted or not a key."""
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"{where}: the key is encrypted; use an unencrypted one") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{where}: not a PEM private key") from None


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A trusted verification key, from a SubjectPublicKeyInfo PEM file."""
    data = _read(path, "public key")
    if b"PRIVATE KEY-----" in data:
        raise ConfigError(
            f"{path}: this is a private key; give the public key (and keep the private one "
            "off devices)"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: a {type(key).__name__}, not an Ed25519 public key")
    return key


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint for logs and messages: which key signed, which failed."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The content of a `.sig` file: base64 text survives any web server or CDN
    that might mangle binary or add a charset, and is readable in a terminal."""
    return base64.b64encode(private_key.sign(data)) + b"\n"

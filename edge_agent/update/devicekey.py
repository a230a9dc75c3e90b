"""The device's X25519 key pair: encrypted models are wrapped to its public key.

The private key is read from, in this order:

1. a systemd credential, `$CREDENTIALS_DIRECTORY/edge-agent-device-key`: with
   `LoadCredentialEncrypted=` systemd decrypts it at service start with the board's
   TPM2 and/or its host key (`systemd-creds encrypt`), so the sealed file on the
   card is useless on another machine;
2. `<state_dir>/device-key.pem`: PKCS8 PEM, mode 0600, owned by the service user.

Failures are ConfigErrors naming the file, never its content.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from edge_agent.errors import ConfigError
from edge_agent.update.keys import parse_private_pem

CREDENTIAL = "edge-agent-device-key"
KEY_FILE = "device-key.pem"
PRIVATE_MODE = 0o600


def key_path(
    state_dir: Path,
    credentials_dir: Path | None = None,
    *,
    key_file: Path | None = None,
    credential: str = CREDENTIAL,
) -> Path:
    """Where the private key is read from: the credential when systemd passed one,
    else `key_file` (default `<state_dir>/device-key.pem`)."""
    if credentials_dir is not None and (credentials_dir / credential).is_file():
        return credentials_dir / credential
    return key_file if key_file is not None else state_dir / KEY_FILE


def load_device_key(
    state_dir: Path,
    credentials_dir: Path | None = None,
    *,
    key_file: Path | None = None,
    credential: str = CREDENTIAL,
) -> X25519PrivateKey:
    path = key_path(state_dir, credentials_dir, key_file=key_file, credential=credential)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no device key; create one with `edge-agent keys init`"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the device key: {exc.strerror}") from None
    return parse_private_key(data, str(path))


def parse_private_key(data: bytes, where: str) -> X25519PrivateKey:
    key = parse_private_pem(data, where)
    if not isinstance(key, X25519PrivateKey):
        raise ConfigError(f"{where}: a {type(key).__name__}, not an X25519 device key")
    return key


def create_device_key(path: Path, *, replace: bool = False) -> X25519PrivateKey:
    """A new key written atomically with mode 0600 from the start; an existing key
    is kept unless `replace` (a rotation: the device must be enrolled again)."""
    key = X25519PrivateKey.generate()
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem(key))
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temp, path)
        else:
            os.link(temp, path)  # fails if the key exists: never clobber one silently
    except FileExistsError:
        raise ConfigError(
            f"{path}: a device key already exists (keys init --force replaces it)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the device key: {exc.strerror}") from None
    finally:
        temp.unlink(missing_ok=True)
    _fsync_directory(path.parent)
    return key


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_pem(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: X25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_base64(key: X25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def parse_public_key(data: bytes, where: str) -> X25519PublicKey:
    """A device public key as `keys show` prints it: PEM, or one base64 line of the
    32 raw bytes; lines starting with '#' are comments."""
    if b"PRIVATE KEY" in data:
        raise ConfigError(f"{where}: this is a private key; give the device's public key")
    if b"-----BEGIN PUBLIC KEY-----" in data:
        pem = data[data.index(b"-----BEGIN PUBLIC KEY-----") :]
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigError(f"{where}: not a PEM public key") from None
        if not isinstance(key, X25519PublicKey):
            raise ConfigError(f"{where}: a {type(key).__name__}, not an X25519 device key")
        return key
    lines = [line.strip() for line in data.splitlines()]
    text = [line for line in lines if line and not line.startswith(b"#")]
    try:
        raw = base64.b64decode(text[0], validate=True) if len(text) == 1 else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{where}: not a device public key (PEM, or 32 bytes in base64)")
    return X25519PublicKey.from_public_bytes(raw)

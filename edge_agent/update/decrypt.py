"""The device's side of encrypted models: which keys open a manifest entry, and the
plaintext of a verified download, in memory only.

The update store keeps the ciphertext (what was downloaded and verified against the
signed length and SHA-256); every load decrypts it again into a `bytes` object that
goes straight to `Model.load`, so no plaintext model is ever written to the card.
"""

from __future__ import annotations

import hmac
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from edge_agent.errors import DecryptError, HashError, ModelError, NotRecipientError
from edge_agent.update.envelope import MAGIC, Header, Keyring, key_id, keyring, open_stream
from edge_agent.update.groupkey import group_file_name, open_group_key
from edge_agent.update.manifest import Encryption, FileRef, GroupRef

# A group key file's URL (relative to the manifest) -> its bytes, or None when the
# server has no such file (HTTP 404: this device is not a member of that group).
FetchGroupFile = Callable[[str], bytes | None]


def recipient_groups(
    encryption: Encryption, device_key_id: str, groups: Sequence[GroupRef]
) -> list[GroupRef]:
    """Before downloading anything: [] when the device is a direct recipient, else
    the groups it may belong to; NotRecipientError when it can be neither."""
    if device_key_id in encryption.recipients:
        return []
    candidates = [group for group in groups if group.key_id in encryption.recipients]
    if not candidates:
        raise NotRecipientError(
            f"not a recipient: encrypted for {', '.join(encryption.recipients[:4])}"
            f"{' and more' if len(encryption.recipients) > 4 else ''}; "
            f"this device's key is {device_key_id}"
        )
    return candidates


def group_file_url(group: GroupRef, device_key_id: str) -> str:
    """Where this device's group key file is, relative to the manifest."""
    return group.url + group_file_name(device_key_id)


def device_keyring(
    encryption: Encryption,
    device_key: X25519PrivateKey,
    groups: Sequence[GroupRef],
    fetch_group_file: FetchGroupFile,
) -> dict[str, X25519PrivateKey]:
    """The keys that open `encryption`'s files: the device key, and the group keys it
    unwraps from its group key files. NotRecipientError when none does."""
    ident = key_id(device_key)
    ring = {ident: device_key}
    for group in recipient_groups(encryption, ident, groups):
        data = fetch_group_file(group_file_url(group, ident))
        if data is not None:
            public = X25519PublicKey.from_public_bytes(group.public_key)
            ring[group.key_id] = open_group_key(data, device_key, public)
    if not set(ring) & set(encryption.recipients):
        names = ", ".join(group.name for group in groups if group.key_id in encryption.recipients)
        raise NotRecipientError(
            f"not a recipient: this device ({ident}) is not a member of group(s) {names}"
        )
    return ring


def decrypt_model(ciphertext_path: Path, ref: FileRef, keys: X25519PrivateKey | Keyring) -> bytes:
    """The plaintext of a downloaded file whose length and SHA-256 were checked
    against the signed manifest entry `ref`. Errors are DecryptError subclasses (or a
    HashError) naming the file's URL and the reason."""
    if ref.encryption is None:
        raise DecryptError(f"{ref.url}: the manifest does not say it is encrypted")
    ring = keyring([keys]) if isinstance(keys, X25519PrivateKey) else keys
    try:
        header, plaintext = _open(ciphertext_path, ring)
        _matches(header, ref.encryption)
    except (DecryptError, HashError) as exc:
        raise type(exc)(f"{ref.url}: {exc}") from None
    return plaintext


def decrypt_bytes(data: bytes, ref: FileRef, keys: X25519PrivateKey | Keyring) -> bytes:
    """`decrypt_model` for a small file already in memory (labels)."""
    if ref.encryption is None:
        raise DecryptError(f"{ref.url}: the manifest does not say it is encrypted")
    ring = keyring([keys]) if isinstance(keys, X25519PrivateKey) else keys
    try:
        header, plaintext = open_stream(io.BytesIO(data), len(data), ring)
        _matches(header, ref.encryption)
    except (DecryptError, HashError) as exc:
        raise type(exc)(f"{ref.url}: {exc}") from None
    return plaintext


def load_model_bytes(path: Path, keys: Keyring | None) -> bytes:
    """A model file's bytes for `Model.load`: decrypted in memory when the file is
    encrypted, as they are otherwise. For model loaders (configured models, the
    store's installed ones, rollbacks): every failure is a ModelError."""
    try:
        with path.open("rb") as handle:
            if handle.read(len(MAGIC)) != MAGIC:
                handle.seek(0)
                return handle.read()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror or exc}") from exc
    if not keys:
        raise ModelError(f"{path}: the model is encrypted and no device key is configured")
    try:
        return _open(path, keys)[1]
    except (DecryptError, HashError) as exc:
        raise ModelError(f"{path}: cannot decrypt: {exc}") from exc


def _open(path: Path, keys: Keyring) -> tuple[Header, bytes]:
    try:
        with path.open("rb") as handle:
            return open_stream(handle, os.fstat(handle.fileno()).st_size, keys)
    except OSError as exc:
        raise DecryptError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _matches(header: Header, encryption: Encryption) -> None:
    """The header was already authenticated by the ciphertext's signed SHA-256; a
    mismatch is an operator's tool writing one thing and signing another."""
    problems = []
    if header.cipher != encryption.cipher:
        problems.append(f"cipher {header.cipher}, the manifest says {encryption.cipher}")
    if header.plaintext_length != encryption.plaintext_length:
        problems.append(
            f"length {header.plaintext_length}, the manifest says {encryption.plaintext_length}"
        )
    if not hmac.compare_digest(header.plaintext_sha256, encryption.plaintext_sha256):
        problems.append(
            f"plaintext sha256 {header.plaintext_sha256}, the manifest says "
            f"{encryption.plaintext_sha256}"
        )
    if set(header.wrapped) != set(encryption.recipients):
        problems.append("its recipients are not the manifest's")
    if problems:
        raise HashError(
            "the encrypted file does not match its manifest entry: " + "; ".join(problems)
        )

"""Encrypted models and labels: the file format and its cryptography, as pure functions.

A file is sealed with a fresh 32-byte content key and that key is wrapped, once per
recipient, with HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
ChaCha20-Poly1305) from `cryptography`: a recipient is a device's X25519 key or a
group's. A group's private key is itself wrapped to each member device in a small
group key file, so a fleet release carries one wrapped key per group, not per device.

    MAGIC | u32 header length (big-endian) | header (JSON) | body

The header holds the content cipher, the chunk size, the plaintext's length and
SHA-256, and the recipients (`key_id`, `wrapped_key`). The body is the plaintext in
64 KiB chunks, each sealed on its own (age's STREAM): nonce = 11-byte chunk counter
|| last-chunk flag, so chunks cannot be reordered, dropped or cut short without the
tag failing, and truncation is named as such. Every chunk's associated data is the
SHA-256 of MAGIC and the header: a header cannot be swapped onto another body.

Chunking costs 16 bytes per 64 KiB; it keeps the operator's and the device's reads
streaming, gives "truncated" and "tampered chunk k" their own reasons, and stays far
below one AEAD call's limits (cryptography's one-shot AEADs refuse 2 GiB inputs).
It does not lower the device's peak memory: the runtimes want the whole model as
one `bytes` object.

Key ids are the first 8 bytes (16 hex digits) of SHA-256 over the raw public key.
Group key files are in `edge_agent.update.groupkey`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from edge_agent.errors import (
    DecryptError,
    HashError,
    NotRecipientError,
    TamperedError,
    TruncatedError,
)

MAGIC = b"edge-agent/enc/v1\n"
CIPHERS: dict[str, type[ChaCha20Poly1305 | AESGCM]] = {
    "chacha20-poly1305": ChaCha20Poly1305,
    "aes-256-gcm": AESGCM,
}
DEFAULT_CIPHER = "chacha20-poly1305"  # fast without AES instructions (Raspberry Pi 4)
CHUNK_SIZE = 64 * 1024
TAG_LENGTH = 16
KEY_LENGTH = 32
MAX_HEADER = 4 * 1024 * 1024  # ~40,000 recipients; use groups long before
MAX_RECIPIENTS = 10_000
MAX_PLAINTEXT = 2 * 1024**3
_PREFIX = struct.Struct(">I")
_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)
_WRAPPED_LENGTH = 32 + KEY_LENGTH + TAG_LENGTH  # HPKE enc || sealed key
CONTENT_KEY_INFO = b"edge-agent/enc/v1 content key"
KEY_ID = re.compile(r"[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

Keyring = Mapping[str, X25519PrivateKey]  # key id -> private key


def raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: X25519PublicKey | X25519PrivateKey) -> str:
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return hashlib.sha256(raw_public(public)).hexdigest()[:16]


def keyring(keys: Iterable[X25519PrivateKey]) -> dict[str, X25519PrivateKey]:
    return {key_id(key): key for key in keys}


@dataclass(frozen=True)
class Header:
    cipher: str
    chunk_size: int
    plaintext_length: int
    plaintext_sha256: str
    wrapped: Mapping[str, bytes]  # key id -> HPKE enc || ciphertext of the content key
    aad: bytes  # SHA-256 of MAGIC, length prefix and header bytes
    body_offset: int

    @property
    def chunks(self) -> int:
        return max(1, -(-self.plaintext_length // self.chunk_size))

    @property
    def file_length(self) -> int:
        return self.body_offset + self.plaintext_length + self.chunks * TAG_LENGTH


# -- key wrapping (HPKE) ------------------------------------------------------------


def wrap(secret: bytes, recipient: X25519PublicKey, info: bytes) -> bytes:
    return _SUITE.encrypt(secret, recipient, info=info)


def unwrap(wrapped: bytes, key: X25519PrivateKey, info: bytes, what: str) -> bytes:
    try:
        return _SUITE.decrypt(wrapped, key, info=info)
    except InvalidTag:
        raise TamperedError(
            f"tampered wrapped key: the {what} wrapped for key {key_id(key)} does not authenticate"
        ) from None


# -- sealing (the operator) ---------------------------------------------------------


def seal(
    plaintext: bytes,
    recipients: Iterable[X25519PublicKey],
    *,
    cipher: str = DEFAULT_CIPHER,
    chunk_size: int = CHUNK_SIZE,
) -> bytes:
    """The whole encrypted file for `plaintext`, under a fresh content key."""
    publics = {key_id(key): key for key in recipients}
    if not publics or len(publics) > MAX_RECIPIENTS:
        raise ValueError(f"1 to {MAX_RECIPIENTS} recipients, got {len(publics)}")
    if cipher not in CIPHERS:
        raise ValueError(f"unknown cipher {cipher!r}")
    content_key = secrets.token_bytes(KEY_LENGTH)
    header = {
        "cipher": cipher,
        "chunk_size": chunk_size,
        "plaintext_length": len(plaintext),
        "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(),
        "recipients": [
            {"key_id": ident, "wrapped_key": b64(wrap(content_key, key, CONTENT_KEY_INFO))}
            for ident, key in sorted(publics.items())
        ],
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    prefix = MAGIC + _PREFIX.pack(len(encoded)) + encoded
    aead = CIPHERS[cipher](content_key)
    aad = hashlib.sha256(prefix).digest()
    total = max(1, -(-len(plaintext) // chunk_size))
    view = memoryview(plaintext)
    parts = [prefix]
    for index in range(total):
        piece = view[index * chunk_size : (index + 1) * chunk_size]
        parts.append(aead.encrypt(_nonce(index, index == total - 1), piece, aad))
    return b"".join(parts)


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- opening (the device) -----------------------------------------------------------


def is_encrypted(prefix: bytes) -> bool:
    """Whether a file that starts with `prefix` is one of ours (not a .tflite)."""
    return prefix.startswith(MAGIC)


def read_header(handle: BinaryIO) -> Header:
    """The header at the start of `handle`, strictly parsed; the handle is left at
    the first chunk."""
    start = _read_exact(handle, len(MAGIC) + _PREFIX.size, "the header")
    if not start.startswith(MAGIC):
        raise DecryptError("not an edge-agent encrypted file (no edge-agent/enc/v1 header)")
    (length,) = _PREFIX.unpack_from(start, len(MAGIC))
    if length > MAX_HEADER:
        raise DecryptError(f"header of {length} bytes, more than {MAX_HEADER}")
    encoded = _read_exact(handle, length, "the header")
    return _parse_header(encoded, hashlib.sha256(start + encoded).digest(), len(start) + length)


def open_stream(handle: BinaryIO, file_length: int, keys: Keyring) -> tuple[Header, bytes]:
    """The plaintext of an encrypted file of `file_length` bytes, read chunk by chunk
    into memory, and its header. Nothing is written anywhere."""
    header = read_header(handle)
    if file_length < header.file_length:
        raise TruncatedError(
            f"truncated: {file_length} bytes, the header says {header.file_length}"
        )
    if file_length > header.file_length:
        raise TamperedError(
            f"{file_length} bytes, the header says {header.file_length}: data was appended"
        )
    ident, key = _recipient_key(header, keys)
    content_key = unwrap(header.wrapped[ident], key, CONTENT_KEY_INFO, "content key")
    if len(content_key) != KEY_LENGTH:
        raise TamperedError(f"the content key is {len(content_key)} bytes, not {KEY_LENGTH}")
    aead = CIPHERS[header.cipher](content_key)
    digest = hashlib.sha256()
    pieces = []
    for index in range(header.chunks):
        last = index == header.chunks - 1
        size = header.plaintext_length - index * header.chunk_size if last else header.chunk_size
        sealed = _read_exact(handle, size + TAG_LENGTH, f"chunk {index}")
        try:
            piece = aead.decrypt(_nonce(index, last), sealed, header.aad)
        except InvalidTag:
            raise TamperedError(
                f"authentication failed (tampered ciphertext) in chunk {index + 1} of "
                f"{header.chunks}"
            ) from None
        digest.update(piece)
        pieces.append(piece)
    actual = digest.hexdigest()
    if not hmac.compare_digest(actual, header.plaintext_sha256):
        raise HashError(f"decrypted sha256 {actual}, the header says {header.plaintext_sha256}")
    return header, b"".join(pieces)


def _recipient_key(header: Header, keys: Keyring) -> tuple[str, X25519PrivateKey]:
    for ident in header.wrapped:
        if ident in keys:
            return ident, keys[ident]
    raise NotRecipientError(
        f"not a recipient: encrypted for key(s) {_ids(header.wrapped)}; "
        f"this device holds {_ids(keys) or 'no key'}"
    )


def _ids(idents: Iterable[str], limit: int = 4) -> str:
    listed = list(idents)
    more = f" and {len(listed) - limit} more" if len(listed) > limit else ""
    return ", ".join(listed[:limit]) + more


def _read_exact(handle: BinaryIO, size: int, what: str) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise TruncatedError(f"truncated: the file ends inside {what}")
    return data


# -- strict parsing -----------------------------------------------------------------


def _parse_header(encoded: bytes, aad: bytes, body_offset: int) -> Header:
    header = json_object(parse_json(encoded, "header"), "header")
    fields = {"cipher", "chunk_size", "plaintext_length", "plaintext_sha256", "recipients"}
    if set(header) != fields:
        raise DecryptError(f"header: expected the fields {', '.join(sorted(fields))}")
    cipher = header["cipher"]
    if cipher not in CIPHERS:
        raise DecryptError(f"header: unsupported cipher {cipher!r} ({', '.join(CIPHERS)})")
    chunk_size = _int(header["chunk_size"], "chunk_size", 1024, 16 * 1024 * 1024)
    length = _int(header["plaintext_length"], "plaintext_length", 0, MAX_PLAINTEXT)
    sha = header["plaintext_sha256"]
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise DecryptError("header: plaintext_sha256 is not 64 lowercase hex digits")
    return Header(
        str(cipher), chunk_size, length, sha, _recipients(header["recipients"]), aad, body_offset
    )


def _recipients(value: object) -> dict[str, bytes]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_RECIPIENTS:
        raise DecryptError(f"header: recipients must be a list of 1 to {MAX_RECIPIENTS}")
    wrapped: dict[str, bytes] = {}
    for index, item in enumerate(value):
        entry = json_object(item, f"header: recipients[{index}]")
        ident = entry.get("key_id")
        if set(entry) != {"key_id", "wrapped_key"} or not isinstance(ident, str):
            raise DecryptError(f"header: recipients[{index}]: expected key_id and wrapped_key")
        if not KEY_ID.fullmatch(ident) or ident in wrapped:
            raise DecryptError(f"header: recipients[{index}].key_id: bad or repeated {ident!r}")
        wrapped[ident] = parse_wrapped(entry["wrapped_key"], f"header: recipients[{index}]")
    return wrapped


def parse_wrapped(value: object, where: str) -> bytes:
    try:
        data = base64.b64decode(str(value), validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        data = b""
    if len(data) != _WRAPPED_LENGTH:
        raise TamperedError(f"tampered wrapped key: {where} is not {_WRAPPED_LENGTH} base64 bytes")
    return data


def parse_json(data: bytes, what: str) -> object:
    def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
        if len(dict(pairs)) != len(pairs):
            raise ValueError("duplicate key")
        return dict(pairs)

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=unique)
    except (ValueError, RecursionError) as exc:
        raise DecryptError(f"{what}: not valid JSON: {exc}") from None


def json_object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise DecryptError(f"{where}: expected a JSON object")
    return value


def _int(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DecryptError(f"header: {where} must be an integer in {low}..{high}")
    return value

"""Signed model update manifests: verify the bytes, then parse them into values.

Pure functions over bytes, in the manner of python-tuf's ngclient: no disk, no
network, no clock (`now` is a parameter), so every trust rule is unit-tested
without mocks and the device and the operator CLI share one implementation.
`verify` fixes the order: the Ed25519 signature over the exact bytes
first (an attacker never reaches the JSON parser), then strict parsing, then
the version and expiry checks against what the device trusts.

The manifest, spec_version 1:

    {"spec_version": 1, "version": 7,
     "issued": "2026-11-28T09:00:00Z", "expires": "2026-12-28T09:00:00Z",
     "models": [{"name": "shapes", "version": "3", "url": "shapes-3.tflite",
                 "length": 81128, "sha256": "<64 hex>",
                 "labels": {"url": "...", "length": N, "sha256": "..."},
                 "golden": {"input": {"url": ..., "length": ..., "sha256": ...},
                            "top1": "circle"}}],
     "rollout": {"percent": 50, "salt": "..."}}

`labels`, `golden`, `targets` (see `edge_agent.update.targeting`) and `rollout`
are optional (absent or null). Rules, each
violation a `ManifestError` naming the field (`models[0].url: ...`):

- UTF-8 JSON; duplicate keys, NaN/Infinity and unknown fields are rejected (a
  new field means a new spec_version, so no device silently ignores it).
- `version`: integer >= 1 (`true` is not an integer); `spec_version` must be 1.
- `issued`, `expires`: ISO 8601 with `Z` or an offset; `expires` after `issued`.
- model `name` and `version`: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` without
  `..`; names unique (case-insensitively: they become file names).
- `url`: relative to the manifest (not `/abs`, no `..` segment, even
  percent-encoded, no backslash) or absolute http(s).
- `length`: integer 1..2 GiB; `sha256`: 64 lowercase hex digits.
- `rollout.percent`: number 0..100; `rollout.salt`, `golden.top1`: non-empty strings.

Encrypted models (see `edge_agent.update.envelope`) add, to a model and its labels,

    "encryption": {"cipher": "chacha20-poly1305", "recipients": ["<key id>", ...],
                   "plaintext_length": N, "plaintext_sha256": "<64 hex>"}

where `url`, `length` and `sha256` then describe the ciphertext (what is downloaded
and kept), and, at the top level, the groups whose key ids appear as recipients:

    "groups": [{"name": "porch", "key_id": "<16 hex>", "public_key": "<base64>",
                "url": "groups/porch/<key id>/"}]

A member device finds its group key file at `url` + `<its own key id>.json`. Both
fields are optional; an agent that predates them rejects them as unknown fields.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import unquote, urljoin, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.errors import (
    ExpiredError,
    HashError,
    LengthError,
    ManifestError,
    RollbackError,
    SignatureError,
)
from edge_agent.update.keys import key_id
from edge_agent.update.targeting import Targets, parse_targets

SPEC_VERSION = 1
MAX_FILE_LENGTH = 2 * 1024**3
MAX_MANIFEST_LENGTH = 1024 * 1024  # a fetcher's read bound; thousands of models fit
MAX_VERSION = 2**63 - 1
SIGNATURE_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SCHEMES = ("http", "https")
_MAX_TEXT = 256
_MAX_URL = 2048
_FILE_FIELDS = ("url", "length", "sha256")
_CIPHERS = ("chacha20-poly1305", "aes-256-gcm")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_MAX_RECIPIENTS = 10_000
_ENCRYPTION_FIELDS = ("cipher", "recipients", "plaintext_length", "plaintext_sha256")


@dataclass(frozen=True)
class Encryption:
    """How a file was encrypted: the file's own length and sha256 are the ciphertext's."""

    cipher: str
    recipients: tuple[str, ...]  # key ids: devices' or groups'
    plaintext_length: int
    plaintext_sha256: str


@dataclass(frozen=True)
class GroupRef:
    """A recipient group: its public key, and where its members' key files are."""

    name: str
    key_id: str
    public_key: bytes  # raw X25519, 32 bytes
    url: str  # a directory, relative to the manifest: url + "<device key id>.json"


@dataclass(frozen=True)
class FileRef:
    url: str  # possibly relative to the manifest's URL: see resolve_url
    length: int
    sha256: str
    encryption: Encryption | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    version: str
    file: FileRef
    labels: FileRef | None
    golden_input: FileRef | None
    golden_top1: str | None
    targets: Targets | None = None  # which devices take it (targeting.py); None: all

    def refs(self) -> Iterator[tuple[str, FileRef]]:
        """Every file this entry points at, with its field name, to fetch or check."""
        yield "file", self.file
        if self.labels is not None:
            yield "labels", self.labels
        if self.golden_input is not None:
            yield "golden.input", self.golden_input


@dataclass(frozen=True)
class Rollout:
    percent: float
    salt: str


@dataclass(frozen=True)
class Manifest:
    spec_version: int
    version: int
    issued: datetime  # UTC
    expires: datetime  # UTC
    models: tuple[ModelEntry, ...]
    rollout: Rollout | None
    raw_sha256: str  # of the exact signed bytes, to record what was trusted
    groups: tuple[GroupRef, ...] = ()


@dataclass(frozen=True)
class Verified:
    """A manifest whose signature, shape and freshness checked out."""

    manifest: Manifest
    newer: bool  # False: the very version already trusted (nothing to do)


def verify(
    data: bytes,
    signature_file: bytes,
    keys: Sequence[Ed25519PublicKey],
    *,
    trusted_version: int | None,
    now: datetime,
) -> Verified:
    """Size cap, signature, then parsing, then freshness: what a device checks."""
    if len(data) > MAX_MANIFEST_LENGTH:
        raise ManifestError(f"manifest: {len(data)} bytes, more than {MAX_MANIFEST_LENGTH}")
    verify_signature(data, signature_file, keys)
    manifest = parse_manifest(data)
    newer = check_freshness(manifest, trusted_version=trusted_version, now=now)
    return Verified(manifest, newer)


def verify_manifest(
    data: bytes,
    signature_file: bytes,
    keys: Sequence[Ed25519PublicKey],
    *,
    trusted_version: int | None,
    now: datetime,
) -> Manifest | None:
    """`verify`, with None when the manifest is the one already trusted."""
    verified = verify(data, signature_file, keys, trusted_version=trusted_version, now=now)
    return verified.manifest if verified.newer else None


def verify_signature(data: bytes, signature_file: bytes, keys: Sequence[Ed25519PublicKey]) -> None:
    """Accept if any trusted key verifies: during a rotation devices trust the
    old and the new key, and either may sign."""
    if not keys:
        raise SignatureError("signature: no trusted keys configured")
    signature = _decode_signature(signature_file)
    for key in keys:
        try:
            key.verify(signature, data)
        except InvalidSignature:
            continue
        return
    ids = ", ".join(key_id(key) for key in keys)
    raise SignatureError(f"signature does not verify with any trusted key ({ids})")


def _decode_signature(signature_file: bytes) -> bytes:
    text = signature_file.strip()
    if not text:
        raise SignatureError("signature file is empty: the manifest is unsigned")
    try:
        signature = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature file is not base64 text") from None
    if len(signature) != SIGNATURE_LENGTH:
        raise SignatureError(f"signature is {len(signature)} bytes, Ed25519 needs 64")
    return signature


def parse_manifest(data: bytes) -> Manifest:
    """Strictly parse bytes whose signature has been verified: signed is not
    the same as sane, and names and URLs end up in file paths and requests."""
    document = _object(_load_json(data), "manifest")
    spec = _int(_require(document, "spec_version", ""), "spec_version", 0, MAX_VERSION)
    if spec != SPEC_VERSION:
        raise ManifestError(f"spec_version: {spec} is not supported (this agent reads 1)")
    required = ("spec_version", "version", "issued", "expires", "models")
    _check_fields(document, "", required, ("rollout", "groups"))
    issued = _datetime(document["issued"], "issued")
    expires = _datetime(document["expires"], "expires")
    if expires <= issued:
        raise ManifestError("expires: must be later than issued")
    return Manifest(
        spec_version=spec,
        version=_int(document["version"], "version", 1, MAX_VERSION),
        issued=issued,
        expires=expires,
        models=_models(document["models"]),
        rollout=_rollout(document.get("rollout")),
        raw_sha256=hashlib.sha256(data).hexdigest(),
        groups=_groups(document.get("groups")),
    )


def check_freshness(manifest: Manifest, *, trusted_version: int | None, now: datetime) -> bool:
    """True when the manifest supersedes the trusted one, False when it is the
    same version. A lower version is a replay or a downgrade; an expired one
    may be an attacker freezing the device on old models. `issued` in the
    future is accepted: boards without a clock battery boot with a wrong time."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if trusted_version is not None and manifest.version < trusted_version:
        raise RollbackError(
            f"version: {manifest.version} is lower than the trusted version {trusted_version}"
        )
    if manifest.expires <= now:
        raise ExpiredError(f"expires: the manifest expired at {format_time(manifest.expires)}")
    return trusted_version is None or manifest.version > trusted_version


class FileCheck:
    """`check_file` for bytes that arrive in chunks (a model is never held whole):
    `update` with each chunk, then `done`."""

    def __init__(self, ref: FileRef, where: str | None = None) -> None:
        self._ref = ref
        self._where = where or ref.url
        self._digest = hashlib.sha256()
        self.length = 0

    def update(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.length += len(chunk)

    def done(self) -> None:
        """The bytes are the ones the signed manifest describes, or an IntegrityError."""
        ref = self._ref
        if self.length != ref.length:
            raise LengthError(f"{self._where}: {self.length} bytes, the manifest says {ref.length}")
        digest = self._digest.hexdigest()
        if not hmac.compare_digest(digest, ref.sha256):
            raise HashError(f"{self._where}: sha256 {digest}, the manifest says {ref.sha256}")


def model_sha256(ref: FileRef) -> str:
    """What a file *is*: the plaintext's SHA-256 for an encrypted one (the same model
    encrypted again is the same model), else the file's own."""
    return ref.sha256 if ref.encryption is None else ref.encryption.plaintext_sha256


def check_file(data: bytes, ref: FileRef) -> None:
    """The downloaded bytes are the ones the signed manifest describes."""
    check = FileCheck(ref)
    check.update(data)
    check.done()


def in_rollout(device_id: str, rollout: Rollout | None) -> bool:
    """A staged rollout: each device has a fixed bucket per salt, so raising the
    percent only adds devices, and a new salt reshuffles the fleet."""
    if rollout is None:
        return True
    digest = hashlib.sha256(f"{rollout.salt}:{device_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 10000 / 100
    return bucket < rollout.percent


def resolve_url(base_url: str, ref_url: str) -> str:
    """A file's URL from the manifest's: relative references resolve against it."""
    resolved = urljoin(base_url, ref_url)
    try:
        parts = urlsplit(resolved)
        ok = parts.scheme.lower() in _SCHEMES and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise ManifestError(f"url: {ref_url!r} resolves to {resolved!r}, not an http(s) URL")
    return resolved


def format_time(moment: datetime) -> str:
    """The manifest's own time format, for messages and for writing manifests."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- parsing helpers: each raises ManifestError naming the field -------------------


def _load_json(data: bytes) -> object:
    try:
        return json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ManifestError(f"manifest: not valid JSON: {exc}") from None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in an object")
    return result


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(value: object) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer"}
    return names.get(type(value), "a number")


def _object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: expected an object, got {_kind(value)}")
    return value


def _require(obj: dict[str, object], key: str, where: str) -> object:
    if key not in obj:
        raise ManifestError(f"{_path(where, key)}: missing")
    return obj[key]


def _check_fields(
    obj: dict[str, object], where: str, required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    for key in obj:
        if key not in required and key not in optional:
            raise ManifestError(f"{_path(where, key)}: unknown field")
    for key in required:
        _require(obj, key, where)


def _int(value: object, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"{where}: expected an integer, got {_kind(value)}")
    if not low <= value <= high:
        raise ManifestError(f"{where}: {value} is not in {low}..{high}")
    return value


def _text(value: object, where: str, limit: int = _MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"{where}: expected a string, got {_kind(value)}")
    if not 0 < len(value) <= limit:
        raise ManifestError(f"{where}: must be 1 to {limit} characters")
    return value


def _name(value: object, where: str) -> str:
    name = _text(value, where)
    if not _NAME.fullmatch(name) or ".." in name:
        raise ManifestError(
            f"{where}: {name!r} is not a safe name (letters, digits, '.', '_', '-'; "
            "at most 64; no '..')"
        )
    return name


def _datetime(value: object, where: str) -> datetime:
    text = _text(value, where, 64)
    iso = text[:-1] + "+00:00" if text[-1] in "Zz" else text  # Python 3.10 lacks "Z"
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ManifestError(f"{where}: {text!r} is not an ISO 8601 date-time") from None
    if moment.utcoffset() is None:
        raise ManifestError(f"{where}: {text!r} has no timezone (add Z or an offset)")
    return moment.astimezone(timezone.utc)


def _url(value: object, where: str) -> str:
    url = _text(value, where, _MAX_URL)
    problem = _url_problem(url)
    if problem:
        raise ManifestError(f"{where}: {url!r}: {problem}")
    return url


def _url_problem(url: str) -> str | None:
    """Why a URL could reach outside the update server's files, or None."""
    if any(ord(char) <= 0x20 or ord(char) == 0x7F or char == "\\" for char in url):
        return "whitespace, control character or backslash"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a URL"
    if parts.scheme and (parts.scheme.lower() not in _SCHEMES or not parts.netloc):
        return "only http(s) URLs or paths relative to the manifest"
    if not parts.scheme and (url.startswith("/") or not parts.path):
        return "not a path relative to the manifest (no leading '/')"
    path = parts.path
    for _ in range(4):  # as written, then decoded up to three times
        if ".." in path.split("/") or "\\" in path:
            return "'..' path segment or backslash (possibly percent-encoded)"
        path = unquote(path)
    return None


def _file_ref(obj: dict[str, object], where: str) -> FileRef:
    encryption = obj.get("encryption")
    return FileRef(
        url=_url(obj["url"], _path(where, "url")),
        length=_int(obj["length"], _path(where, "length"), 1, MAX_FILE_LENGTH),
        sha256=_sha256(obj["sha256"], _path(where, "sha256")),
        encryption=None if encryption is None else _encryption(encryption, where),
    )


def _sha256(value: object, where: str) -> str:
    sha256 = _text(value, where, 64)
    if not _SHA256.fullmatch(sha256):
        raise ManifestError(f"{where}: expected 64 lowercase hex digits")
    return sha256


def _file_object(value: object, where: str, *, encrypted: bool = False) -> FileRef:
    obj = _object(value, where)
    _check_fields(obj, where, _FILE_FIELDS, ("encryption",) if encrypted else ())
    return _file_ref(obj, where)


def _encryption(value: object, where: str) -> Encryption:
    where = _path(where, "encryption")
    obj = _object(value, where)
    _check_fields(obj, where, _ENCRYPTION_FIELDS)
    cipher = _text(obj["cipher"], _path(where, "cipher"))
    if cipher not in _CIPHERS:
        raise ManifestError(f"{where}.cipher: {cipher!r} is not one of {', '.join(_CIPHERS)}")
    recipients = obj["recipients"]
    if not isinstance(recipients, list) or not 0 < len(recipients) <= _MAX_RECIPIENTS:
        raise ManifestError(f"{where}.recipients: expected a list of 1 to {_MAX_RECIPIENTS} ids")
    ids = tuple(_key_id(item, f"{where}.recipients[{i}]") for i, item in enumerate(recipients))
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{where}.recipients: a key id is listed twice")
    return Encryption(
        cipher=cipher,
        recipients=ids,
        plaintext_length=_int(
            obj["plaintext_length"], f"{where}.plaintext_length", 1, MAX_FILE_LENGTH
        ),
        plaintext_sha256=_sha256(obj["plaintext_sha256"], f"{where}.plaintext_sha256"),
    )


def _key_id(value: object, where: str) -> str:
    ident = _text(value, where, 16)
    if not _KEY_ID.fullmatch(ident):
        raise ManifestError(f"{where}: expected a key id of 16 lowercase hex digits")
    return ident


def _groups(value: object) -> tuple[GroupRef, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ManifestError(f"groups: expected a list, got {_kind(value)}")
    groups = tuple(_group(item, f"groups[{index}]") for index, item in enumerate(value))
    for attribute in ("name", "key_id"):
        values = [getattr(group, attribute) for group in groups]
        if len(set(values)) != len(values):
            raise ManifestError(f"groups: a {attribute} is listed twice")
    return groups


def _group(value: object, where: str) -> GroupRef:
    obj = _object(value, where)
    _check_fields(obj, where, ("name", "key_id", "public_key", "url"))
    try:
        public_key = base64.b64decode(
            _text(obj["public_key"], f"{where}.public_key"), validate=True
        )
    except (binascii.Error, ValueError):
        public_key = b""
    if len(public_key) != 32:
        raise ManifestError(f"{where}.public_key: expected 32 bytes in base64 (an X25519 key)")
    ident = _key_id(obj["key_id"], f"{where}.key_id")
    if ident != hashlib.sha256(public_key).hexdigest()[:16]:
        raise ManifestError(f"{where}.key_id: {ident} is not the id of its public_key")
    url = _url(obj["url"], f"{where}.url")
    if not url.endswith("/"):
        raise ManifestError(f"{where}.url: a directory URL ends with '/'")
    return GroupRef(_name(obj["name"], f"{where}.name"), ident, public_key, url)


def _models(value: object) -> tuple[ModelEntry, ...]:
    if not isinstance(value, list):
        raise ManifestError(f"models: expected a list, got {_kind(value)}")
    entries = tuple(_model(item, f"models[{index}]") for index, item in enumerate(value))
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if entry.name.casefold() in seen:
            raise ManifestError(f"models[{index}].name: duplicate model name {entry.name!r}")
        seen.add(entry.name.casefold())
    return entries


def _model(value: object, where: str) -> ModelEntry:
    obj = _object(value, where)
    optional = ("labels", "golden", "encryption", "targets")
    _check_fields(obj, where, ("name", "version", *_FILE_FIELDS), optional)
    labels = obj.get("labels")
    golden_input, golden_top1 = _golden(obj.get("golden"), _path(where, "golden"))
    return ModelEntry(
        name=_name(obj["name"], _path(where, "name")),
        version=_name(obj["version"], _path(where, "version")),
        file=_file_ref(obj, where),
        labels=None
        if labels is None
        else _file_object(labels, _path(where, "labels"), encrypted=True),
        golden_input=golden_input,
        golden_top1=golden_top1,
        targets=parse_targets(obj.get("targets"), _path(where, "targets")),
    )


def _golden(value: object, where: str) -> tuple[FileRef | None, str | None]:
    if value is None:
        return None, None
    obj = _object(value, where)
    _check_fields(obj, where, ("input", "top1"))
    return _file_object(obj["input"], _path(where, "input")), _text(obj["top1"], f"{where}.top1")


def _rollout(value: object) -> Rollout | None:
    if value is None:
        return None
    obj = _object(value, "rollout")
    _check_fields(obj, "rollout", ("percent", "salt"))
    percent = obj["percent"]
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise ManifestError(f"rollout.percent: expected a number, got {_kind(percent)}")
    if not 0 <= percent <= 100:  # also rejects 1e999, which JSON reads as infinity
        raise ManifestError(f"rollout.percent: {percent} is not in 0..100")
    return Rollout(percent=float(percent), salt=_text(obj["salt"], "rollout.salt"))

"""The update trust rules as pure functions: real Ed25519 keys, bytes in, values
or a precise error out. No disk (except the key-file tests), no network, no clock."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import stat
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.errors import (
    ConfigError,
    ExpiredError,
    HashError,
    LengthError,
    ManifestError,
    RollbackError,
    SignatureError,
)
from edge_agent.update import keys
from edge_agent.update.manifest import (
    MAX_FILE_LENGTH,
    MAX_MANIFEST_LENGTH,
    FileRef,
    Rollout,
    check_file,
    check_freshness,
    in_rollout,
    parse_manifest,
    resolve_url,
    verify_manifest,
    verify_signature,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
ISSUED = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
EXPIRES = datetime(2026, 12, 28, 9, 0, tzinfo=timezone.utc)
MODEL_BYTES = b"TFL3" + bytes(range(256)) * 4
LABEL_BYTES = b"circle\nsquare\ntriangle\n"

Doc = dict[str, Any]


def ref(data: bytes, url: str) -> Doc:
    return {"url": url, "length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def model(**changes: Any) -> Doc:
    entry = {"name": "shapes", "version": "3", **ref(MODEL_BYTES, "shapes-3.tflite")}
    return {**entry, **changes}


def document(**changes: Any) -> Doc:
    doc = {
        "spec_version": 1,
        "version": 7,
        "issued": "2026-11-28T09:00:00Z",
        "expires": "2026-12-28T09:00:00Z",
        "models": [model()],
    }
    return {**doc, **changes}


def encode(doc: Doc) -> bytes:
    return json.dumps(doc, indent=2).encode()


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def other_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def verify(
    data: bytes, signer: Ed25519PrivateKey, trusted: int | None = None, now: datetime = NOW
) -> Any:
    return verify_manifest(
        data, keys.sign(signer, data), [signer.public_key()], trusted_version=trusted, now=now
    )


# -- a good manifest --------------------------------------------------------------


def test_good_manifest_verifies_into_values(key: Ed25519PrivateKey) -> None:
    data = encode(document())
    manifest = verify(data, key)
    assert manifest.spec_version == 1
    assert manifest.version == 7
    assert (manifest.issued, manifest.expires) == (ISSUED, EXPIRES)
    assert manifest.raw_sha256 == hashlib.sha256(data).hexdigest()
    assert manifest.rollout is None
    (entry,) = manifest.models
    assert (entry.name, entry.version, entry.labels, entry.golden_input) == (
        "shapes",
        "3",
        None,
        None,
    )
    assert entry.file == FileRef(
        "shapes-3.tflite", len(MODEL_BYTES), ref(MODEL_BYTES, "")["sha256"]
    )


def test_optional_labels_golden_and_rollout_are_parsed(key: Ed25519PrivateKey) -> None:
    entry = model(
        labels=ref(LABEL_BYTES, "shapes.labels.txt"),
        golden={"input": ref(b"png", "golden/circle.png"), "top1": "circle"},
    )
    rollout = {"percent": 12.5, "salt": "2026-11"}
    manifest = verify(encode(document(models=[entry], rollout=rollout)), key)
    (parsed,) = manifest.models
    assert parsed.labels == FileRef(**ref(LABEL_BYTES, "shapes.labels.txt"))
    assert parsed.golden_input == FileRef(**ref(b"png", "golden/circle.png"))
    assert parsed.golden_top1 == "circle"
    assert [field for field, _ in parsed.refs()] == ["file", "labels", "golden.input"]
    assert manifest.rollout == Rollout(12.5, "2026-11")


def test_offsets_are_normalised_to_utc(key: Ed25519PrivateKey) -> None:
    data = encode(document(issued="2026-11-28T10:00:00+01:00"))
    assert verify(data, key).issued == ISSUED


# -- signatures -------------------------------------------------------------------


@pytest.mark.parametrize("signature", [b"", b"  \n", b"not base64!!", b"AAAA\n", b"\xff\xfe"])
def test_missing_empty_or_garbage_signature_is_rejected(
    key: Ed25519PrivateKey, signature: bytes
) -> None:
    with pytest.raises(SignatureError, match="signature"):
        verify_signature(encode(document()), signature, [key.public_key()])


def test_signature_tolerates_surrounding_whitespace(key: Ed25519PrivateKey) -> None:
    data = encode(document())
    signature = b"\r\n  " + keys.sign(key, data).strip() + b"  \r\n\n"
    verify_signature(data, signature, [key.public_key()])


def test_wrong_key_is_rejected(key: Ed25519PrivateKey, other_key: Ed25519PrivateKey) -> None:
    data = encode(document())
    with pytest.raises(SignatureError, match=keys.key_id(other_key.public_key())):
        verify_signature(data, keys.sign(key, data), [other_key.public_key()])


def test_no_trusted_keys_rejects_everything(key: Ed25519PrivateKey) -> None:
    data = encode(document())
    with pytest.raises(SignatureError):
        verify_signature(data, keys.sign(key, data), [])


@pytest.mark.parametrize("offset", [0, 1, 100, -2])
def test_one_byte_changed_in_the_manifest_after_signing(
    key: Ed25519PrivateKey, offset: int
) -> None:
    data = encode(document())
    signature = keys.sign(key, data)
    tampered = bytearray(data)
    tampered[offset] ^= 0x01
    with pytest.raises(SignatureError):
        verify_manifest(
            bytes(tampered), signature, [key.public_key()], trusted_version=None, now=NOW
        )


@pytest.mark.parametrize("offset", [0, 31, 32, 63])
def test_one_byte_changed_in_the_signature(key: Ed25519PrivateKey, offset: int) -> None:
    data = encode(document())
    raw = bytearray(base64.b64decode(keys.sign(key, data)))
    raw[offset] ^= 0x80
    with pytest.raises(SignatureError):
        verify_signature(data, base64.b64encode(bytes(raw)), [key.public_key()])


def test_signature_is_checked_before_json_is_parsed(key: Ed25519PrivateKey) -> None:
    with pytest.raises(SignatureError):
        verify_manifest(b"{not json", b"", [key.public_key()], trusted_version=None, now=NOW)


def test_rotation_accepts_either_configured_key_and_rejects_a_rotated_out_one(
    key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    old, new = key, other_key
    data = encode(document())
    during = [old.public_key(), new.public_key()]
    for signer in (old, new):
        verify_signature(data, keys.sign(signer, data), during)
    after = [new.public_key()]
    verify_signature(data, keys.sign(new, data), after)
    with pytest.raises(SignatureError):
        verify_signature(data, keys.sign(old, data), after)


# -- freshness --------------------------------------------------------------------


def test_lower_version_is_a_rollback(key: Ed25519PrivateKey) -> None:
    with pytest.raises(RollbackError, match=r"version: 7 .* 8"):
        verify(encode(document()), key, trusted=8)


def test_equal_version_means_nothing_to_do(key: Ed25519PrivateKey) -> None:
    assert verify(encode(document()), key, trusted=7) is None


@pytest.mark.parametrize("trusted", [None, 0, 6])
def test_newer_version_is_returned(key: Ed25519PrivateKey, trusted: int | None) -> None:
    assert verify(encode(document()), key, trusted=trusted).version == 7


@pytest.mark.parametrize("now", [EXPIRES, EXPIRES + timedelta(seconds=1)])
def test_expired_manifest_is_rejected(key: Ed25519PrivateKey, now: datetime) -> None:
    with pytest.raises(ExpiredError, match="expires"):
        verify(encode(document()), key, now=now)


def test_expiry_is_checked_even_for_the_trusted_version() -> None:
    manifest = parse_manifest(encode(document()))
    with pytest.raises(ExpiredError):
        check_freshness(manifest, trusted_version=7, now=EXPIRES)


def test_now_must_be_timezone_aware() -> None:
    naive = NOW.replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone"):
        check_freshness(parse_manifest(encode(document())), trusted_version=None, now=naive)


def test_oversized_manifest_is_rejected_before_anything_else(key: Ed25519PrivateKey) -> None:
    data = b" " * (MAX_MANIFEST_LENGTH + 1)
    with pytest.raises(ManifestError, match="bytes"):
        verify(data, key)


# -- malformed (but signed) manifests -----------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{not json", "JSON"),
        (b"", "JSON"),
        (b"\xff\xfe{}", "JSON"),
        (b'{"version": 1, "version": 2}', "duplicate"),
        (b'{"spec_version": NaN}', "JSON"),
        (b"[1, 2]", "manifest: expected an object"),
        (b"[" * 100_000, "JSON"),
    ],
)
def test_bad_json_that_is_signed_is_a_manifest_error(
    key: Ed25519PrivateKey, data: bytes, match: str
) -> None:
    with pytest.raises(ManifestError, match=match):
        verify(data, key)


@pytest.mark.parametrize("spec", [2, 0, "1", True, None])
def test_unknown_spec_version_is_rejected(key: Ed25519PrivateKey, spec: object) -> None:
    with pytest.raises(ManifestError, match="spec_version"):
        verify(encode(document(spec_version=spec)), key)


def test_missing_spec_version_is_rejected(key: Ed25519PrivateKey) -> None:
    doc = document()
    del doc["spec_version"]
    with pytest.raises(ManifestError, match="spec_version: missing"):
        verify(encode(doc), key)


def without(field: str) -> Callable[[Doc], None]:
    return lambda doc: doc.pop(field)


def set_model(**changes: Any) -> Callable[[Doc], None]:
    return lambda doc: doc["models"][0].update(changes)


def set_doc(**changes: Any) -> Callable[[Doc], None]:
    return lambda doc: doc.update(changes)


BAD_FIELDS: list[tuple[Callable[[Doc], None], str]] = [
    (without("version"), "version: missing"),
    (without("models"), "models: missing"),
    (without("expires"), "expires: missing"),
    (set_doc(version=True), "version: expected an integer, got true"),
    (set_doc(version="7"), "version: expected an integer"),
    (set_doc(version=7.0), "version: expected an integer"),
    (set_doc(version=0), "version: 0 is not in"),
    (set_doc(issued="yesterday"), "issued: .* not an ISO 8601"),
    (set_doc(issued="2026-11-28T09:00:00"), "issued: .* no timezone"),
    (set_doc(expires=1798448400), "expires: expected a string"),
    (set_doc(expires="2026-11-28T08:00:00Z"), "expires: must be later than issued"),
    (set_doc(models={"name": "x"}), "models: expected a list"),
    (set_doc(extra=1), "extra: unknown field"),
    (set_doc(rollout={"percent": 101, "salt": "s"}), r"rollout.percent: 101 is not in 0\.\.100"),
    (set_doc(rollout={"percent": True, "salt": "s"}), "rollout.percent: expected a number"),
    (set_doc(rollout={"percent": 5}), "rollout.salt: missing"),
    (set_doc(rollout={"percent": 5, "salt": ""}), "rollout.salt: must be 1 to"),
    (set_doc(models=["shapes"]), r"models\[0\]: expected an object"),
    (set_model(length=True), r"models\[0\].length: expected an integer, got true"),
    (set_model(length=0), r"models\[0\].length: 0 is not in"),
    (set_model(length=MAX_FILE_LENGTH + 1), r"models\[0\].length"),
    (set_model(length="81128"), r"models\[0\].length: expected an integer"),
    (set_model(sha256="AB" * 32), r"models\[0\].sha256: expected 64 lowercase hex"),
    (set_model(sha256="ab" * 31), r"models\[0\].sha256"),
    (set_model(sha256="ab" * 32 + "\n"), r"models\[0\].sha256"),
    (set_model(name=""), r"models\[0\].name"),
    (set_model(name="x" * 65), r"models\[0\].name"),
    (set_model(name="shapes\n"), r"models\[0\].name"),
    (set_model(name="a..b"), r"models\[0\].name"),
    (set_model(version=3), r"models\[0\].version: expected a string"),
    (set_model(url=None), r"models\[0\].url: expected a string"),
    (set_model(extra=1), r"models\[0\].extra: unknown field"),
    (set_model(labels="x.txt"), r"models\[0\].labels: expected an object"),
    (set_model(labels={"url": "x.txt", "length": 3}), r"models\[0\].labels.sha256: missing"),
    (set_model(golden={"input": ref(b"x", "x.png")}), r"models\[0\].golden.top1: missing"),
    (
        set_doc(models=[model(), model(url="other.tflite")]),
        r"models\[1\].name: duplicate model name",
    ),
    (set_doc(models=[model(), model(name="SHAPES")]), r"models\[1\].name: duplicate"),
]


@pytest.mark.parametrize(("mutate", "match"), BAD_FIELDS)
def test_missing_or_wrong_typed_fields_are_named(
    key: Ed25519PrivateKey, mutate: Callable[[Doc], None], match: str
) -> None:
    doc = document()
    mutate(doc)
    with pytest.raises(ManifestError, match=f"^{match}"):
        verify(encode(doc), key)


def test_null_optional_fields_mean_absent(key: Ed25519PrivateKey) -> None:
    manifest = verify(encode(document(models=[model(labels=None)], rollout=None)), key)
    assert manifest.rollout is None
    assert manifest.models[0].labels is None


def test_an_empty_model_list_is_a_valid_manifest(key: Ed25519PrivateKey) -> None:
    assert verify(encode(document(models=[])), key).models == ()


# -- unsafe names and URLs ------------------------------------------------------------

TRAVERSALS = [
    "../x.tflite",
    "/etc/passwd",
    "a/../../b",
    "%2e%2e/x",
    "%2E%2e/x",
    ".%2e/x",
    "%252e%252e/x",
    "a%2f..%2fb",
    "..\\x",
    "a%5c..%5cb",
    "file:///etc/passwd",
    "ftp://example.com/x.tflite",
    "//evil.example/x.tflite",
    "https://cdn.example/m/../x.tflite",
    "http:x.tflite",
    "x.tflite\n",
    " x.tflite",
    "javascript:alert(1)",
]

URL_FIELDS: list[tuple[str, Callable[[Doc, str], None]]] = [
    ("models[0].url", lambda doc, url: doc["models"][0].update(url=url)),
    ("models[0].labels.url", lambda doc, url: doc["models"][0].update(labels=ref(b"x", url))),
    (
        "models[0].golden.input.url",
        lambda doc, url: doc["models"][0].update(golden={"input": ref(b"x", url), "top1": "x"}),
    ),
]


@pytest.mark.parametrize("url", TRAVERSALS)
@pytest.mark.parametrize(("field", "place"), URL_FIELDS, ids=[f for f, _ in URL_FIELDS])
def test_unsafe_urls_are_rejected_naming_the_field(
    key: Ed25519PrivateKey, field: str, place: Callable[[Doc, str], None], url: str
) -> None:
    doc = document()
    place(doc, url)
    with pytest.raises(ManifestError) as caught:
        verify(encode(doc), key)
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize("name", [*TRAVERSALS, "..", ".hidden", "-rf", "a b", "shapes/3"])
@pytest.mark.parametrize("field", ["name", "version"])
def test_unsafe_names_and_versions_are_rejected_naming_the_field(
    key: Ed25519PrivateKey, field: str, name: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        verify(encode(document(models=[model(**{field: name})])), key)
    assert str(caught.value).startswith(f"models[0].{field}: ")


@pytest.mark.parametrize(
    "url",
    [
        "shapes-3.tflite",
        "models/shapes/3.tflite",
        "shapes%203.tflite",
        "x.tflite?v=3",
        "https://cdn.example/models/x.tflite",
        "HTTP://cdn.example:8443/x.tflite",
        "a...b.tflite",
    ],
)
def test_safe_urls_are_accepted(key: Ed25519PrivateKey, url: str) -> None:
    assert verify(encode(document(models=[model(url=url)])), key).models[0].file.url == url


def test_resolve_url_joins_relative_urls_to_the_manifest() -> None:
    base = "https://cdn.example/fleet/manifest.json"
    assert resolve_url(base, "shapes-3.tflite") == "https://cdn.example/fleet/shapes-3.tflite"
    assert resolve_url(base, "m/x.tflite") == "https://cdn.example/fleet/m/x.tflite"
    assert resolve_url(base, "http://other.example/x") == "http://other.example/x"


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("file:///srv/manifest.json", "x.tflite"),
        ("https://cdn.example/manifest.json", "file:///etc/passwd"),
        ("manifest.json", "x.tflite"),
    ],
)
def test_resolve_url_refuses_anything_but_http(base: str, url: str) -> None:
    with pytest.raises(ManifestError, match="url"):
        resolve_url(base, url)


# -- files ----------------------------------------------------------------------------


def test_check_file_accepts_the_described_bytes() -> None:
    check_file(MODEL_BYTES, FileRef(**ref(MODEL_BYTES, "x")))


@pytest.mark.parametrize("data", [MODEL_BYTES[:-1], MODEL_BYTES + b"\0", b""])
def test_check_file_rejects_a_wrong_length(data: bytes) -> None:
    with pytest.raises(LengthError, match=f"{len(data)} bytes"):
        check_file(data, FileRef(**ref(MODEL_BYTES, "x")))


def test_check_file_rejects_same_length_other_bytes() -> None:
    changed = bytearray(MODEL_BYTES)
    changed[100] ^= 1
    with pytest.raises(HashError, match="sha256"):
        check_file(bytes(changed), FileRef(**ref(MODEL_BYTES, "x")))


# -- staged rollout ---------------------------------------------------------------------

DEVICES = [f"device-{index:04d}" for index in range(1000)]


def members(percent: float, salt: str = "2026-11") -> set[str]:
    rollout = Rollout(percent, salt)
    return {device for device in DEVICES if in_rollout(device, rollout)}


def test_no_rollout_means_every_device() -> None:
    assert all(in_rollout(device, None) for device in DEVICES)


def test_rollout_is_deterministic() -> None:
    assert members(50) == members(50)
    assert members(50) != members(50, salt="2026-12")  # a new salt reshuffles


def test_rollout_is_monotone_in_percent() -> None:
    groups = [members(percent) for percent in range(101)]
    assert groups[0] == set()
    assert groups[100] == set(DEVICES)
    for smaller, larger in itertools.pairwise(groups):
        assert smaller <= larger


@pytest.mark.parametrize("percent", [1, 10, 25, 50, 75, 90, 99])
def test_rollout_share_is_about_the_percent(percent: int) -> None:
    assert abs(len(members(percent)) / len(DEVICES) - percent / 100) <= 0.05


# -- key files ----------------------------------------------------------------------------


def test_generate_keypair_writes_a_private_0600_and_a_loadable_pair(tmp_path: Path) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    keys.generate_keypair(private, public)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    signer = keys.load_private_key(private)
    data = b"manifest bytes"
    verify_signature(data, keys.sign(signer, data), [keys.load_public_key(public)])


def test_generate_keypair_never_overwrites(tmp_path: Path) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    public.write_text("precious")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        keys.generate_keypair(private, public)
    assert not private.exists()
    assert public.read_text() == "precious"


def test_sign_writes_base64_of_64_bytes_and_a_newline(key: Ed25519PrivateKey) -> None:
    content = keys.sign(key, b"data")
    assert content.endswith(b"\n")
    assert len(base64.b64decode(content, validate=False)) == 64
    assert content.strip().isascii()


def test_key_id_is_16_hex_digits_of_the_raw_key(key: Ed25519PrivateKey) -> None:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert keys.key_id(key.public_key()) == hashlib.sha256(raw).hexdigest()[:16]


def test_bad_key_files_are_config_errors_naming_the_file(tmp_path: Path) -> None:
    garbage, missing, ec_key = (
        tmp_path / "garbage.pem",
        tmp_path / "missing.pem",
        tmp_path / "ec.pem",
    )
    garbage.write_bytes(b"-----BEGIN PUBLIC KEY-----\nnope\n")
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for path, reason in [(garbage, "not a PEM"), (missing, "cannot read"), (ec_key, "Ed25519")]:
        with pytest.raises(ConfigError, match=f"{path.name}.*{reason}"):
            keys.load_public_key(path)
    with pytest.raises(ConfigError, match="public key; signing needs the private"):
        keys.load_private_key(garbage)


def bucket(device: str, salt: str) -> float:
    """The documented formula, which a fleet backend may reimplement to predict groups."""
    digest = hashlib.sha256(f"{salt}:{device}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10000 / 100


def test_rollout_follows_the_documented_bucket_formula() -> None:
    for percent in (0.01, 33.33, 50, 99.99):
        expected = {device for device in DEVICES if bucket(device, "2026-11") < percent}
        assert members(percent) == expected


def test_bucket_zero_is_out_at_zero_percent_and_in_at_the_smallest_share() -> None:
    device = next(f"d{index}" for index in itertools.count() if bucket(f"d{index}", "s") == 0)
    assert not in_rollout(device, Rollout(0, "s"))
    assert in_rollout(device, Rollout(0.01, "s"))

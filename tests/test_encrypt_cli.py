"""The operator's and the device's commands for encrypted models, as they run them:
`keys init`, `keys show`, `model encrypt`, and `encrypt_release` (what
`manifest create --encrypt --recipients` calls) read back by the devices' own parser."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.cli import main as edge_agent
from edge_agent.commands.encrypt import GROUP_KEY, Release, encrypt_release
from edge_agent.errors import ManifestError, ModelError, NotRecipientError
from edge_agent.update import devicekey
from edge_agent.update.decrypt import (
    decrypt_bytes,
    decrypt_model,
    device_keyring,
    load_model_bytes,
)
from edge_agent.update.envelope import key_id, keyring
from edge_agent.update.manifest import Manifest, format_time, parse_manifest

from .conftest import IMAGENET_LABELS, MOBILENET


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    code = edge_agent([str(arg) for arg in args])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


def test_keys_init_show_and_model_encrypt_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    out = run(capsys, "keys", "init", "--state-dir", state)
    ident = out.split("device key id ")[1].split()[0]
    shown = run(capsys, "keys", "show", "--state-dir", state)
    assert shown.startswith(f"# edge-agent device key {ident}")
    assert run(capsys, "keys", "show", "--state-dir", state, "--id").strip() == ident
    (tmp_path / "porch-pi.pub").write_text(shown)
    assert key_id(devicekey.parse_public_key(shown.encode(), "porch-pi.pub")) == ident
    assert edge_agent(["keys", "init", "--state-dir", str(state)]) == 78  # never clobbered
    assert "already exists" in capsys.readouterr().err

    encrypted = tmp_path / "mobilenet.tflite.enc"
    out = run(capsys, "model", "encrypt", MOBILENET, "-o", encrypted, "--state-dir", state)
    assert f"encrypted for key(s) {ident}" in out
    ring = keyring([devicekey.load_device_key(state)])
    assert load_model_bytes(encrypted, ring) == MOBILENET.read_bytes()


def test_model_encrypt_for_other_devices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = X25519PrivateKey.generate()
    pub = tmp_path / "other.pub"
    pub.write_bytes(devicekey.public_pem(other.public_key()))
    encrypted = tmp_path / "m.enc"
    out = run(capsys, "model", "encrypt", MOBILENET, "-o", encrypted, "--recipient", pub)
    assert f"encrypted for key(s) {key_id(other)}" in out
    assert load_model_bytes(encrypted, keyring([other])) == MOBILENET.read_bytes()
    with pytest.raises(ModelError, match="not a recipient"):
        load_model_bytes(encrypted, keyring([X25519PrivateKey.generate()]))
    copy = tmp_path / "copy.tflite"
    copy.write_bytes(MOBILENET.read_bytes())
    assert (
        edge_agent(["model", "encrypt", str(copy), "-o", str(copy), "--recipient", str(pub)]) == 78
    )
    assert "would overwrite the model" in capsys.readouterr().err
    assert copy.read_bytes() == MOBILENET.read_bytes()


def release_manifest(release: Release, models: dict[str, tuple[Path, Path | None]]) -> Manifest:
    """The manifest `manifest create --encrypt` writes: as cmd_create, with each file
    object taken from the release instead of hashing the plaintext."""
    now = datetime.now(timezone.utc)
    entries: list[dict[str, Any]] = []
    for name, (model, labels) in models.items():
        entry: dict[str, Any] = {"name": name, "version": "2", **release.files[model.resolve()]}
        if labels is not None:
            entry["labels"] = release.files[labels.resolve()]
        entries.append(entry)
    document = {
        "spec_version": 1,
        "version": 2,
        "issued": format_time(now),
        "expires": format_time(now + timedelta(days=30)),
        "models": entries,
        "groups": release.groups,
    }
    return parse_manifest(json.dumps(document).encode())


def fetcher(out: Path) -> Any:
    def fetch(url: str) -> bytes | None:
        path = out / url
        return path.read_bytes() if path.is_file() else None  # a 404

    return fetch


@pytest.fixture
def fleet(tmp_path: Path) -> dict[str, X25519PrivateKey]:
    """A recipients directory: lab-pi directly, porch-pi and garage-pi in group porch."""
    devices = {name: X25519PrivateKey.generate() for name in ("lab-pi", "porch-pi", "garage-pi")}
    recipients = tmp_path / "recipients"
    (recipients / "porch.group").mkdir(parents=True)
    for name, key in devices.items():
        where = recipients if name == "lab-pi" else recipients / "porch.group"
        (where / f"{name}.pub").write_bytes(devicekey.public_pem(key.public_key()))
    return devices


def test_a_release_opens_for_direct_and_group_recipients(
    tmp_path: Path, fleet: dict[str, X25519PrivateKey]
) -> None:
    out = tmp_path / "site"
    out.mkdir()
    release = encrypt_release([MOBILENET, IMAGENET_LABELS], tmp_path / "recipients", out)
    manifest = release_manifest(release, {"mobilenet": (MOBILENET, IMAGENET_LABELS)})
    (entry,) = manifest.models
    (group,) = manifest.groups
    assert group.name == "porch"
    assert entry.file.encryption is not None
    assert set(entry.file.encryption.recipients) == {key_id(fleet["lab-pi"]), group.key_id}
    ciphertext = (out / entry.file.url).read_bytes()
    assert len(ciphertext) == entry.file.length
    assert hashlib.sha256(ciphertext).hexdigest() == entry.file.sha256  # what devices verify
    assert stat_mode(tmp_path / "recipients" / "porch.group" / GROUP_KEY) == 0o600
    for name, key in fleet.items():
        ring = device_keyring(entry.file.encryption, key, manifest.groups, fetcher(out))
        assert decrypt_model(out / entry.file.url, entry.file, ring) == MOBILENET.read_bytes(), name
        assert entry.labels is not None
        labels = decrypt_bytes((out / entry.labels.url).read_bytes(), entry.labels, ring)
        assert labels == IMAGENET_LABELS.read_bytes()


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_removing_a_member_rotates_its_group_and_locks_it_out(
    tmp_path: Path, fleet: dict[str, X25519PrivateKey]
) -> None:
    recipients = tmp_path / "recipients"
    first = encrypt_release([MOBILENET], recipients, tmp_path / "one")
    again = encrypt_release([MOBILENET], recipients, tmp_path / "two")
    assert first.groups[0]["key_id"] == again.groups[0]["key_id"]  # no change, no rotation

    (recipients / "porch.group" / "garage-pi.pub").unlink()
    out = tmp_path / "three"
    third = encrypt_release([MOBILENET], recipients, out)
    assert third.groups[0]["key_id"] != first.groups[0]["key_id"]
    manifest = release_manifest(third, {"mobilenet": (MOBILENET, None)})
    (entry,) = manifest.models
    assert entry.file.encryption is not None
    with pytest.raises(NotRecipientError, match="not a member of group\\(s\\) porch"):
        device_keyring(entry.file.encryption, fleet["garage-pi"], manifest.groups, fetcher(out))
    ring = device_keyring(entry.file.encryption, fleet["porch-pi"], manifest.groups, fetcher(out))
    assert decrypt_model(out / entry.file.url, entry.file, ring) == MOBILENET.read_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["models"][0]["encryption"].update(extra=1), "encryption.extra: unknown field"),
        (lambda d: d["models"][0]["encryption"].update(recipients=["XYZ"]), "16 lowercase hex"),
        (lambda d: d["models"][0]["encryption"].update(cipher="rot13"), "is not one of"),
        (lambda d: d["groups"][0].update(key_id="0" * 16), "is not the id of its public_key"),
        (lambda d: d["groups"][0].update(url="groups/porch"), "ends with '/'"),
        (lambda d: d["groups"][0].update(url="../porch/"), "'..'"),
        (lambda d: d["groups"].append(dict(d["groups"][0])), "listed twice"),
    ],
)
def test_the_parser_refuses_bad_encryption_fields(
    tmp_path: Path, fleet: dict[str, X25519PrivateKey], change: Any, message: str
) -> None:
    release = encrypt_release([MOBILENET], tmp_path / "recipients", tmp_path)
    manifest = release_manifest(release, {"mobilenet": (MOBILENET, None)})
    document = {
        "spec_version": 1,
        "version": 2,
        "issued": format_time(manifest.issued),
        "expires": format_time(manifest.expires),
        "models": [{"name": "m", "version": "2", **release.files[MOBILENET.resolve()]}],
        "groups": release.groups,
    }
    parse_manifest(json.dumps(document).encode())  # as made, it parses
    change(document)
    with pytest.raises(ManifestError, match=message):
        parse_manifest(json.dumps(document).encode())

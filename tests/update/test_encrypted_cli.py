"""The operator's round trip for encrypted releases, as real processes: `keys init`
and `keys show` on the device, `manifest create --encrypt --recipients`, `manifest
sign`, `manifest verify --check-files`; then the device's own code opens what the
operator wrote (its group key file, the model, the labels)."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.update import devicekey
from edge_agent.update.decrypt import decrypt_bytes, decrypt_model
from edge_agent.update.manifest import parse_manifest
from edge_agent.update.ring import DeviceKeyring

from ..conftest import DEMO_MODELS

pytestmark = pytest.mark.integration

SHAPES = DEMO_MODELS / "shapes_int8.tflite"
SHAPES_LABELS = DEMO_MODELS / "shapes_labels.txt"


def edge_agent(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "edge_agent", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_keys_init_show_manifest_create_encrypt_sign_verify_and_the_device_opens_it(
    tmp_path: Path,
) -> None:
    device = tmp_path / "device"
    device.mkdir()
    out = ok(edge_agent(tmp_path, "keys", "init", "--state-dir", device))
    ident = out.split("device key id ")[1].split()[0]
    assert stat.S_IMODE((device / "device-key.pem").stat().st_mode) == 0o600
    shown = ok(edge_agent(tmp_path, "keys", "show", "--state-dir", device))
    assert ok(edge_agent(tmp_path, "keys", "show", "--state-dir", device, "--id")).strip() == ident
    group = tmp_path / "recipients" / "porch.group"
    group.mkdir(parents=True)
    (group / "porch-pi.pub").write_text(shown)

    ok(edge_agent(tmp_path, "manifest", "keygen"))
    site = tmp_path / "site"
    created = ok(
        edge_agent(
            tmp_path,
            *("manifest", "create", SHAPES, "--name", f"shapes={SHAPES}", "--version", "9"),
            *("--labels", f"shapes={SHAPES_LABELS}", "--encrypt", "--recipients", "recipients"),
            *("--cipher", "aes-256-gcm", "-o", site / "manifest.json"),
        )
    )
    assert "encrypted for 1 recipient key(s)" in created
    assert stat.S_IMODE((group / "group-key.pem").stat().st_mode) == 0o600
    document = json.loads((site / "manifest.json").read_bytes())
    entry, groups = document["models"][0], document["groups"]
    ciphertext = (site / "shapes_int8.tflite.enc").read_bytes()
    assert entry["url"] == "shapes_int8.tflite.enc"
    assert (entry["length"], entry["sha256"]) == (len(ciphertext), sha256(ciphertext))
    assert entry["encryption"]["cipher"] == "aes-256-gcm"
    assert entry["encryption"]["plaintext_sha256"] == sha256(SHAPES.read_bytes())
    assert entry["encryption"]["recipients"] == [groups[0]["key_id"]]  # one id for the group
    assert groups[0]["name"] == "porch"
    assert (site / f"groups/porch/{groups[0]['key_id']}/{ident}.json").is_file()
    for path in (p for p in site.rglob("*") if p.is_file()):
        assert SHAPES.read_bytes() not in path.read_bytes(), path
        assert SHAPES_LABELS.read_bytes() not in path.read_bytes(), path

    ok(edge_agent(tmp_path, "manifest", "sign", site / "manifest.json"))
    verified = ok(
        edge_agent(tmp_path, "manifest", "verify", site / "manifest.json", "--check-files")
    )
    assert verified.startswith("OK: manifest version 9")
    assert "2 file(s) checked" in verified

    manifest = parse_manifest((site / "manifest.json").read_bytes())
    model = manifest.models[0]
    assert model.labels is not None

    def fetch(url: str) -> bytes | None:
        path = site / url
        return path.read_bytes() if path.is_file() else None

    ring = DeviceKeyring(devicekey.load_device_key(device), None)
    keys = ring.for_entry(model, manifest.groups, fetch)
    assert keys is not None
    assert decrypt_model(site / model.file.url, model.file, keys) == SHAPES.read_bytes()
    labels = (site / model.labels.url).read_bytes()
    assert decrypt_bytes(labels, model.labels, keys) == SHAPES_LABELS.read_bytes()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--encrypt"], "--encrypt needs --recipients"),
        (["--recipients", "recipients"], "--recipients goes with --encrypt"),
        (["--cipher", "aes-256-gcm"], "--cipher goes with --encrypt"),
        (["--encrypt", "--recipients", "empty"], "no device keys"),
        (["--encrypt", "--recipients", "nowhere"], "no such recipients file or directory"),
    ],
)
def test_manifest_create_encrypt_refuses_incomplete_options(
    tmp_path: Path, options: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    done = edge_agent(tmp_path, "manifest", "create", SHAPES, "--version", "2", *options)
    assert done.returncode == 78, done.stdout + done.stderr
    assert message in done.stderr
    assert not (tmp_path / "manifest.json").exists()

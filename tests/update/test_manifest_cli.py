"""The operator's manifest commands as an operator runs them: a real process,
real key files, real model files."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..conftest import DEMO_MODELS, HELLO_WORLD
from .fixtures import Site
from .servers import CA, StaticServer

pytestmark = pytest.mark.integration

SHAPES = DEMO_MODELS / "shapes_int8.tflite"
SHAPES_LABELS = DEMO_MODELS / "shapes_labels.txt"


def manifest_cli(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "edge_agent", "manifest", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A release directory: a key pair, two models and labels, as an operator stages them."""
    for source in (SHAPES, SHAPES_LABELS, HELLO_WORLD):
        shutil.copy(source, tmp_path / source.name)
    ok(manifest_cli(tmp_path, "keygen"))
    return tmp_path


def create_and_sign(release: Path, *extra: str) -> dict[str, Any]:
    ok(
        manifest_cli(
            release,
            "create",
            "shapes_int8.tflite",
            "hello_world_int8.tflite",
            "--version",
            "7",
            "--name",
            "shapes=shapes_int8.tflite",
            "--labels",
            "shapes=shapes_labels.txt",
            *extra,
        )
    )
    ok(manifest_cli(release, "sign", "manifest.json"))
    document: dict[str, Any] = json.loads((release / "manifest.json").read_text())
    return document


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    out = ok(manifest_cli(tmp_path, "keygen", "--private", "k.pem", "--public", "k.pub"))
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert (tmp_path / "k.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "k.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert "key id" in out


def test_keygen_refuses_to_overwrite_a_key(release: Path) -> None:
    before = (release / "update-key.pem").read_bytes()
    done = manifest_cli(release, "keygen")
    assert done.returncode == 78
    assert "refusing to overwrite" in done.stderr
    assert (release / "update-key.pem").read_bytes() == before


def test_create_describes_each_file_with_its_real_length_and_sha256(release: Path) -> None:
    document = create_and_sign(release, "--model-version", "shapes=3", "--expires-in", "12h")
    assert (release / "manifest.json").read_text().endswith("}\n")
    assert document["spec_version"] == 1
    assert document["version"] == 7
    shapes, hello = document["models"]
    assert (shapes["name"], shapes["version"], shapes["url"]) == ("shapes", "3", SHAPES.name)
    assert (hello["name"], hello["version"]) == ("hello_world_int8", "7")
    for entry, path in [(shapes, SHAPES), (hello, HELLO_WORLD), (shapes["labels"], SHAPES_LABELS)]:
        data = path.read_bytes()
        assert entry["length"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert "rollout" not in document


def test_create_with_base_url_golden_and_rollout(release: Path) -> None:
    document = create_and_sign(
        release,
        "--base-url",
        "https://cdn.example/fleet",
        "--golden",
        "shapes=shapes_labels.txt:circle",
        "--rollout-percent",
        "25",
        "--rollout-salt",
        "wave-1",
    )
    shapes = document["models"][0]
    assert shapes["url"] == "https://cdn.example/fleet/shapes_int8.tflite"
    assert shapes["golden"]["top1"] == "circle"
    assert document["rollout"] == {"percent": 25, "salt": "wave-1"}
    out = ok(manifest_cli(release, "verify", "manifest.json", "--check-files"))
    assert "remote file(s) NOT checked" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--golden", "shapes_int8=shapes_labels.txt"], "NAME=INPUT:TOP1"),
        (["--labels", "nope=shapes_labels.txt"], "no model named 'nope'"),
        (["--rollout-percent", "10"], "go together"),
        (["--base-url", "ftp://x"], "http"),
        (["--target-tags", "shapes_int8=site"], "NAME:KEY=V1,V2"),
        (["--target-tags", "nope:site=lab"], "no model named 'nope'"),
        (["--pin", "shapes_int8"], "expected NAME=ID"),
    ],
)
def test_create_rejects_bad_options(release: Path, args: list[str], message: str) -> None:
    done = manifest_cli(release, "create", "shapes_int8.tflite", "--version", "1", *args)
    assert done.returncode == 78
    assert message in done.stderr
    assert not (release / "manifest.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pin", "shapes_int8=gate-2", "--exclude", "shapes_int8=gate-2"], "both pinned"),
        (["--exclude", "shapes_int8=a/b"], "exclude[0]: 'a/b' is not a valid value"),
        (["--target-tags", "shapes_int8:-x=lab"], "'-x' is not a valid tag name"),
    ],
)
def test_create_refuses_targets_devices_would_reject(
    release: Path, args: list[str], message: str
) -> None:
    done = manifest_cli(release, "create", "shapes_int8.tflite", "--version", "1", *args)
    assert done.returncode != 0
    assert "models[0].targets" in done.stderr
    assert message in done.stderr
    assert not (release / "manifest.json").exists()


def test_create_with_targets_by_tag_pinned_and_excluded_ids(release: Path) -> None:
    document = create_and_sign(
        release,
        "--target-tags", "shapes:site=lab,depot",
        "--target-tags", "shapes:hw=pi4",
        "--pin", "shapes=gate-2",
        "--pin", "shapes=gate-3",
        "--exclude", "hello_world_int8=gate-7",
    )  # fmt: skip
    shapes, hello = document["models"]
    assert shapes["targets"] == {
        "tags": {"site": ["lab", "depot"], "hw": ["pi4"]},
        "devices": ["gate-2", "gate-3"],
    }
    assert hello["targets"] == {"exclude": ["gate-7"]}
    ok(manifest_cli(release, "verify", "manifest.json"))  # the devices' parser takes it


def test_signed_manifest_verifies(release: Path) -> None:
    create_and_sign(release)
    sig = (release / "manifest.json.sig").read_text()
    assert sig.endswith("\n")
    assert len(sig.strip()) == 88  # base64 of 64 bytes
    out = ok(manifest_cli(release, "verify", "manifest.json", "--check-files"))
    assert out.startswith("OK: manifest version 7, 2 model(s), expires ")
    assert "3 file(s) checked" in out


def test_tampered_manifest_is_rejected_naming_the_signature(release: Path) -> None:
    create_and_sign(release)
    path = release / "manifest.json"
    path.write_text(path.read_text().replace('"version": 7', '"version": 8'))
    done = manifest_cli(release, "verify", "manifest.json")
    assert done.returncode == 1
    assert done.stdout.startswith("REJECTED: ")
    assert "signature" in done.stdout


def test_check_files_catches_a_modified_model(release: Path) -> None:
    create_and_sign(release)
    model = release / "hello_world_int8.tflite"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    assert ok(manifest_cli(release, "verify", "manifest.json")).startswith("OK: ")
    done = manifest_cli(release, "verify", "manifest.json", "--check-files")
    assert done.returncode == 1
    assert done.stdout.startswith("REJECTED: models[1].file: ")
    assert "sha256" in done.stdout


def test_verify_with_rotated_keys_and_a_trusted_version(release: Path) -> None:
    create_and_sign(release)
    ok(manifest_cli(release, "keygen", "--private", "new.pem", "--public", "new.pub"))
    both = ["--key", "new.pub", "--key", "update-key.pub"]
    assert "newer than trusted" in ok(
        manifest_cli(release, "verify", "manifest.json", *both, "--trusted-version", "6")
    )
    assert "nothing to do" in ok(
        manifest_cli(release, "verify", "manifest.json", *both, "--trusted-version", "7")
    )
    rollback = manifest_cli(release, "verify", "manifest.json", *both, "--trusted-version", "8")
    assert (rollback.returncode, rollback.stdout.split(":")[0]) == (1, "REJECTED")
    rotated_out = manifest_cli(release, "verify", "manifest.json", "--key", "new.pub")
    assert rotated_out.returncode == 1
    assert "signature" in rotated_out.stdout


def test_sign_refuses_a_manifest_devices_would_reject(release: Path) -> None:
    ok(manifest_cli(release, "create", "shapes_int8.tflite", "--version", "3", "-o", "bad.json"))
    path = release / "bad.json"
    path.write_text(path.read_text().replace('"version": 3', '"version": true'))
    done = manifest_cli(release, "sign", "bad.json")
    assert done.returncode == 1
    assert "version: expected an integer, got true" in done.stderr
    assert not (release / "bad.json.sig").exists()


def test_verify_applies_the_devices_size_cap(release: Path) -> None:
    """A manifest signed properly but larger than a device will read is rejected
    by verify too: the same fetch and cap as a device, not a parallel reader."""
    from edge_agent.update import keys  # noqa: PLC0415 - after the CLI made the key

    create_and_sign(release)
    path = release / "manifest.json"
    padded = path.read_bytes().rstrip() + b" " * 1_000_001 + b"\n"  # JSON whitespace
    path.write_bytes(padded)
    signing_key = keys.load_private_key(release / "update-key.pem")
    (release / "manifest.json.sig").write_bytes(keys.sign(signing_key, padded))
    done = manifest_cli(release, "verify", "manifest.json")
    assert done.returncode == 1
    assert done.stdout.startswith("REJECTED: ")
    assert "more than 1000000" in done.stdout


def test_verify_of_a_served_release_checks_its_files_as_a_device_does(
    site: Site, server: StaticServer, ca: CA, tmp_path: Path
) -> None:
    path = site.publish(SHAPES.read_bytes() + b"\0" * 16, 2, labels=SHAPES_LABELS.read_bytes())
    args = ("verify", server.url("/manifest.json"), "--key", site.public(), "--check-files")
    out = ok(manifest_cli(tmp_path, *args, "--ca-file", ca.cert_file))
    assert "2 file(s) checked" in out
    assert server.count(path) == 1
    (site.root / path.lstrip("/")).write_bytes(SHAPES.read_bytes() + b"\1" * 16)
    done = manifest_cli(tmp_path, *args, "--ca-file", ca.cert_file)
    assert done.returncode == 1
    assert done.stdout.startswith("REJECTED: models[0].file: ")
    assert "sha256" in done.stdout

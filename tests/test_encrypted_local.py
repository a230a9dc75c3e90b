"""Models installed by hand, encrypted with `edge-agent model encrypt`: a pipeline
whose `model` (and `labels`) end in .enc serves them, decrypted in memory with the
device key from `state_dir` or from a systemd credential; `config check` says what
is wrong without the key."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.app.agent import Agent
from edge_agent.app.update_wiring import build_keyring
from edge_agent.config.settings import load_settings
from edge_agent.sources.base import Frame
from edge_agent.update.envelope import MAGIC

from .conftest import DEMO_MODELS

pytestmark = [pytest.mark.integration, pytest.mark.runtime]

SHAPES = DEMO_MODELS / "shapes_int8.tflite"
LABELS = DEMO_MODELS / "shapes_labels.txt"
CREDENTIAL = "edge-agent-device-key"


def edge_agent(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "edge_agent", *map(str, args)]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=60, check=False)


def ok(done: subprocess.CompletedProcess[bytes]) -> bytes:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def config(state: Path, model: Path, labels: Path) -> dict[str, Any]:
    return {
        "device_id": "dev1",
        "state_dir": str(state),
        "mqtt": {"host": "127.0.0.1", "port": 1},  # never connected: the agent is not run
        "pipelines": [
            {
                "name": "cam",
                "model": str(model),
                "labels": str(labels),
                "source": {"kind": "files", "pattern": str(DEMO_MODELS / "samples/camera/*.jpg")},
                "policy": {"kind": "classification", "threshold": 0.6},
            }
        ],
    }


def write_toml(path: Path, settings: dict[str, Any]) -> Path:
    p = settings["pipelines"][0]
    path.write_text(
        f'device_id = "dev1"\nstate_dir = "{settings["state_dir"]}"\n'
        '[mqtt]\nhost = "127.0.0.1"\n'
        f'[[pipelines]]\nname = "cam"\nmodel = "{p["model"]}"\nlabels = "{p["labels"]}"\n'
        f'[pipelines.source]\nkind = "files"\npattern = "{p["source"]["pattern"]}"\n'
        '[pipelines.policy]\nkind = "classification"\nthreshold = 0.6\n'
    )
    return path


@pytest.fixture
def encrypted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A device state_dir with a key, and the shapes model and labels encrypted for it."""
    state = tmp_path / "state"
    state.mkdir()
    ok(edge_agent("keys", "init", "--state-dir", state))
    models = tmp_path / "models"
    models.mkdir()
    model, labels = models / "shapes.tflite.enc", models / "shapes_labels.txt.enc"
    ok(edge_agent("model", "encrypt", SHAPES, "-o", model, "--state-dir", state))
    ok(edge_agent("model", "encrypt", LABELS, "-o", labels, "--state-dir", state))
    return state, model, labels


def test_a_pipeline_serves_a_model_and_labels_encrypted_by_hand(
    tmp_path: Path, encrypted: tuple[Path, Path, Path]
) -> None:
    state, model, labels = encrypted
    assert model.read_bytes().startswith(MAGIC)
    checked = edge_agent("config", "check", write_toml(tmp_path / "c.toml", config(*encrypted)))
    ok(checked)
    agent = Agent(load_settings(None, config(state, model, labels)))
    try:
        pipeline = agent.pipelines[0]
        assert pipeline.model.sha256 == hashlib.sha256(SHAPES.read_bytes()).hexdigest()
        assert pipeline.model_info.name == "shapes"  # not "shapes.tflite"
        frame = Frame((DEMO_MODELS / "samples/camera/frame_015.jpg").read_bytes(), "test", 0.0)
        decisions = [pipeline.process(frame) for _ in range(3)]
        assert [d.label for d in decisions if d is not None] == ["circle"]  # decrypted labels
    finally:
        agent.outbox.close()
        agent.state_lock.release()
    for path in (p for p in state.rglob("*") if p.is_file()):
        assert SHAPES.read_bytes() not in path.read_bytes(), path


def test_without_the_device_key_config_check_names_the_model_and_the_reason(
    tmp_path: Path, encrypted: tuple[Path, Path, Path]
) -> None:
    _, model, labels = encrypted
    elsewhere = tmp_path / "another-board"
    elsewhere.mkdir()
    toml = write_toml(tmp_path / "c.toml", config(elsewhere, model, labels))
    done = edge_agent("config", "check", toml)
    assert done.returncode == 78
    assert b"pipelines.cam.model:" in done.stderr
    assert b"no device key is configured" in done.stderr


def test_a_device_key_that_is_not_a_key_is_a_config_error(
    tmp_path: Path, encrypted: tuple[Path, Path, Path]
) -> None:
    state = encrypted[0]
    (state / "device-key.pem").write_text("SECRET-ISH-CONTENT\n")
    done = edge_agent("config", "check", write_toml(tmp_path / "c.toml", config(*encrypted)))
    assert done.returncode == 78
    assert b"update.device_key:" in done.stderr
    assert b"not a PEM private key" in done.stderr
    assert b"SECRET-ISH-CONTENT" not in done.stderr + done.stdout  # never the content


@pytest.mark.skipif(shutil.which("systemd-creds") is None, reason="systemd-creds is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-creds encrypt with the host key needs root")
def test_a_device_key_sealed_with_systemd_creds_opens_the_model(tmp_path: Path) -> None:
    """As the docs say: `keys init --stdout | systemd-creds encrypt`, and what systemd
    does at service start with LoadCredentialEncrypted= (decrypt into
    $CREDENTIALS_DIRECTORY), done here by `systemd-creds decrypt`."""
    key_pem = ok(edge_agent("keys", "init", "--stdout"))
    sealed = tmp_path / "device-key.cred"
    encrypt = ["systemd-creds", "encrypt", f"--name={CREDENTIAL}", "-", str(sealed)]
    done = subprocess.run(encrypt, input=key_pem, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        pytest.skip(f"systemd-creds cannot encrypt here: {done.stderr.decode().strip()}")
    assert key_pem not in sealed.read_bytes()
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    decrypt = ["systemd-creds", "decrypt", f"--name={CREDENTIAL}", str(sealed), "-"]
    opened = subprocess.run(decrypt, capture_output=True, timeout=60, check=True)
    (credentials / CREDENTIAL).write_bytes(opened.stdout)

    state = tmp_path / "state"  # no key file in it: the credential is the key
    state.mkdir()
    shown = ok(edge_agent("keys", "show", "--credentials-dir", credentials, "--state-dir", state))
    (tmp_path / "dev.pub").write_bytes(shown)
    model = tmp_path / "shapes.tflite.enc"
    ok(edge_agent("model", "encrypt", SHAPES, "-o", model, "--recipient", tmp_path / "dev.pub"))
    settings = load_settings(None, config(state, model, LABELS))
    ring = build_keyring(settings, None, {"CREDENTIALS_DIRECTORY": str(credentials)})
    assert ring.model_bytes(model) == SHAPES.read_bytes()
    assert build_keyring(settings, None, {}).device_key is None  # without it: no key

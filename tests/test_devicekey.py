"""The device key: created 0600 without clobbering, read from a systemd credential
first, public keys parsed as `keys show` prints them."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.errors import ConfigError
from edge_agent.update import devicekey
from edge_agent.update.envelope import key_id


def test_a_new_key_is_private_from_the_start_and_never_clobbered(tmp_path: Path) -> None:
    path = tmp_path / devicekey.KEY_FILE
    key = devicekey.create_device_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_id(devicekey.load_device_key(tmp_path)) == key_id(key)
    with pytest.raises(ConfigError, match="already exists"):
        devicekey.create_device_key(path)
    assert key_id(devicekey.load_device_key(tmp_path)) == key_id(key)
    assert [p.name for p in tmp_path.iterdir()] == [devicekey.KEY_FILE]  # no temp file left


def test_force_replaces_the_key(tmp_path: Path) -> None:
    path = tmp_path / devicekey.KEY_FILE
    old = devicekey.create_device_key(path)
    new = devicekey.create_device_key(path, replace=True)
    assert key_id(devicekey.load_device_key(tmp_path)) == key_id(new) != key_id(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_credential_wins_over_the_state_dir(tmp_path: Path) -> None:
    state, credentials = tmp_path / "state", tmp_path / "credentials"
    state.mkdir()
    credentials.mkdir()
    devicekey.create_device_key(state / devicekey.KEY_FILE)
    sealed = X25519PrivateKey.generate()
    (credentials / devicekey.CREDENTIAL).write_bytes(devicekey.private_pem(sealed))
    assert key_id(devicekey.load_device_key(state, credentials)) == key_id(sealed)
    assert devicekey.key_path(state, credentials) == credentials / devicekey.CREDENTIAL
    # a credentials directory without our credential: the state dir's key
    assert devicekey.key_path(state, tmp_path) == state / devicekey.KEY_FILE


def test_missing_and_wrong_keys_are_named_not_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no device key; create one with `edge-agent keys init`"):
        devicekey.load_device_key(tmp_path)
    signing = Ed25519PrivateKey.generate()
    pem = signing.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / devicekey.KEY_FILE).write_bytes(pem)
    with pytest.raises(ConfigError, match="Ed25519PrivateKey, not an X25519 device key") as caught:
        devicekey.load_device_key(tmp_path)
    assert "PRIVATE" not in str(caught.value)
    (tmp_path / devicekey.KEY_FILE).write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        devicekey.load_device_key(tmp_path)


def test_public_keys_parse_as_keys_show_prints_them() -> None:
    key = X25519PrivateKey.generate()
    shown = b"# edge-agent device key x (from y)\n" + devicekey.public_pem(key.public_key())
    assert key_id(devicekey.parse_public_key(shown, "porch.pub")) == key_id(key)
    line = devicekey.public_base64(key.public_key()).encode() + b"\n"
    assert key_id(devicekey.parse_public_key(b"# porch-pi\n" + line, "porch.pub")) == key_id(key)
    with pytest.raises(ConfigError, match="this is a private key"):
        devicekey.parse_public_key(devicekey.private_pem(key), "porch.pub")
    with pytest.raises(ConfigError, match="not a device public key"):
        devicekey.parse_public_key(b"bm90IGEga2V5\n", "porch.pub")


@pytest.mark.integration
def test_a_key_sealed_with_systemd_creds_is_the_one_shown(tmp_path: Path) -> None:
    """`keys init --stdout | systemd-creds encrypt`: the private key never lands on
    disk in the clear; decrypting the credential (as systemd does for
    LoadCredentialEncrypted=) gives back the key `keys show` reads."""
    if shutil.which("systemd-creds") is None:
        pytest.skip("systemd-creds is not installed (systemd >= 250)")
    name = devicekey.CREDENTIAL
    init = subprocess.run(
        [sys.executable, "-m", "edge_agent", "keys", "init", "--stdout"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    key_line = init.stderr.decode().strip().splitlines()[-1]
    sealed = tmp_path / "device-key.cred"
    encrypt = subprocess.run(
        ["systemd-creds", "encrypt", "--with-key=host", f"--name={name}", "-", str(sealed)],
        input=init.stdout,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if encrypt.returncode != 0:
        pytest.skip(f"systemd-creds cannot seal here (needs root): {encrypt.stderr.decode()}")
    assert b"PRIVATE KEY" not in sealed.read_bytes()
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    subprocess.run(
        ["systemd-creds", "decrypt", f"--name={name}", str(sealed), str(credentials / name)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    where = ["--state-dir", str(tmp_path / "none"), "--credentials-dir", str(credentials)]
    show = subprocess.run(
        [sys.executable, "-m", "edge_agent", "keys", "show", "--id", *where],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert key_line == f"device key id {show.stdout.strip()}"

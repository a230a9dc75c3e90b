"""Encrypted model updates on a device's real update side (UpdateManager, Fetcher,
ModelStore, a camera pipeline built by the agent's wiring) against a real HTTPS
server, with releases made by the operator's CLI (`keys init`/`keys show` on the
device, `manifest create --encrypt --recipients`, `manifest sign`).

Every refused update must say why on the update status and leave what the device
trusts exactly as it was (the model object serving, the store's current model and
trusted version, every file under models/)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.cli import main as edge_agent
from edge_agent.sources.base import Frame
from edge_agent.update import devicekey
from edge_agent.update.envelope import MAGIC, key_id
from tests.conftest import DEMO_MODELS
from tests.update.fixtures import MANIFEST, NAME, SHAPES, Device, Site, padded, sha256
from tests.update.servers import CA, StaticServer

pytestmark = [pytest.mark.integration, pytest.mark.runtime]

V2 = padded(16)
V3 = padded(32)
LABELS = b"nothing\nball\nbox\n"  # other names than the configured ones: visible in decisions


class Fleet:
    """The operator's recipients directory, and devices enrolled with the CLI."""

    def __init__(self, root: Path) -> None:
        self.recipients = root / "recipients"
        self.group = self.recipients / "porch.group"
        self.group.mkdir(parents=True)
        self.root = root

    def enroll(self, name: str, *, group: bool = True) -> X25519PrivateKey:
        """`keys init` on a new device, its `keys show` output filed as a recipient."""
        state = self.root / "devices" / name
        state.mkdir(parents=True, exist_ok=True)
        assert edge_agent(["keys", "init", "--state-dir", str(state), "--force"]) == 0
        key = devicekey.load_device_key(state)
        where = self.group if group else self.recipients
        (where / f"{name}.pub").write_bytes(devicekey.public_pem(key.public_key()))
        return key


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    fleet = Fleet(tmp_path / "operator")
    fleet.enroll("garage-pi")  # another member: the group is not just this device
    return fleet


@pytest.fixture
def devices(
    tmp_path: Path, site: Site, server: StaticServer, ca: CA
) -> Iterator[Callable[[X25519PrivateKey | None], Device]]:
    """Start (or restart) the device whose state is tmp_path/state, with a key."""
    started: list[Device] = []

    def start(key: X25519PrivateKey | None) -> Device:
        url = server.url(MANIFEST)
        device = Device(tmp_path / "state", url, [site.public()], ca.cert_file, device_key=key)
        started.append(device)
        return device

    yield start
    for device in started:
        device.close()


def commit(device: Device) -> None:
    device.manager.watch_probation()
    assert device.states()[-1] == "committed"


def refused(device: Device, *words: str) -> None:
    """One check ends in "rejected" with a reason containing `words`, and nothing
    the device trusts has changed; no download is left behind."""
    before = device.trusted()
    assert device.check() == "rejected"
    reason = device.reason()
    for text in words:
        assert text in reason, reason
    assert device.trusted() == before
    assert list((device.root / "downloads").iterdir()) == []


def decision(device: Device) -> str:
    """The label the pipeline decides on a frame of a ball (the policy's labels)."""
    frame = Frame((DEMO_MODELS / "samples/camera/frame_015.jpg").read_bytes(), "test", 0.0)
    for _ in range(3):
        decided = device.pipeline.process(frame)
        if decided is not None:
            return str(decided.label)
    raise AssertionError("no decision")


def files_under(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


# -- the good path --------------------------------------------------------------------


def test_an_encrypted_release_is_kept_as_ciphertext_and_decrypted_in_memory(
    tmp_path: Path,
    site: Site,
    server: StaticServer,
    fleet: Fleet,
    devices: Callable[[X25519PrivateKey | None], Device],
) -> None:
    key = fleet.enroll("dev1")
    url = site.publish_encrypted(V2, 2, fleet.recipients, labels=LABELS)
    ciphertext = (site.root / url.lstrip("/")).read_bytes()
    assert ciphertext.startswith(MAGIC)
    device = devices(key)
    assert device.check() == "installed"
    commit(device)

    assert device.pipeline.model.sha256 == sha256(V2)  # what serves is the plaintext
    assert device.pipeline.model_info.sha256 == sha256(V2)
    assert device.reports[-1]["model"]["sha256"] == sha256(V2)[:12]
    current = device.store.current(NAME)
    assert current is not None
    assert current.sha256 == sha256(V2)
    assert current.path.read_bytes() == ciphertext  # the store keeps what was verified
    assert current.labels is not None
    assert current.labels.read_bytes().startswith(MAGIC)
    assert decision(device) == "ball"  # "circle" with the configured labels
    group_file = f"/groups/porch/{_group_id(site)}/{key_id(key)}.json"
    assert server.count(group_file) == 1
    cached = list((device.root / "groups").iterdir())
    assert [p.name for p in cached] == [f"{_group_id(site)}-{key_id(key)}.json"]
    for path, data in files_under(tmp_path / "state").items():
        assert V2 not in data, path
        assert LABELS not in data, path

    # The next release to the same group: the group key comes from the store's cache.
    site.publish_encrypted(V3, 3, fleet.recipients, labels=LABELS)
    assert device.check() == "installed"
    assert device.pipeline.model.sha256 == sha256(V3)
    assert server.count(group_file) == 1
    # The same model encrypted again (new content keys, new ciphertext) is the same model.
    site.publish_encrypted(V3, 4, fleet.recipients, labels=LABELS)
    assert device.check() == "up_to_date"
    assert server.count(f"/{NAME}-4.tflite.enc") == 0


def test_a_restart_loads_the_stored_ciphertext_without_the_network(
    site: Site,
    server: StaticServer,
    fleet: Fleet,
    devices: Callable[[X25519PrivateKey | None], Device],
) -> None:
    key = fleet.enroll("dev1")
    site.publish_encrypted(V2, 2, fleet.recipients, labels=LABELS)
    device = devices(key)
    assert device.check() == "installed"
    commit(device)
    device.close()
    shutil.rmtree(site.root)  # the server has nothing left: the restart needs none of it

    again = devices(key)
    assert again.pipeline.model.sha256 == sha256(V2)
    assert again.pipeline.model_info.version == "2"
    assert decision(again) == "ball"  # the stored labels, decrypted
    # A rollback to what the store keeps also decrypts it (probation's loader).
    current = again.store.current(NAME)
    assert current is not None
    assert again.manager._targets[NAME].load(current.path).sha256 == sha256(V2)


def test_a_rollback_restores_the_previous_ciphertext_under_its_old_group_key(
    site: Site, server: StaticServer, fleet: Fleet, devices: Callable[..., Device]
) -> None:
    key = fleet.enroll("dev1")
    site.publish_encrypted(V2, 2, fleet.recipients, labels=LABELS)
    device = devices(key)
    assert device.check() == "installed"
    commit(device)
    (fleet.group / "group-key.pem").unlink()  # the operator rotates the group key
    site.publish_encrypted(V3, 3, fleet.recipients, labels=b"a\nb\nc\n")
    assert device.check() == "installed"
    assert decision(device) == "b"
    device.pipeline.stats.model_errors += 1  # it failed on probation
    device.manager.watch_probation()
    assert device.states()[-1] == "rolled_back"
    assert device.pipeline.model.sha256 == sha256(V2)  # decrypted with the cached old group key
    assert decision(device) == "ball"  # and its labels too
    assert len(list((device.root / "groups").iterdir())) == 2

    # The same model encrypted anew is still the model that was rolled back.
    path = site.publish_encrypted(V3, 4, fleet.recipients, labels=b"a\nb\nc\n")
    assert device.check() == "up_to_date"
    rejected = device.reports[-2]
    assert rejected["reason"] == "this model was rolled back on this device before"
    assert rejected["model"]["sha256"] == sha256(V3)[:12]
    assert server.count(path) == 0


# -- who may open it --------------------------------------------------------------------


def test_a_device_without_a_key_rejects_an_encrypted_release(
    site: Site, server: StaticServer, fleet: Fleet, devices: Callable[..., Device]
) -> None:
    url = site.publish_encrypted(V2, 2, fleet.recipients)
    device = devices(None)
    refused(device, "no device key", NAME)
    assert device.reports[-1]["state"] == "rejected"
    assert server.count(url) == 0
    assert device.pipeline.model.sha256 == sha256(SHAPES.read_bytes())


def test_a_device_that_is_not_a_recipient_downloads_nothing(
    site: Site, server: StaticServer, fleet: Fleet, devices: Callable[..., Device]
) -> None:
    shutil.rmtree(fleet.group)
    fleet.enroll("lab-pi", group=False)  # the only recipient, directly
    url = site.publish_encrypted(V2, 2, fleet.recipients)
    device = devices(X25519PrivateKey.generate())
    refused(device, "not a recipient")
    assert server.count(url) == 0


def test_a_device_removed_from_its_group_keeps_its_model_and_reports_not_a_recipient(
    site: Site, server: StaticServer, fleet: Fleet, devices: Callable[..., Device]
) -> None:
    key = fleet.enroll("dev1")
    site.publish_encrypted(V2, 2, fleet.recipients)
    device = devices(key)
    assert device.check() == "installed"
    commit(device)
    old_group = _group_id(site)

    (fleet.group / "dev1.pub").unlink()  # revoked: the next release rotates the group key
    url = site.publish_encrypted(V3, 3, fleet.recipients)
    assert _group_id(site) != old_group
    refused(device, "not a recipient", "porch")
    assert server.last_status(f"/groups/porch/{_group_id(site)}/{key_id(key)}.json") == 404
    assert server.count(url) == 0
    assert device.pipeline.model.sha256 == sha256(V2)


def test_a_rotated_device_key_is_not_a_recipient_until_it_is_enrolled_again(
    site: Site, fleet: Fleet, devices: Callable[..., Device]
) -> None:
    old = fleet.enroll("dev1")
    site.publish_encrypted(V2, 2, fleet.recipients)
    new = X25519PrivateKey.generate()  # `keys init --force`, not yet sent to the operator
    device = devices(new)
    refused(device, "not a recipient", key_id(new))
    assert key_id(old) != key_id(new)

    (fleet.group / "dev1.pub").write_bytes(devicekey.public_pem(new.public_key()))  # re-enrolled
    site.publish_encrypted(V2, 3, fleet.recipients)
    assert device.check() == "installed"
    assert device.pipeline.model.sha256 == sha256(V2)


def test_a_re_keyed_device_takes_the_rewrapped_release_after_its_restart(
    site: Site, fleet: Fleet, devices: Callable[..., Device]
) -> None:
    old = fleet.enroll("dev1")
    site.publish_encrypted(V2, 2, fleet.recipients)
    device = devices(old)
    assert device.check() == "installed"
    commit(device)
    device.close()
    new = fleet.enroll("dev1")  # `keys init --force`, re-enrolled; the same model re-wrapped
    site.publish_encrypted(V2, 3, fleet.recipients)

    again = devices(new)  # restarted with the new key: the stored ciphertext does not open
    assert again.pipeline.model.sha256 == sha256(SHAPES.read_bytes())  # the configured model
    assert again.check() == "installed"  # installed, yet not serving: taken again
    assert again.pipeline.model.sha256 == sha256(V2)


def test_a_group_file_for_another_device_is_a_wrong_key(
    site: Site, fleet: Fleet, devices: Callable[..., Device]
) -> None:
    """Someone on the server copies garage-pi's group key file over this device's."""
    key = fleet.enroll("dev1")
    site.publish_encrypted(V2, 2, fleet.recipients)
    directory = site.root / "groups" / "porch" / _group_id(site)
    garage = devicekey.load_device_key(fleet.root / "devices" / "garage-pi")
    theirs = (directory / f"{key_id(garage)}.json").read_bytes()
    (directory / f"{key_id(key)}.json").write_bytes(theirs)
    refused(devices(key), "not a recipient", key_id(garage))


# -- tampered, truncated ----------------------------------------------------------------


def _group_id(site: Site) -> str:
    document = json.loads(site.manifest.read_bytes())
    return str(document["groups"][0]["key_id"])


def _model_file(site: Site) -> Path:
    return site.root / f"{NAME}-2.tflite.enc"


def _resign(site: Site, data: bytes, field: str = "model") -> None:
    """The signer itself published `data` (its tool, or its machine, was subverted):
    the signed length and sha256 match, so only the decryption can tell."""
    path = _model_file(site) if field == "model" else site.root / f"{NAME}-2.labels.txt.enc"
    path.write_bytes(data)

    def change(document: dict[str, object]) -> None:
        entry = document["models"][0]  # type: ignore[index]
        ref = entry if field == "model" else entry["labels"]
        ref["length"], ref["sha256"] = len(data), hashlib.sha256(data).hexdigest()

    site.edit(change)


def _header_end(data: bytes) -> int:
    (length,) = struct.unpack_from(">I", data, len(MAGIC))
    return len(MAGIC) + 4 + int(length)


def flip_on_the_cdn(site: Site) -> None:
    data = bytearray(_model_file(site).read_bytes())
    data[-100] ^= 1
    _model_file(site).write_bytes(bytes(data))


def flip_before_signing(site: Site) -> None:
    data = bytearray(_model_file(site).read_bytes())
    data[_header_end(bytes(data)) + 70_000] ^= 1  # in the second 64 KiB chunk
    _resign(site, bytes(data))


def flip_labels_before_signing(site: Site) -> None:
    data = bytearray((site.root / f"{NAME}-2.labels.txt.enc").read_bytes())
    data[-3] ^= 1
    _resign(site, bytes(data), "labels")


def flip_wrapped_key(site: Site) -> None:
    data = _model_file(site).read_bytes()
    end = _header_end(data)
    header = json.loads(data[len(MAGIC) + 4 : end])
    wrapped = bytearray(base64.b64decode(header["recipients"][0]["wrapped_key"]))
    wrapped[40] ^= 1  # in the sealed content key, after HPKE's 32-byte enc
    header["recipients"][0]["wrapped_key"] = base64.b64encode(bytes(wrapped)).decode()
    encoded = json.dumps(header, separators=(",", ":")).encode()
    _resign(site, MAGIC + struct.pack(">I", len(encoded)) + encoded + data[end:])


def flip_group_file(site: Site) -> None:
    for path in (site.root / "groups").rglob("*.json"):
        document = json.loads(path.read_bytes())
        wrapped = bytearray(base64.b64decode(document["wrapped_key"]))
        wrapped[40] ^= 1
        document["wrapped_key"] = base64.b64encode(bytes(wrapped)).decode()
        path.write_text(json.dumps(document))


def stale_group_file(site: Site) -> None:
    """A group key file for another group key than the manifest's (a cache or an
    upload that lags a rotation)."""
    for path in (site.root / "groups").rglob("*.json"):
        document = json.loads(path.read_bytes())
        document["group_key_id"] = "0123456789abcdef"
        path.write_text(json.dumps(document))


def truncate_before_signing(site: Site) -> None:
    data = _model_file(site).read_bytes()
    _resign(site, data[: len(data) - 5000])


def truncate_on_the_cdn(site: Site) -> None:
    data = _model_file(site).read_bytes()
    _model_file(site).write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("attack", "cipher", "words"),
    [
        (flip_on_the_cdn, "chacha20-poly1305", ("sha256",)),
        (flip_before_signing, "aes-256-gcm", ("authentication failed", "chunk 2 of")),
        (flip_before_signing, "chacha20-poly1305", ("authentication failed", "chunk 2 of")),
        (flip_labels_before_signing, "chacha20-poly1305", ("authentication failed", "labels")),
        (flip_wrapped_key, "aes-256-gcm", ("tampered wrapped key", "content key")),
        (flip_group_file, "chacha20-poly1305", ("tampered wrapped key", "group key")),
        (stale_group_file, "chacha20-poly1305", ("wrong key", "0123456789abcdef")),
        (truncate_before_signing, "chacha20-poly1305", ("truncated",)),
        (truncate_on_the_cdn, "chacha20-poly1305", ("announces", "expected")),
    ],
    ids=lambda value: value.__name__ if callable(value) else None,
)
def test_tampered_or_truncated_releases_are_rejected_and_the_model_keeps_serving(
    site: Site,
    fleet: Fleet,
    devices: Callable[..., Device],
    attack: Callable[[Site], None],
    cipher: str,
    words: tuple[str, ...],
) -> None:
    key = fleet.enroll("dev1")
    site.publish_encrypted(V2, 2, fleet.recipients, "--cipher", cipher, labels=LABELS)
    attack(site)
    device = devices(key)
    serving = device.pipeline.model
    refused(device, *words)
    assert device.pipeline.model is serving
    assert device.store.current(NAME) is None

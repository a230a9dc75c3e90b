"""Adversarial model updates against a real UpdateManager, a real HTTPS server and
real files. Each device has first taken one good update (manifest 2, model V2,
committed); each attack then offers manifest 3. Every refused update must say why
(the state `check()` returns and the reason it reports) and leave what the device
trusts exactly as it was: the model object serving, the store's current model and
trusted version, every file under models/. Then the process level: SIGKILL
mid-download and mid-install, and a full disk, in child processes."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edge_agent.update.keys import key_id, load_public_key
from edge_agent.update.manifest import format_time
from edge_agent.update.store import InstalledModel, ModelStore
from tests.conftest import BROKEN, HELLO_WORLD
from tests.update.fixtures import LABELS as LABELS_FILE
from tests.update.fixtures import MANIFEST, NAME, Device, Site, padded, sha256
from tests.update.servers import CA, StaticServer, unresponsive_port

pytestmark = [pytest.mark.integration, pytest.mark.runtime]

PROJECT = Path(__file__).resolve().parents[2]
V2 = padded(16)  # the good update every device took
V3 = padded(32)  # what the attacks offer
BIG = padded(300_000)  # several 64 KiB reads: a download stalled midway leaves a partial
LABELS = LABELS_FILE.read_bytes()


@pytest.fixture
def devices(
    tmp_path: Path, site: Site, server: StaticServer, ca: CA
) -> Iterator[Callable[[], Device]]:
    """Start (or restart) the device whose state is tmp_path/state."""
    started: list[Device] = []

    def start() -> Device:
        device = Device(tmp_path / "state", server.url(MANIFEST), [site.public()], ca.cert_file)
        started.append(device)
        return device

    yield start
    for device in started:
        device.close()


@pytest.fixture
def device(devices: Callable[[], Device], site: Site) -> Device:
    """A device that took one good update: manifest 2, model V2, committed."""
    site.publish(V2, 2)
    device = devices()
    assert device.check() == "installed"
    commit(device)
    assert device.pipeline.model.sha256 == sha256(V2)
    return device


def commit(device: Device) -> None:
    device.manager.watch_probation()
    assert device.states()[-1] == "committed"


def refused(device: Device, state: str, *words: str) -> None:
    """One check ends in `state` with a reason containing `words`, and nothing the
    device trusts has changed."""
    before = device.trusted()
    assert device.check() == state
    reason = device.reason()
    for text in words:
        assert text in reason
    assert device.trusted() == before


# -- the manifest and its signature ---------------------------------------------------


def unsigned(site: Site) -> None:
    site.signature.unlink()


def empty_signature(site: Site) -> None:
    site.signature.write_bytes(b"")


def garbage_signature(site: Site) -> None:
    site.signature.write_bytes(b"this is not a signature\n")


def short_signature(site: Site) -> None:
    site.signature.write_bytes(base64.b64encode(bytes(10)) + b"\n")


def huge_signature(site: Site) -> None:
    site.signature.write_bytes(b"A" * 100_000)


def signed_by_another_key(site: Site) -> None:
    site.keygen("other")
    site.sign(site.manifest.read_bytes(), key="other")


def one_byte_changed(site: Site) -> None:
    data = site.manifest.read_bytes()
    site.manifest.write_bytes(data.replace(b'"version": 3,', b'"version": 9,', 1))
    assert site.manifest.read_bytes() != data


SPOILED_SIGNATURES: list[tuple[Callable[[Site], None], str, str]] = [
    (unsigned, "failed", "manifest.json.sig: HTTP 404 Not Found"),
    (empty_signature, "rejected", "signature file is empty: the manifest is unsigned"),
    (garbage_signature, "rejected", "signature file is not base64 text"),
    (short_signature, "rejected", "signature is 10 bytes, Ed25519 needs 64"),
    (huge_signature, "rejected", "manifest.json.sig: the server announces 100000 bytes"),
    (signed_by_another_key, "rejected", "signature does not verify with any trusted key"),
    (one_byte_changed, "rejected", "signature does not verify with any trusted key"),
]


@pytest.mark.parametrize(
    ("spoil", "state", "words"),
    SPOILED_SIGNATURES,
    ids=[spoil.__name__ for spoil, _, _ in SPOILED_SIGNATURES],
)
def test_a_manifest_without_a_good_signature_is_refused(
    device: Device,
    site: Site,
    server: StaticServer,
    spoil: Callable[[Site], None],
    state: str,
    words: str,
) -> None:
    path = site.publish(V3, 3)
    spoil(site)
    refused(device, state, words)
    assert server.count(path) == 0


def test_a_lower_version_is_refused_new_or_replayed(device: Device, site: Site) -> None:
    replay = site.manifest.read_bytes(), site.signature.read_bytes()  # manifest 2, signed
    site.publish(V3, 5)
    assert device.check() == "installed"
    commit(device)
    site.publish(padded(48), 4)
    refused(device, "rejected", "version: 4 is lower than the trusted version 5")
    site.manifest.write_bytes(replay[0])
    site.signature.write_bytes(replay[1])
    refused(device, "rejected", "version: 2 is lower than the trusted version 5")


def test_the_trusted_version_with_other_content_is_not_installed(
    device: Device, site: Site, server: StaticServer
) -> None:
    downloads = server.count("/shapes-2.tflite")
    site.publish(V3, 2)  # re-signed under the trusted version, other model bytes
    before = device.trusted()
    assert device.check() == "rejected"
    assert device.trusted() == before
    assert server.count("/shapes-2.tflite") == downloads


def test_the_trusted_version_with_other_content_is_reported_as_rejected(
    device: Device, site: Site
) -> None:
    site.publish(V3, 2)
    refused(device, "rejected", "version")


def test_an_expired_manifest_is_refused(device: Device, site: Site) -> None:
    site.publish(V3, 3)
    now = datetime.now(timezone.utc)
    expired = format_time(now - timedelta(days=1))
    site.edit(lambda d: d.update(issued=format_time(now - timedelta(days=2)), expires=expired))
    refused(device, "rejected", f"expires: the manifest expired at {expired}")


def test_a_manifest_over_the_size_cap_is_refused_unread(device: Device, site: Site) -> None:
    site.publish(V3, 3)
    device.configure(max_manifest_bytes=100)
    size = site.manifest.stat().st_size
    refused(device, "rejected", f"manifest.json: the server announces {size} bytes")


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("name", "../shapes", "models[0].name: '../shapes' is not a safe name"),
        ("version", "../../etc", "models[0].version: '../../etc' is not a safe name"),
        ("url", "../shapes-3.tflite", "models[0].url: '../shapes-3.tflite': '..' path segment"),
        ("url", "%2e%2e/%252e%252e/shapes-3.tflite", "'..' path segment"),
        ("url", "/etc/passwd", "not a path relative to the manifest"),
        ("url", "file:///etc/passwd", "only http(s) URLs"),
    ],
    ids=["name", "version", "url-dotdot", "url-encoded-dotdot", "url-absolute-path", "url-file"],
)
def test_a_path_traversal_in_a_signed_manifest_is_refused(
    device: Device, site: Site, server: StaticServer, field: str, value: str, words: str
) -> None:
    path = site.publish(V3, 3)
    site.edit(lambda d: d["models"][0].update({field: value}))
    refused(device, "rejected", words)
    assert server.count(path) == 0


# -- the model file -----------------------------------------------------------------


def part_of(device: Device, model: bytes) -> Path:
    return device.store.download_path(NAME, sha256(model))


def test_a_model_longer_than_its_length_is_cut_at_length_plus_one(
    device: Device, site: Site, server: StaticServer
) -> None:
    server.behave(site.publish(V3, 3), "forever")
    refused(device, "rejected", f"body is longer than the {len(V3)} bytes expected")
    assert part_of(device, V3).stat().st_size <= len(V3) + 1


def test_a_truncated_model_fails_and_the_next_check_resumes_it(
    device: Device, site: Site, server: StaticServer
) -> None:
    path = site.publish(V3, 3)
    server.behave(path, "close-early", times=1)
    refused(device, "failed", "short read", "retrying at the next check")
    kept = part_of(device, V3).stat().st_size
    assert 0 < kept < len(V3)
    assert device.check() == "installed"
    assert server.last_headers(path)["range"] == f"bytes={kept}-"
    assert device.pipeline.model.sha256 == sha256(V3)


def test_a_model_with_another_sha256_is_refused_and_not_kept(device: Device, site: Site) -> None:
    site.publish(V3, 3)
    claimed = sha256(b"another model")
    site.edit(lambda d: d["models"][0].update(sha256=claimed))
    refused(device, "rejected", f"sha256 {sha256(V3)}, the manifest says {claimed}")
    assert not part_of(device, V3).exists()
    assert not part_of(device, b"another model").exists()


@pytest.mark.parametrize(
    ("model", "words"),
    [
        (BROKEN, "the new model does not load"),
        (HELLO_WORLD, "the new model's tensors [(1, 1)] -> [(1, 1)] do not match the pipeline's"),
    ],
    ids=["unloadable", "other-tensors"],
)
def test_a_hash_correct_model_that_fails_the_self_test_is_refused(
    device: Device, site: Site, model: Path, words: str
) -> None:
    site.publish(model.read_bytes(), 3)
    refused(device, "rejected", words)


MISFIT_LABELS = b"a\nb\nc\nd\ne\n"  # five labels for three classes
MISFIT = "the new labels do not fit the pipeline's policy"


def test_labels_that_do_not_fit_the_policy_are_refused(device: Device, site: Site) -> None:
    before = device.trusted()
    site.publish(V3, 3, labels=MISFIT_LABELS)
    assert device.check() == "rejected"
    assert MISFIT in device.reason()
    assert "5 labels for a model with 3 classes" in device.reason()
    assert replace(device.trusted(), files=before.files) == before  # the files: see below


def test_labels_that_do_not_fit_the_policy_leave_nothing_installed(
    device: Device, site: Site
) -> None:
    site.publish(V3, 3, labels=MISFIT_LABELS)
    refused(device, "rejected", MISFIT)


@pytest.mark.parametrize(
    ("status", "words"),
    [(404, "HTTP 404 Not Found"), (500, "HTTP 500 Internal Server Error")],
    ids=["404", "500"],
)
def test_a_model_the_server_does_not_give_fails(
    device: Device, site: Site, server: StaticServer, status: int, words: str
) -> None:
    path = site.publish(V3, 3)
    server.behave(path, f"status:{status}")
    refused(device, "failed", f"{server.url(path)}: {words}; retrying at the next check")


def test_a_server_that_never_answers_fails_after_the_connect_timeout(device: Device) -> None:
    with unresponsive_port() as port:
        device.configure(url=f"https://127.0.0.1:{port}{MANIFEST}")
        started = time.monotonic()
        refused(device, "failed", "connecting: timed out after 1 s")
    assert time.monotonic() - started < 5


def test_a_model_download_that_stalls_fails_after_the_read_timeout(
    device: Device, site: Site, server: StaticServer
) -> None:
    path = site.publish(V3, 3)
    server.behave(path, "stall", times=1)
    refused(device, "failed", f"{server.url(path)}: timed out after 1 s")
    assert device.check() == "installed"


# -- who may update, and what ----------------------------------------------------------


def test_a_rotated_out_key_is_no_longer_trusted(device: Device, site: Site) -> None:
    new = site.keygen("new")
    device.configure(trusted=[new])
    site.publish(V3, 3)  # still signed by the old key
    refused(device, "rejected", "does not verify", key_id(load_public_key(new)))
    site.publish(V3, 3, key="new")
    assert device.check() == "installed"
    assert device.pipeline.model.sha256 == sha256(V3)


def test_a_device_outside_the_rollout_downloads_nothing(
    device: Device, site: Site, server: StaticServer
) -> None:
    path = site.publish(V3, 3, "--rollout-percent", "0", "--rollout-salt", "wave-1")
    refused(device, "skipped", "this device is not in the rollout group")
    assert server.count(path) == 0


def test_a_model_rolled_back_before_is_not_installed_again(
    device: Device, site: Site, server: StaticServer
) -> None:
    site.publish(V3, 3)
    assert device.check() == "installed"
    device.pipeline.stats.model_errors += 1  # it failed on probation
    device.manager.watch_probation()
    assert device.states()[-1] == "rolled_back"
    before = device.trusted()
    assert before.info.version == "2"
    path = site.publish(V3, 4)  # the same bytes, in a newer manifest
    assert device.check() == "up_to_date"  # other models of the manifest would still apply
    rejected = device.reports[-2]
    assert rejected["state"] == "rejected"
    assert rejected["reason"] == "this model was rolled back on this device before"
    assert rejected["model"]["sha256"] == sha256(V3)[:12]
    assert device.trusted() == replace(before, version=4)  # the manifest is trusted, not its model
    assert server.count(path) == 0


# -- the process level: SIGKILL, full disk ----------------------------------------------


def child(device: Device, **options: Any) -> subprocess.Popen[str]:
    """A device process doing one check on `device`'s state (tests.update.fixtures.child_main)."""
    config = {
        "state": str(device.root.parent),
        "url": device.url,
        "trusted": [str(path) for path in device.trusted_keys],
        "ca_file": str(device.ca_file),
        "read_timeout": 30.0,
        **options,
    }
    code = "from tests.update.fixtures import child_main; child_main()"
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-c", code, json.dumps(config)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=PROJECT)


def finished(process: subprocess.Popen[str]) -> dict[str, Any]:
    """What the child printed; it must have exited normally, whatever the check said."""
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def kill(process: subprocess.Popen[str], when: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 20
    while not when():
        assert time.monotonic() < deadline, "the child never got there"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL


def paused(process: subprocess.Popen[str]) -> Callable[[], bool]:
    assert process.stdout is not None
    stdout = process.stdout
    return lambda: stdout.readline() == "paused\n"


def on_disk(device: Device) -> InstalledModel:
    """What a restarted store finds after the kill: no temp file left, every model
    file complete, and current the old model or the complete new one."""
    store = ModelStore(device.root)  # sweeps what an interrupted install left
    assert [p.name for p in device.root.rglob(".*") if "downloads" not in p.parts] == []
    complete = {sha256(V2), sha256(BIG)}
    for path in (device.root / "models").rglob("*.tflite"):
        assert sha256(path.read_bytes()) in complete, f"partial model {path}"
    current = store.current(NAME)
    assert current is not None
    assert sha256(current.path.read_bytes()) == current.sha256
    return current


def test_sigkill_mid_download_keeps_the_old_model_and_a_restart_resumes(
    device: Device, site: Site, server: StaticServer, devices: Callable[[], Device]
) -> None:
    path = site.publish(BIG, 3, labels=LABELS)
    server.behave(path, "stall", times=1)
    part = part_of(device, BIG)
    with child(device) as process:
        kill(process, lambda: part.exists() and part.stat().st_size > 0)
    kept = part.stat().st_size
    assert on_disk(device).sha256 == sha256(V2)
    restarted = devices()
    assert restarted.check() == "installed"
    assert server.last_headers(path)["range"] == f"bytes={kept}-"
    assert restarted.pipeline.model.sha256 == sha256(BIG)


@pytest.mark.parametrize(
    ("pause", "evidence", "downloads"),
    [
        ("labels-temp", "models/shapes/.3-*.labels.txt.tmp", 0),  # the verified .part is reused
        ("model-moved", "models/shapes/3-*.tflite", 1),  # installed, not activated
        ("state-temp", ".state.json.tmp", 1),  # activating
    ],
    ids=["labels-temp", "model-moved", "state-temp"],
)
def test_sigkill_mid_install_keeps_the_old_model_and_a_restart_completes(
    device: Device,
    site: Site,
    server: StaticServer,
    devices: Callable[[], Device],
    pause: str,
    evidence: str,
    downloads: int,
) -> None:
    path = site.publish(BIG, 3, labels=LABELS)
    with child(device, pause=pause) as process:
        kill(process, paused(process))
    assert list(device.root.glob(evidence)), "the kill should land mid-install"
    assert on_disk(device).sha256 == sha256(V2)
    fetched = server.count(path)
    restarted = devices()
    assert restarted.check() == "installed"
    assert restarted.pipeline.model.sha256 == sha256(BIG)
    assert server.count(path) == fetched + downloads
    assert not list(device.root.glob("models/shapes/.*"))


def test_sigkill_after_activation_is_a_crash_on_probation(
    device: Device, site: Site, devices: Callable[[], Device]
) -> None:
    site.publish(BIG, 3, labels=LABELS)
    with child(device, pause="activated") as process:
        kill(process, paused(process))
    assert on_disk(device).sha256 == sha256(BIG)  # complete, and on probation
    restarted = devices()  # rolls it back, as an agent does at start-up
    assert restarted.pipeline.model.sha256 == sha256(V2)
    assert restarted.check() == "up_to_date"
    assert restarted.reports[-2]["reason"] == "this model was rolled back on this device before"


def test_a_full_disk_fails_the_download_and_a_later_check_completes(
    device: Device, site: Site, server: StaticServer
) -> None:
    path = site.publish(V3, 3)
    limit = 50_000
    result = finished(child(device, fsize=limit))
    assert result["state"] == "failed"
    assert "File too large" in result["reports"][-1]["reason"]
    assert result["serving"] == sha256(V2)
    kept = part_of(device, V3).stat().st_size
    assert 0 < kept <= limit
    assert on_disk(device).sha256 == sha256(V2)
    assert ModelStore(device.root).trusted_version() == 2
    result = finished(child(device))  # the limit lifted
    assert (result["state"], result["serving"]) == ("installed", sha256(V3))
    assert server.last_headers(path)["range"] == f"bytes={kept}-"

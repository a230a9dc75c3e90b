"""The model store against real files: atomic installs, the commit/rollback state
machine, persistence across restarts, and what a SIGKILL mid-install leaves."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.errors import HashError, ManifestError, RollbackError, UpdateError
from edge_agent.update.store import InstalledModel, ModelStore

PROJECT = Path(__file__).resolve().parents[2]
LABELS = b"cat\ndog\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source(tmp_path: Path, data: bytes, name: str = "model.tflite") -> Path:
    """A verified download outside the store: install must copy it."""
    directory = tmp_path / "incoming"
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path


def put(store: ModelStore, tmp_path: Path, version: str, name: str = "det") -> InstalledModel:
    data = f"model {name} {version}".encode()
    return store.install(name, version, sha(data), source(tmp_path, data), LABELS)


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "state" / "updates"


def test_install_copies_a_complete_file_with_labels(tmp_path: Path, root: Path) -> None:
    data = os.urandom(3 << 20)
    src = source(tmp_path, data)
    model = ModelStore(root).install("det", "1.2.0", sha(data), src, LABELS)

    assert model.path == root / "models" / "det" / f"1.2.0-{sha(data)[:12]}.tflite"
    assert model.path.read_bytes() == data
    assert sha(model.path.read_bytes()) == model.sha256 == sha(data)
    assert model.labels is not None
    assert model.labels.read_bytes() == LABELS
    assert src.read_bytes() == data  # copied from outside the store, not consumed
    assert not list(root.rglob(".*"))


def test_install_moves_a_download_and_accepts_no_labels(root: Path) -> None:
    store = ModelStore(root)
    data = b"downloaded bytes"
    part = store.download_path("det", sha(data))
    assert part == root / "downloads" / f"det-{sha(data)[:12]}.part"
    part.write_bytes(data)

    model = store.install("det", "2", sha(data).upper(), part, None)

    assert not part.exists()
    assert model.path.read_bytes() == data
    assert model.labels is None
    assert model.sha256 == sha(data)


def test_install_refuses_bytes_that_changed_and_leaves_nothing(tmp_path: Path, root: Path) -> None:
    store = ModelStore(root)
    with pytest.raises(HashError):
        store.install("det", "1", sha(b"expected"), source(tmp_path, b"tampered"), LABELS)
    assert files(root / "models") == set()


def test_install_of_a_missing_source_is_an_update_error(tmp_path: Path, root: Path) -> None:
    with pytest.raises(UpdateError):
        ModelStore(root).install("det", "1", sha(b"x"), tmp_path / "nope", None)


def test_activate_commit_rollback_persist_across_restarts(tmp_path: Path, root: Path) -> None:
    store = ModelStore(root)
    v1 = put(store, tmp_path, "1")
    store.activate("det", v1)
    assert store.on_probation("det")
    store.commit("det")

    store = ModelStore(root)
    assert store.current("det") == v1
    assert store.previous("det") is None
    assert not store.on_probation("det")

    v2 = put(store, tmp_path, "2")
    store.activate("det", v2)
    store = ModelStore(root)
    assert (store.current("det"), store.previous("det")) == (v2, v1)
    assert store.on_probation("det")

    assert store.rollback("det") == v1
    store = ModelStore(root)
    assert (store.current("det"), store.previous("det")) == (v1, None)
    assert not store.on_probation("det")
    assert store.is_rejected("det", v2.sha256)
    assert not store.is_rejected("det", v1.sha256)
    assert not store.is_rejected("other", v2.sha256)
    assert not v2.path.exists()  # the rejected bytes do not stay on the card


def test_commit_keeps_only_current_and_previous(tmp_path: Path, root: Path) -> None:
    store = ModelStore(root)
    models = [put(store, tmp_path, str(version)) for version in range(1, 5)]
    for model in models:
        store.activate("det", model)
        store.commit("det")

    kept = {p.name for p in (root / "models" / "det").iterdir()}
    expected = {m.path.name for m in models[2:]} | {m.labels.name for m in models[2:] if m.labels}
    assert kept == expected
    assert (store.current("det"), store.previous("det")) == (models[3], models[2])


def test_commit_spares_an_install_not_yet_activated(tmp_path: Path, root: Path) -> None:
    store = ModelStore(root)
    v1 = put(store, tmp_path, "1")
    store.activate("det", v1)
    v2 = put(store, tmp_path, "2")  # downloaded while v1 is still on probation
    store.commit("det")
    assert v2.path.is_file()
    store.activate("det", v2)
    assert store.current("det") == v2


def test_rollback_without_previous_falls_back_to_configured(tmp_path: Path, root: Path) -> None:
    store = ModelStore(root)
    v1 = put(store, tmp_path, "1")
    store.activate("det", v1)

    assert store.rollback("det") is None
    assert store.current("det") is None
    assert store.is_rejected("det", v1.sha256)
    assert ModelStore(root).current("det") is None


def test_activate_over_probation_keeps_the_healthy_previous(tmp_path: Path, root: Path) -> None:
    store = ModelStore(root)
    v1, v2, v3 = (put(store, tmp_path, v) for v in ("1", "2", "3"))
    store.activate("det", v1)
    store.commit("det")
    store.activate("det", v2)
    store.activate("det", v3)  # v2 never proved healthy: it is no rollback target
    assert (store.current("det"), store.previous("det")) == (v3, v1)
    assert store.rollback("det") == v1


def test_recover_rolls_back_what_was_on_probation(tmp_path: Path, root: Path) -> None:
    store = ModelStore(root)
    v1 = put(store, tmp_path, "1")
    store.activate("det", v1)
    store.commit("det")
    store.activate("det", put(store, tmp_path, "2"))
    other = put(store, tmp_path, "1", name="kws")
    store.activate("kws", other)
    store.commit("kws")
    del store  # the agent dies before committing det v2

    restarted = ModelStore(root)
    assert restarted.recover() == ["det"]
    assert restarted.current("det") == v1
    assert restarted.current("kws") == other
    assert ModelStore(root).recover() == []


def test_open_removes_leftovers_but_not_downloads(tmp_path: Path, root: Path) -> None:
    store = ModelStore(root)
    kept = put(store, tmp_path, "1")
    directory = root / "models" / "det"
    (directory / ".2-0123456789ab.tflite.tmp").write_bytes(b"half")
    (directory / "3-0123456789ab.labels.txt").write_bytes(LABELS)  # its model never arrived
    (root / ".state.json.tmp").write_bytes(b"{")
    partial = root / "downloads" / "det-0123456789ab.part"
    partial.write_bytes(b"resumable")

    ModelStore(root)

    assert kept.labels is not None
    assert files(directory) == {kept.path.name, kept.labels.name}
    assert not (root / ".state.json.tmp").exists()
    assert partial.read_bytes() == b"resumable"


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'{"schema": 99}',
        b'{"schema": 1, "trusted": [3, "nothex"], "etag": null, "last_modified": null,'
        b' "models": {}}',
        json.dumps(
            {
                "schema": 1,
                "trusted": None,
                "etag": None,
                "last_modified": None,
                "models": {
                    "../../etc": {"current": None, "previous": None, "probation": True},
                },
            }
        ).encode(),
    ],
)
def test_corrupt_state_starts_empty(
    root: Path, tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    root.mkdir(parents=True)
    (root / "state.json").write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="edge_agent.update.store"):
        store = ModelStore(root)
    assert "unreadable" in caplog.text
    assert store.trusted_version() is None
    assert store.recover() == []
    assert (root / "state.json.corrupt").read_bytes() == content

    store.activate("det", put(store, tmp_path, "1"))  # and it keeps working
    assert ModelStore(root).on_probation("det")


def test_trusted_version_and_etag_persist(root: Path) -> None:
    store = ModelStore(root)
    assert store.trusted_version() is None
    assert store.etag() == (None, None)
    store.set_trusted(4, sha(b"manifest 4"))
    store.set_trusted(4, sha(b"manifest 4"))  # idempotent
    store.set_etag('"abc"', "Wed, 21 Oct 2015 07:28:00 GMT")

    store = ModelStore(root)
    assert store.trusted_version() == 4
    assert store.etag() == ('"abc"', "Wed, 21 Oct 2015 07:28:00 GMT")
    with pytest.raises(RollbackError):
        store.set_trusted(3, sha(b"manifest 3"))
    with pytest.raises(RollbackError):
        store.set_trusted(4, sha(b"another manifest 4"))
    store.set_trusted(5, sha(b"manifest 5"))
    assert ModelStore(root).trusted_version() == 5


BAD_NAMES = ["../evil", "a/b", "/abs", "", ".hidden", "-x", "x\n", "a" * 65, "ü", "a b"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_unsafe_names_and_versions_are_refused(tmp_path: Path, root: Path, bad: str) -> None:
    store = ModelStore(root)
    src = source(tmp_path, b"m")
    with pytest.raises(ManifestError):
        store.install(bad, "1", sha(b"m"), src, None)
    with pytest.raises(ManifestError):
        store.install("det", bad, sha(b"m"), src, None)
    with pytest.raises(ManifestError):
        store.download_path(bad, sha(b"m"))
    with pytest.raises(ManifestError):
        store.current(bad)
    assert files(root / "models") == set()


def test_malformed_digests_are_refused(tmp_path: Path, root: Path) -> None:
    store = ModelStore(root)
    for digest in ("../" + "0" * 61, "0" * 63, "g" * 64):
        with pytest.raises(ManifestError):
            store.install("det", "1", digest, source(tmp_path, b"m"), None)
        with pytest.raises(ManifestError):
            store.download_path("det", digest)


def test_activate_refuses_a_model_from_elsewhere(tmp_path: Path, root: Path) -> None:
    store = ModelStore(root)
    real = put(store, tmp_path, "1")
    forged = InstalledModel("det", "1", real.sha256, tmp_path / "x.tflite", real.labels)
    with pytest.raises(UpdateError):
        store.activate("det", forged)
    with pytest.raises(UpdateError):
        store.activate("kws", real)


def test_a_missing_file_is_none_not_a_dangling_path(
    tmp_path: Path, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(root)
    v1 = put(store, tmp_path, "1")
    store.activate("det", v1)
    store.commit("det")
    v1.path.unlink()
    with caplog.at_level(logging.ERROR, logger="edge_agent.update.store"):
        assert ModelStore(root).current("det") is None
    assert "missing" in caplog.text


# -- SIGKILL mid-install --------------------------------------------------------------

CHILD = """
import sys
from pathlib import Path
from edge_agent.update.store import ModelStore
store = ModelStore(Path(sys.argv[1]))
print("ready", flush=True)
model = store.install("big", "2", sys.argv[3], Path(sys.argv[2]), b"a\\nb\\n")
store.activate("big", model)
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("big") / "big.tflite"
    data = os.urandom(50 << 20)
    path.write_bytes(data)
    return path, sha(data)


def run_and_kill(root: Path, big: tuple[Path, str], when: float | str | None) -> bool:
    """Start an install in a child, SIGKILL it `when` seconds after it is ready
    ("temp": as soon as its temp file appears; None: let it finish). Returns
    whether a temp file was left behind."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    cmd = [sys.executable, "-c", CHILD, str(root), str(big[0]), big[1]]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=PROJECT) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        if when == "temp":
            deadline = time.monotonic() + 10
            while not list(root.glob("models/big/.*.tmp")) and time.monotonic() < deadline:
                time.sleep(0.0005)
        elif isinstance(when, float):
            time.sleep(when)
        if when is not None:
            child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) in (0, -signal.SIGKILL)
    return bool(list(root.rglob(".*.tmp")))


@pytest.mark.integration
@pytest.mark.parametrize("when", [0.01, 0.05, 0.2, "temp", None])
def test_sigkill_mid_install_leaves_old_or_new_never_partial(
    tmp_path: Path, big: tuple[Path, str], when: float | str | None
) -> None:
    root = tmp_path / "updates"
    left_temp = run_and_kill(root, big, when)
    if when == "temp":
        assert left_temp, "the kill should have landed mid-copy"

    store = ModelStore(root)
    assert not [p.name for p in root.rglob(".*")]
    for path in (root / "models").rglob("*.tflite"):
        assert sha(path.read_bytes()) == big[1], f"partial model {path}"
    for labels in (root / "models").rglob("*.labels.txt"):  # written first: no orphan
        assert labels.with_name(labels.name.replace(".labels.txt", ".tflite")).is_file()
    model = store.current("big")
    if when is None:
        assert model is not None
    if model is not None:
        assert sha(model.path.read_bytes()) == big[1]
        assert model.labels is not None
        assert model.labels.read_bytes() == b"a\nb\n"
        assert store.on_probation("big")
        assert store.recover() == ["big"]
    assert store.current("big") is None
    assert big[0].stat().st_size == 50 << 20  # the source outside the store is untouched

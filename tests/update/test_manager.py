"""The update manager's own decisions, through its seams: a fake `Fetch` serving an
operator's real signed files from disk, and a fake `SwapTarget`. What crosses the
network is tested against real servers in test_adversarial.py and test_fetch.py."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import FetchError, LengthError, ModelError
from edge_agent.model.runtime import Model
from edge_agent.mqtt.payloads import ModelInfo
from edge_agent.pipeline.policy import Policy
from edge_agent.update import keys
from edge_agent.update.manager import RECOVERED, UpdateManager, UpdateOptions
from edge_agent.update.manifest import FileRef, check_file
from edge_agent.update.protocols import Fetched, Target, Validators
from edge_agent.update.store import ModelStore
from tests.update.fixtures import LABELS, NAME, SHAPES, Site, padded, sha256

BASE = "https://updates.example/"
V2, V3 = padded(16), padded(32)


@dataclass(frozen=True)
class Call:
    url: str
    max_length: int
    sha256: str | None
    into: Path | None
    cancel: threading.Event | None


class FakeFetch:
    """The `Fetch` protocol over the files of `root`, as served under BASE: the same
    length and digest checks as the real one, every call recorded."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[Call] = []
        self.requested = threading.Event()

    def fetch(
        self,
        url: str,
        *,
        max_length: int,
        sha256: str | None = None,
        into: Path | None = None,
        since: Validators | None = None,
        cancel: threading.Event | None = None,
    ) -> Fetched | None:
        self.calls.append(Call(url, max_length, sha256, into, cancel))
        self.requested.set()
        path = self.root / url.removeprefix(BASE)
        if not path.is_file():
            raise FetchError(f"{url}: HTTP 404 Not Found")
        data = path.read_bytes()
        if len(data) > max_length:
            raise LengthError(f"{url}: over {max_length}")
        if sha256 is not None:
            check_file(data, FileRef(url, max_length, sha256))
        if into is not None:
            into.write_bytes(data)
            return Fetched(b"", into)
        return Fetched(data)


class Stats:
    inferences = 0
    model_errors = 0


class FakePipeline:
    """A `SwapTarget` that records swaps; its model is the real shapes model."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.stats = Stats()
        self.swapped: list[ModelInfo] = []

    def swap_model(self, model: Model, info: ModelInfo, policy: Policy | None = None) -> None:
        self.swapped.append(info)


def unloadable(source: Path | bytes) -> Model:
    raise ModelError(f"{source!r}: not a model")


@pytest.fixture(scope="module")
def shapes() -> Model:
    return Model.load(SHAPES)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path / "site", tmp_path / "keys")


@pytest.fixture
def fetcher(site: Site) -> FakeFetch:
    return FakeFetch(site.root)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "state" / "updates")


class Setup:
    def __init__(self, site: Site, fetcher: FakeFetch, store: ModelStore, shapes: Model) -> None:
        self.pipeline = FakePipeline(shapes)
        self.reports: list[dict[str, Any]] = []
        self.store = store
        options = UpdateOptions(
            manifest_url=BASE + "manifest.json",
            keys=(keys.load_public_key(site.public()),),
            device_id="dev1",
            interval=3600,
            jitter=0.1,
        )
        target = Target(NAME, self.pipeline, unloadable, (SHAPES, ModelInfo(NAME, "1", "")))
        self.manager = UpdateManager(options, fetcher, store, [target], self.reports.append)

    def last(self) -> dict[str, Any]:
        return self.reports[-1]


@pytest.fixture
def device(site: Site, fetcher: FakeFetch, store: ModelStore, shapes: Model) -> Setup:
    return Setup(site, fetcher, store, shapes)


def two_releases(site: Site) -> None:
    """Manifest 3 beside the signature of manifest 2: an upload caught halfway."""
    site.publish(V2, 2)
    old_signature = site.signature.read_bytes()
    site.publish(V3, 3)
    site.signature.write_bytes(old_signature)


def test_a_manifest_and_a_signature_of_two_releases_are_checked_again_soon(
    device: Setup, site: Site
) -> None:
    two_releases(site)
    for _ in range(3):
        assert device.manager.check() == "rejected"
        assert "does not verify" in device.last()["reason"]
        assert "checking again in" in device.last()["reason"]
        assert 10 <= device.manager.next_delay() <= 60
    assert device.manager.check() == "rejected"  # a fourth time: not a passing race
    assert "checking again" not in device.last()["reason"]
    assert 3240 <= device.manager.next_delay() <= 3960


def test_after_another_outcome_the_interval_applies_again(device: Setup, site: Site) -> None:
    two_releases(site)
    assert device.manager.check() == "rejected"
    assert device.manager.next_delay() <= 60
    site.publish(V3, 3)  # the upload finished: signed properly, yet it does not load
    assert device.manager.check() == "rejected"
    assert "does not load" in device.last()["reason"]
    assert device.manager.next_delay() >= 3240


def test_a_model_is_streamed_into_the_store_with_its_digest_and_labels_in_memory(
    device: Setup, site: Site, fetcher: FakeFetch, store: ModelStore
) -> None:
    site.publish(V3, 3, labels=LABELS.read_bytes())
    assert device.manager.check() == "rejected"
    model, labels = (call for call in fetcher.calls if call.url.endswith((".tflite", ".txt")))
    part = store.download_path(NAME, sha256(V3))
    assert (model.into, model.sha256, model.max_length) == (part, sha256(V3), len(V3))
    assert labels.into is None
    assert labels.sha256 == sha256(LABELS.read_bytes())
    assert not part.exists()  # rejected bytes are not kept for a resume
    assert device.pipeline.swapped == []


def test_a_rollback_done_at_start_is_announced_once(
    device: Setup, store: ModelStore, tmp_path: Path, site: Site, fetcher: FakeFetch, shapes: Model
) -> None:
    source = tmp_path / "v3.tflite"
    source.write_bytes(V3)
    installed = store.install(NAME, "3", sha256(V3), source, None)
    store.activate(NAME, installed)  # then the agent was killed on probation
    restarted = ModelStore(tmp_path / "state" / "updates")  # the agent starts again
    assert restarted.recover() == [NAME]
    again = Setup(site, fetcher, restarted, shapes)
    again.manager.announce_recovered()
    (report,) = again.reports
    assert (report["state"], report["reason"]) == ("rolled_back", RECOVERED)
    assert report["model"] == {"name": NAME, "version": "3", "sha256": sha256(V3)[:12]}
    again.manager.announce_recovered()
    assert len(again.reports) == 1


def test_run_hands_its_stop_to_every_transfer(
    device: Setup, site: Site, fetcher: FakeFetch
) -> None:
    """So stopping the manager ends a download in flight (the real fetcher's guard)."""
    site.publish(V3, 3)
    stop = threading.Event()
    thread = threading.Thread(target=device.manager.run, args=(stop,), daemon=True)
    thread.start()
    device.manager.check_now()
    assert fetcher.requested.wait(15)
    stop.set()
    thread.join(15)
    assert not thread.is_alive()
    assert fetcher.calls
    assert all(call.cancel is stop for call in fetcher.calls)

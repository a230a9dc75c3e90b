"""The update manager: polls the signed manifest, verifies, downloads, self-tests,
installs, swaps the model into its running pipeline, and commits it only after a
healthy probation (or rolls it back). Its one thread owns all of that; it talks
to the network and to pipelines only through the `Fetch` and `SwapTarget`
protocols, and every transfer ends when the thread is told to stop."""

from __future__ import annotations

import io
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.errors import (
    ConfigError,
    EdgeAgentError,
    FetchError,
    ModelError,
    SelfTestError,
    SignatureError,
    UpdateError,
)
from edge_agent.model.labels import parse_labels
from edge_agent.model.runtime import Model
from edge_agent.mqtt.payloads import ModelInfo, utc_timestamp
from edge_agent.pipeline.policy import Policy
from edge_agent.update import release
from edge_agent.update.decrypt import decrypt_model
from edge_agent.update.envelope import Keyring
from edge_agent.update.groupkey import MAX_GROUP_FILE
from edge_agent.update.manifest import Manifest, ModelEntry, model_sha256, resolve_url
from edge_agent.update.probation import Probation
from edge_agent.update.protocols import Fetch, Target, Validators
from edge_agent.update.ring import DeviceKeyring, open_file
from edge_agent.update.selftest import self_test
from edge_agent.update.store import InstalledModel, ModelStore
from edge_agent.update.targeting import rollout_bucket, selected

log = logging.getLogger(__name__)

NPY_MAGIC = b"\x93NUMPY"
RECOVERED = "it was on probation when the agent stopped (a crash or a reboot before the commit)"


@dataclass(frozen=True)
class UpdateOptions:
    manifest_url: str
    keys: tuple[Ed25519PublicKey, ...]
    device_id: str
    interval: float = 3600.0
    jitter: float = 0.1  # +/- this fraction of the interval, so a fleet does not poll in step
    probation_inferences: int = 20
    probation_seconds: float = 300.0
    max_manifest_bytes: int = release.MAX_MANIFEST_BYTES
    # A manifest and a signature of two releases (fetched while an operator
    # uploads): checked again this soon (seconds, random in the range), this often.
    mismatch_retry: tuple[float, float] = (10.0, 60.0)
    mismatch_retries: int = 3
    tags: Mapping[str, str] = field(default_factory=dict)  # fleet.tags, for `targets`
    # Opens encrypted models (see docs/encrypted-models.md); None: this device
    # rejects them ("no device key") and takes plaintext ones as before.
    device_key: X25519PrivateKey | None = None


Reporter = Callable[[dict[str, Any]], None]


class UpdateManager:
    """`run` is the thread body; `check_now` asks for a check (the cmd/update command)."""

    def __init__(
        self,
        options: UpdateOptions,
        fetcher: Fetch,
        store: ModelStore,
        targets: list[Target],
        report: Reporter,
    ) -> None:
        self.options = options
        self._fetcher = fetcher
        self._store = store
        self._targets = {t.name: t for t in targets}
        self._ring = DeviceKeyring(options.device_key, store.groups)
        self._report_to = report
        self._wake = threading.Event()
        self._stop = threading.Event()  # run's: ends a transfer in flight
        self._probation = Probation(
            store,
            lambda state, reason, model: self._report(state, reason, model=model),
            inferences=options.probation_inferences,
            seconds=options.probation_seconds,
        )
        self._mismatches = 0
        self.retry_in: float | None = None  # set by a check that wants the next one soon

    def check_now(self) -> None:
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        self.announce_recovered()
        next_check = time.monotonic() + random.uniform(0, 5)  # noqa: S311 - spread start-up checks
        while not stop.is_set():
            if self._wake.is_set() or time.monotonic() >= next_check:
                self._wake.clear()
                self.check()
                next_check = time.monotonic() + self.next_delay()
            self.watch_probation()
            self._wake.wait(1.0)

    def announce_recovered(self) -> None:
        """Publish the rollbacks the store did at start-up, as any other transition."""
        for model in self._store.take_recovered():
            self._report("rolled_back", RECOVERED, model=model)

    def next_delay(self) -> float:
        """Seconds to the next check: soon after a release mismatch, else the interval."""
        if self.retry_in is not None:
            return self.retry_in
        spread = self.options.interval * self.options.jitter
        return self.options.interval + random.uniform(-spread, spread)  # noqa: S311

    def check(self) -> str:
        """One poll; returns the final state reported ("unchanged", "committed", ...)."""
        self.retry_in = None
        try:
            state = self._check()
        except SignatureError as exc:
            return self._mismatch(exc)
        except (FetchError, OSError) as exc:
            state = self._report("failed", f"{exc}; retrying at the next check")
        except UpdateError as exc:
            state = self._report("rejected", str(exc))
        except EdgeAgentError as exc:
            state = self._report("failed", str(exc))
        self._mismatches = 0
        return state

    def _mismatch(self, exc: SignatureError) -> str:
        """Both files arrived, yet the signature is not the manifest's: most often
        one release's manifest with the next one's signature (an upload in
        progress, a CDN half refreshed). Look again soon, a few times."""
        self._mismatches += 1
        if self._mismatches > self.options.mismatch_retries:
            return self._report("rejected", str(exc))
        low, high = self.options.mismatch_retry
        self.retry_in = random.uniform(low, high)  # noqa: S311 - spreads a fleet's retries
        return self._report("rejected", f"{exc}; checking again in {self.retry_in:.0f} s")

    def _check(self) -> str:
        self._report("checking")
        etag, modified = self._store.etag()
        got = release.read_release(
            self._fetcher,
            self.options.manifest_url,
            self.options.keys,
            trusted_version=self._store.trusted_version(),
            now=datetime.now(timezone.utc),
            max_manifest_bytes=self.options.max_manifest_bytes,
            since=Validators(etag, modified),
            cancel=self._stop,
        )
        if got is None:
            return self._report("unchanged")
        manifest, validators = got.manifest, got.validators
        if not got.newer:
            # The trusted version again: only its exact bytes are. Other content
            # under the same number is a re-publication without a new version, or
            # a second manifest from the signer; either way set_trusted refuses it.
            self._trust(manifest)
            self._store.set_etag(validators.etag, validators.last_modified)
            return self._report("up_to_date")
        mine = [e for e in manifest.models if e.name in self._targets]
        chosen = [e for e in mine if self._selected(manifest, e)]
        if mine and not chosen:
            # Not trusted: a later manifest may select this device (a new salt, a
            # wider percent). The ETag makes polls of this one a 304 meanwhile.
            self._store.set_etag(validators.etag, validators.last_modified)
            return self._report(
                "skipped", "this device is not in the rollout group", manifest=manifest
            )
        installed = [self._apply(manifest, e) for e in chosen]
        self._trust(manifest)
        self._store.set_etag(validators.etag, validators.last_modified)
        return self._report("installed" if any(installed) else "up_to_date", manifest=manifest)

    def _selected(self, manifest: Manifest, entry: ModelEntry) -> bool:
        """Percent, tags, pinned and excluded ids (targeting.py) for this device."""
        rollout = manifest.rollout
        bucket = None if rollout is None else rollout_bucket(rollout.salt, self.options.device_id)
        percent = None if rollout is None else rollout.percent
        return selected(entry.targets, self.options.device_id, self.options.tags, bucket, percent)

    def _trust(self, manifest: Manifest) -> None:
        self._store.set_trusted(manifest.version, manifest.raw_sha256)
        self._store.set_rollout_salt(manifest.rollout.salt if manifest.rollout else None)

    def _apply(self, manifest: Manifest, entry: ModelEntry) -> bool:
        """Install and swap in one model; False when it is already the one serving.
        An encrypted model is compared, rejected and reported by its plaintext's
        sha256, downloaded and kept as ciphertext, and decrypted into memory only."""
        target = self._targets[entry.name]
        sha256 = model_sha256(entry.file)
        current = self._store.current(entry.name)
        if current is not None and current.sha256 == sha256 == target.pipeline.model.sha256:
            return False  # installed and serving; installed but not serving: it did not load
        if self._store.is_rejected(entry.name, sha256):
            # Not an error of this manifest: other models in it still apply.
            self._report(
                "rejected",
                "this model was rolled back on this device before",
                model=entry,
                manifest=manifest,
            )
            return False
        ring = self._ring.for_entry(entry, manifest.groups, self._group_file)  # before downloading
        self._report("downloading", model=entry, manifest=manifest)
        part = self._store.download_path(entry.name, entry.file.sha256)
        url = self._url(entry.file.url)
        release.download(self._fetcher, url, entry.file, part, self._stop)  # hashed as it streams
        self._report("verifying", model=entry, manifest=manifest)
        model, labels = self._verified(entry, target, part, ring)
        kept = labels[0] if labels else None  # as downloaded: ciphertext if encrypted
        installed = self._store.install(
            entry.name, entry.version, sha256, part, kept, file_sha256=entry.file.sha256
        )
        try:
            policy = self._policy(target, labels[1] if labels else None)
        except UpdateError:
            self._store.discard(installed)
            raise
        self._store.activate(entry.name, installed)  # on disk before it serves: a crash rolls back
        info = ModelInfo(entry.name, entry.version, sha256)
        target.pipeline.swap_model(model, info, policy)
        self._probation.start(target, installed)
        log.info("update: %s %s serving, on probation", entry.name, entry.version)
        return True

    def _verified(
        self, entry: ModelEntry, target: Target, part: Path, ring: Keyring | None
    ) -> tuple[Model, tuple[bytes, list[str]] | None]:
        """The downloaded model, decrypted in memory if encrypted, loaded and
        self-tested, and its labels; bytes that fail are deleted."""
        try:
            labels = self._labels(entry, ring)
            encrypted = entry.file.encryption is not None
            content = decrypt_model(part, entry.file, ring or {}) if encrypted else part
            model = self._tested(entry, target, content, labels[1] if labels else None)
        except UpdateError:
            part.unlink(missing_ok=True)  # rejected bytes must not be resumed or kept
            raise
        return model, labels

    def _labels(self, entry: ModelEntry, ring: Keyring | None) -> tuple[bytes, list[str]] | None:
        """The labels as downloaded (kept: ciphertext if encrypted) and their lines."""
        if entry.labels is None:
            return None
        data = self._small(entry.labels)
        plaintext = open_file(data, entry.labels, ring)
        try:
            return data, parse_labels(plaintext, entry.labels.url)
        except ModelError as exc:
            raise SelfTestError(f"the new labels are not UTF-8 text: {exc}") from exc

    def _group_file(self, relative: str) -> bytes | None:
        """This device's group key file, or None when the server has none (404)."""
        return release.read_optional(self._fetcher, self._url(relative), MAX_GROUP_FILE, self._stop)

    def _tested(
        self, entry: ModelEntry, target: Target, model: Path | bytes, labels: list[str] | None
    ) -> Model:
        golden = None
        if entry.golden_input is not None:
            golden = self._golden_tensor(self._small(entry.golden_input), target)
        return self_test(
            model,
            target.load,
            target.pipeline.model,
            golden=golden,
            golden_top1=entry.golden_top1,
            labels=labels,
        )

    @staticmethod
    def _policy(target: Target, labels: list[str] | None) -> Policy | None:
        """The policy the new labels make (installed, not yet active: a misfit is
        discarded before anything serves)."""
        if labels is None or target.make_policy is None:
            return None
        try:
            return target.make_policy(labels)
        except ConfigError as exc:
            raise SelfTestError(f"the new labels do not fit the pipeline's policy: {exc}") from exc

    @staticmethod
    def _golden_tensor(data: bytes, target: Target) -> np.ndarray:
        try:
            if data.startswith(NPY_MAGIC):
                return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))
            if target.prepare is None:
                raise SelfTestError("the golden input is not a .npy and this pipeline takes none")
            return target.prepare(data)
        except (EdgeAgentError, ValueError, OSError) as exc:
            raise SelfTestError(f"unusable golden input: {exc}") from exc

    def _small(self, ref: Any) -> bytes:
        return release.read_small(self._fetcher, self.options.manifest_url, ref, self._stop)

    def _url(self, relative: str) -> str:
        return resolve_url(self.options.manifest_url, relative)

    def watch_probation(self) -> None:
        self._probation.watch()

    def _report(
        self,
        state: str,
        reason: str | None = None,
        *,
        model: Any = None,
        manifest: Manifest | None = None,
    ) -> str:
        payload: dict[str, Any] = {
            "v": 1,
            "device": self.options.device_id,
            "state": state,
            "reason": reason,
            "manifest_version": manifest.version if manifest else None,
            "model": None,
            "ts": utc_timestamp(time.time()),
        }
        if model is not None:
            sha = model.sha256 if isinstance(model, InstalledModel) else model_sha256(model.file)
            payload["model"] = {"name": model.name, "version": model.version, "sha256": sha[:12]}
        level = logging.WARNING if state in ("rejected", "failed", "rolled_back") else logging.INFO
        log.log(level, "update: %s%s", state, f": {reason}" if reason else "")
        self._report_to(payload)
        return state

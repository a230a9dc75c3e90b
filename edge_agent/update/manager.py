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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.errors import (
    ConfigError,
    EdgeAgentError,
    FetchError,
    SelfTestError,
    SignatureError,
    UpdateError,
)
from edge_agent.model.runtime import Model
from edge_agent.mqtt.payloads import ModelInfo, utc_timestamp
from edge_agent.pipeline.policy import Policy
from edge_agent.update import release
from edge_agent.update.manifest import Manifest, ModelEntry, in_rollout, resolve_url
from edge_agent.update.probation import Probation
from edge_agent.update.protocols import Fetch, Target, Validators
from edge_agent.update.selftest import self_test
from edge_agent.update.store import InstalledModel, ModelStore

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
            self._store.set_trusted(manifest.version, manifest.raw_sha256)
            self._store.set_etag(validators.etag, validators.last_modified)
            return self._report("up_to_date")
        if not in_rollout(self.options.device_id, manifest.rollout):
            return self._report(
                "skipped", "this device is not in the rollout group", manifest=manifest
            )
        installed = [self._apply(manifest, e) for e in manifest.models if e.name in self._targets]
        self._store.set_trusted(manifest.version, manifest.raw_sha256)
        self._store.set_etag(validators.etag, validators.last_modified)
        return self._report("installed" if any(installed) else "up_to_date", manifest=manifest)

    def _apply(self, manifest: Manifest, entry: ModelEntry) -> bool:
        """Install and swap in one model; False when it is already the one serving."""
        target = self._targets[entry.name]
        current = self._store.current(entry.name)
        if current is not None and current.sha256 == entry.file.sha256:
            return False
        if self._store.is_rejected(entry.name, entry.file.sha256):
            # Not an error of this manifest: other models in it still apply.
            self._report(
                "rejected",
                "this model was rolled back on this device before",
                model=entry,
                manifest=manifest,
            )
            return False
        self._report("downloading", model=entry, manifest=manifest)
        part = self._store.download_path(entry.name, entry.file.sha256)
        url = self._url(entry.file.url)
        release.download(self._fetcher, url, entry.file, part, self._stop)  # hashed as it streams
        self._report("verifying", model=entry, manifest=manifest)
        try:
            labels = self._small(entry.labels) if entry.labels is not None else None
            model = self._tested(entry, target, part, labels)
        except UpdateError:
            part.unlink(missing_ok=True)  # rejected bytes must not be resumed or kept
            raise
        installed = self._store.install(entry.name, entry.version, entry.file.sha256, part, labels)
        try:
            policy = self._policy(target, installed)
        except UpdateError:
            self._store.discard(installed)
            raise
        self._store.activate(entry.name, installed)  # on disk before it serves: a crash rolls back
        info = ModelInfo(entry.name, entry.version, entry.file.sha256)
        target.pipeline.swap_model(model, info, policy)
        self._probation.start(target, installed)
        log.info("update: %s %s serving, on probation", entry.name, entry.version)
        return True

    def _tested(self, entry: ModelEntry, target: Target, path: Path, labels: bytes | None) -> Model:
        golden = None
        if entry.golden_input is not None:
            golden = self._golden_tensor(self._small(entry.golden_input), target)
        names = labels.decode("utf-8", "replace").splitlines() if labels else None
        return self_test(
            path,
            target.load,
            target.pipeline.model,
            golden=golden,
            golden_top1=entry.golden_top1,
            labels=names,
        )

    @staticmethod
    def _policy(target: Target, installed: InstalledModel) -> Policy | None:
        """The policy the new labels make, read from where they were installed
        (not yet active: a misfit is discarded before anything serves)."""
        if installed.labels is None or target.make_policy is None:
            return None
        try:
            return target.make_policy(installed.labels)
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
            sha = getattr(model, "sha256", None) or model.file.sha256
            payload["model"] = {"name": model.name, "version": model.version, "sha256": sha[:12]}
        level = logging.WARNING if state in ("rejected", "failed", "rolled_back") else logging.INFO
        log.log(level, "update: %s%s", state, f": {reason}" if reason else "")
        self._report_to(payload)
        return state

"""The update manager: polls the signed manifest, verifies, downloads, self-tests,
installs, swaps the model into its running pipeline, and commits it only after a
healthy probation (or rolls it back). Its one thread owns all of that."""

from __future__ import annotations

import hashlib
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
    ModelError,
    SelfTestError,
    UpdateError,
)
from edge_agent.model.preprocess import ImagePreprocessor
from edge_agent.model.runtime import Model
from edge_agent.mqtt.payloads import ModelInfo, utc_timestamp
from edge_agent.pipeline.policy import Policy
from edge_agent.pipeline.runner import Pipeline
from edge_agent.update.fetch import Fetcher
from edge_agent.update.manifest import (
    Manifest,
    ModelEntry,
    check_file,
    in_rollout,
    resolve_url,
    verify_manifest,
)
from edge_agent.update.selftest import ModelLoader, self_test
from edge_agent.update.store import InstalledModel, ModelStore

log = logging.getLogger(__name__)

MAX_SIGNATURE_BYTES = 4096
MAX_SMALL_FILE_BYTES = 10_000_000  # labels and golden inputs
NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class UpdateOptions:
    manifest_url: str
    keys: tuple[Ed25519PublicKey, ...]
    device_id: str
    interval: float = 3600.0
    jitter: float = 0.1  # +/- this fraction of the interval, so a fleet does not poll in step
    probation_inferences: int = 20
    probation_seconds: float = 300.0


@dataclass(frozen=True)
class Target:
    """A running pipeline whose model is the manifest's model `name`."""

    name: str
    pipeline: Pipeline
    load: ModelLoader
    configured: tuple[Path, ModelInfo]  # what to fall back to when nothing installed is left
    # The pipeline's policy for a labels file; None: the policy does not use labels.
    make_policy: Callable[[Path | None], Policy] | None = None


@dataclass
class Probation:
    target: Target
    model: InstalledModel
    started: float
    inferences: int
    errors: int


Reporter = Callable[[dict[str, Any]], None]


class UpdateManager:
    """`run` is the thread body; `check_now` asks for a check (the cmd/update command)."""

    def __init__(
        self,
        options: UpdateOptions,
        fetcher: Fetcher,
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
        self._probation: dict[str, Probation] = {}

    def check_now(self) -> None:
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        next_check = time.monotonic() + random.uniform(0, 5)  # noqa: S311 - spread start-up checks
        while not stop.is_set():
            if self._wake.is_set() or time.monotonic() >= next_check:
                self._wake.clear()
                self.check()
                next_check = time.monotonic() + self._interval()
            self.watch_probation()
            self._wake.wait(1.0)

    def _interval(self) -> float:
        spread = self.options.interval * self.options.jitter
        return self.options.interval + random.uniform(-spread, spread)  # noqa: S311

    def check(self) -> str:
        """One poll; returns the final state reported ("unchanged", "committed", ...)."""
        try:
            return self._check()
        except (FetchError, OSError) as exc:
            return self._report("failed", f"{exc}; retrying at the next check")
        except UpdateError as exc:
            return self._report("rejected", str(exc))
        except EdgeAgentError as exc:
            return self._report("failed", str(exc))

    def _check(self) -> str:
        self._report("checking")
        etag, modified = self._store.etag()
        fetched = self._fetcher.get_manifest(
            self.options.manifest_url, etag=etag, last_modified=modified
        )
        if fetched is None:
            return self._report("unchanged")
        signature = self._fetcher.get_small(self.options.manifest_url + ".sig", MAX_SIGNATURE_BYTES)
        manifest = verify_manifest(
            fetched.body,
            signature,
            self.options.keys,
            trusted_version=self._store.trusted_version(),
            now=datetime.now(timezone.utc),
        )
        if manifest is None:
            # The trusted version again: only its exact bytes are. Other content
            # under the same number is a re-publication without a new version, or
            # a second manifest from the signer; either way it is refused.
            trusted = self._store.trusted_version()
            assert trusted is not None  # None never compares equal
            self._store.set_trusted(trusted, hashlib.sha256(fetched.body).hexdigest())
            self._store.set_etag(fetched.etag, fetched.last_modified)
            return self._report("up_to_date")
        if not in_rollout(self.options.device_id, manifest.rollout):
            return self._report(
                "skipped", "this device is not in the rollout group", manifest=manifest
            )
        installed = [self._apply(manifest, e) for e in manifest.models if e.name in self._targets]
        self._store.set_trusted(manifest.version, manifest.raw_sha256)
        self._store.set_etag(fetched.etag, fetched.last_modified)
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
        self._fetcher.download(self._url(entry.file.url), part, entry.file.length)
        self._report("verifying", model=entry, manifest=manifest)
        try:
            check_file(part.read_bytes(), entry.file)
            labels = self._small(entry.labels.url, entry.labels) if entry.labels else None
            model = self._tested(entry, target, part, labels)
            policy = self._policy(target, part, labels)
        except UpdateError:
            part.unlink(missing_ok=True)  # rejected bytes must not be resumed or kept
            raise
        installed = self._store.install(entry.name, entry.version, entry.file.sha256, part, labels)
        self._store.activate(entry.name, installed)  # on disk before it serves: a crash rolls back
        info = ModelInfo(entry.name, entry.version, entry.file.sha256)
        target.pipeline.swap_model(model, info, policy)
        stats = target.pipeline.stats
        self._probation[entry.name] = Probation(
            target, installed, time.monotonic(), stats.inferences, stats.model_errors
        )
        log.info("update: %s %s serving, on probation", entry.name, entry.version)
        return True

    def _tested(self, entry: ModelEntry, target: Target, path: Path, labels: bytes | None) -> Model:
        golden = None
        if entry.golden_input is not None:
            data = self._small(entry.golden_input.url, entry.golden_input)
            golden = self._golden_tensor(data, target)
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
    def _policy(target: Target, part: Path, labels: bytes | None) -> Policy | None:
        """The policy the new labels make, built before anything is installed."""
        if labels is None or target.make_policy is None:
            return None
        trial = part.with_name(part.name + ".labels")
        try:
            trial.write_bytes(labels)
            return target.make_policy(trial)
        except ConfigError as exc:
            raise SelfTestError(f"the new labels do not fit the pipeline's policy: {exc}") from exc
        finally:
            trial.unlink(missing_ok=True)

    @staticmethod
    def _golden_tensor(data: bytes, target: Target) -> np.ndarray:
        try:
            if data.startswith(NPY_MAGIC):
                return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))
            return ImagePreprocessor(target.pipeline.model.inputs[0]).prepare(data)
        except (EdgeAgentError, ValueError, OSError) as exc:
            raise SelfTestError(f"unusable golden input: {exc}") from exc

    def _small(self, url: str, ref: Any) -> bytes:
        data = self._fetcher.get_small(self._url(url), min(ref.length + 1, MAX_SMALL_FILE_BYTES))
        check_file(data, ref)
        return data

    def _url(self, relative: str) -> str:
        return resolve_url(self.options.manifest_url, relative)

    def watch_probation(self) -> None:
        """Commit a model after enough healthy inferences; roll back on errors."""
        for name, trial in list(self._probation.items()):
            stats = trial.target.pipeline.stats
            if stats.model_errors > trial.errors:
                self._rollback(trial, f"{stats.model_errors - trial.errors} inference error(s)")
            elif (
                stats.inferences - trial.inferences >= self.options.probation_inferences
                or time.monotonic() - trial.started >= self.options.probation_seconds
            ):
                self._store.commit(name)
                del self._probation[name]
                self._report("committed", model=trial.model)

    def _rollback(self, trial: Probation, reason: str) -> None:
        name = trial.target.name
        del self._probation[name]
        restored = self._store.rollback(name)
        path, info = trial.target.configured
        labels = None
        if restored is not None:
            path, info = restored.path, ModelInfo(name, restored.version, restored.sha256)
            labels = restored.labels
        try:
            make = trial.target.make_policy
            policy = make(labels) if make is not None else None
            trial.target.pipeline.swap_model(trial.target.load(path), info, policy)
        except (ModelError, ConfigError) as exc:
            log.error("update: cannot restore %s from %s: %s", name, path, exc)
        self._report("rolled_back", reason, model=trial.model)

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

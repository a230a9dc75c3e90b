"""One simulated device's update logic, for `fleetsim`: the real update client
code (`Fetcher`, `verify_manifest`, `in_rollout`, streamed length and hash checks) in the real
agent's order, without a model to run. Its outcome after an install is chosen
by `fail`: None commits, "reject" fails the self-test, "rollback" fails
probation, "errors" commits and then counts inference errors, "drift" commits
and then raises a drift alert. A model the device served healthily before (the
one it started with, one it committed without a fault) never fails: the simulated fault is the
new model's, so a return to the previous model works on every device.

Probation as the agent's (`update.probation`, `ModelStore.activate`): one trial
per model at a time; an install over a model still on probation replaces its
trial, and the rollback target stays the last model that proved healthy.

`check()` runs on a worker thread (it blocks on HTTP) and returns what to
publish; the event loop owns the MQTT side.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent import __version__
from edge_agent.errors import EdgeAgentError, FetchError, SelfTestError, UpdateError
from edge_agent.mqtt.fleetinfo import Board, info_payload
from edge_agent.mqtt.payloads import ModelInfo, utc_timestamp
from edge_agent.update.fetch import Fetcher
from edge_agent.update.manifest import in_rollout, resolve_url, verify_manifest
from edge_agent.update.protocols import Validators
from edge_agent.update.targeting import rollout_bucket

MAX_SIGNATURE_BYTES = 4096
MAX_MANIFEST_BYTES = 1_000_000  # the device's default update.max_manifest_bytes
FAIL_MODES = ("reject", "rollback", "errors", "drift")
BOARD = Board("aarch64", "Simulated Pi")


@dataclass
class SimDevice:
    device: str
    pipeline: str
    model: ModelInfo
    tags: dict[str, str]
    fail: str | None = None
    fail_only: str | None = None  # the sha256 of the one model that fails; None: any
    failing: str | None = None  # the fail mode of the model on probation now
    trusted: int | None = None
    salt: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    rejected: set[str] = field(default_factory=set)
    previous: ModelInfo | None = None  # what a rollback restores: the last healthy model
    trial: int = 0  # installs so far; a probation's verdict is for the latest one only
    on_probation: bool = False
    healthy: set[str] = field(default_factory=set)  # sha256s served healthily (never fail)
    errors: int = 0
    inferences: int = 0
    update: dict[str, Any] | None = None  # the last update status published
    polls: int = 0
    unchanged: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.healthy.add(self.model.sha256)

    def check(
        self, fetcher: Fetcher, url: str, keys: tuple[Ed25519PublicKey, ...]
    ) -> list[dict[str, Any]]:
        """One poll, as UpdateManager.check does it; returns the statuses to publish
        (the last one is the outcome; "installed" means probation started)."""
        self.polls += 1
        try:
            return self._check(fetcher, url, keys)
        except _SelfTestFailedError as exc:
            return [self.status("rejected", str(exc), model=exc.model)]
        except FetchError as exc:
            return [self.status("failed", f"{exc}; retrying at the next check")]
        except UpdateError as exc:
            return [self.status("rejected", str(exc))]
        except EdgeAgentError as exc:
            return [self.status("failed", str(exc))]

    def _check(
        self, fetcher: Fetcher, url: str, keys: tuple[Ed25519PublicKey, ...]
    ) -> list[dict[str, Any]]:
        since = Validators(self.etag, self.last_modified)
        fetched = fetcher.fetch(url, max_length=MAX_MANIFEST_BYTES, since=since)
        if fetched is None:
            self.unchanged += 1
            return []
        signed = fetcher.fetch(url + ".sig", max_length=MAX_SIGNATURE_BYTES)
        signature = signed.body if signed is not None else b""
        manifest = verify_manifest(
            fetched.body, signature, keys, trusted_version=self.trusted, now=_now()
        )
        if manifest is None:
            self.etag, self.last_modified = fetched.etag, fetched.last_modified
            return [self.status("up_to_date")]
        if not in_rollout(self.device, manifest.rollout):
            reason = "this device is not in the rollout group"
            return [self.status("skipped", reason, manifest_version=manifest.version)]
        reports = []
        for entry in manifest.models:
            if entry.name != self.model.name or entry.file.sha256 == self.model.sha256:
                continue
            if entry.file.sha256 in self.rejected:
                reason = "this model was rolled back on this device before"
                reports.append(self.status("rejected", reason, model=_info(entry)))
                continue
            # Bounded by the manifest's length and checked against its sha256 as it arrives.
            fetcher.fetch(
                resolve_url(url, entry.file.url),
                max_length=entry.file.length,
                sha256=entry.file.sha256,
            )
            failing = self.fail if self.fail_only in (None, entry.file.sha256) else None
            if entry.file.sha256 in self.healthy:
                failing = None  # the fault is a new model's, not one this device ran well
            if failing == "reject":
                reason = "self-test: the model gives a different top-1 on the golden input"
                raise _SelfTestFailedError(reason, _info(entry))
            with self._lock:  # probation_over runs on the event loop's thread
                if not self.on_probation:  # over a model on probation: keep the healthy one
                    self.previous = self.model
                self.model, self.failing = _info(entry), failing
                self.trial += 1
                self.on_probation = True
            reports.append(self.status("installed", manifest_version=manifest.version))
        self.trusted = manifest.version
        self.salt = manifest.rollout.salt if manifest.rollout else None
        self.etag, self.last_modified = fetched.etag, fetched.last_modified
        return reports or [self.status("up_to_date", manifest_version=manifest.version)]

    def probation_over(self, trial: int) -> dict[str, Any] | None:
        """The outcome of the probation that install number `trial` started; None
        when a later install replaced that trial (its own probation judges)."""
        with self._lock:
            if trial != self.trial or not self.on_probation:
                return None
            self.on_probation = False
            if self.failing == "rollback" and self.previous is not None:
                failed, self.model = self.model, self.previous
                self.rejected.add(failed.sha256)
                self.errors += 3
                return self.status("rolled_back", "3 inference error(s)", model=failed)
            if self.failing is None:
                self.healthy.add(self.model.sha256)
            return self.status("committed")

    def status(
        self,
        state: str,
        reason: str | None = None,
        *,
        manifest_version: int | None = None,
        model: ModelInfo | None = None,
    ) -> dict[str, Any]:
        shown = model or (self.model if state in ("installed", "committed") else None)
        self.update = {
            "v": 1,
            "device": self.device,
            "state": state,
            "reason": reason,
            "manifest_version": manifest_version,
            "model": None if shown is None else shown.as_dict(),
            "ts": utc_timestamp(time.time()),
        }
        return self.update

    def info(self) -> dict[str, Any]:
        return info_payload(
            device=self.device,
            agent_version=__version__,
            runtime="simulated",
            board=BOARD,
            models={self.pipeline: self.model},
            manifest_version=self.trusted,
            bucket=None if self.salt is None else rollout_bucket(self.salt, self.device),
            tags=self.tags,
            epoch=time.time(),
        )

    def state(self) -> dict[str, Any]:
        return {
            "v": 1,
            "device": self.device,
            "pipeline": self.pipeline,
            "state": "normal",
            "since": None,
            "model": self.model.as_dict(),
            "inputs": self.inferences * 64,
            "dropped": 0,
            "errors": self.errors,
            "inferences": self.inferences,
            "events": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "bandwidth_ratio": None,
        }

    def alert(self) -> dict[str, Any]:
        return {
            "v": 1,
            "device": self.device,
            "pipeline": self.pipeline,
            "ts": utc_timestamp(time.time()),
            "state": "drift",
            "measure": "confidence",
            "score": 0.31,
            "worst": "confidence",
            "details": {},
            "model": self.model.as_dict(),
        }


class _SelfTestFailedError(SelfTestError):
    """A self-test failure naming the model, reported like the agent's."""

    def __init__(self, reason: str, model: ModelInfo) -> None:
        super().__init__(reason)
        self.model = model


def _info(entry: Any) -> ModelInfo:
    return ModelInfo(entry.name, entry.version, entry.file.sha256)


def _now() -> datetime:
    return datetime.now(timezone.utc)

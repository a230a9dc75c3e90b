"""Probation: a model just swapped in is committed after enough healthy
inferences (or time), and rolled back at its first inference error to the
previous installed model, or to the configured one when none is left."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.errors import ConfigError, ModelError
from edge_agent.mqtt.payloads import ModelInfo
from edge_agent.update.protocols import Target
from edge_agent.update.store import InstalledModel, ModelStore

log = logging.getLogger(__name__)

# (state, reason, model): how a verdict is reported
Verdict = Callable[[str, str | None, InstalledModel], object]


@dataclass
class Trial:
    target: Target
    model: InstalledModel
    started: float
    inferences: int
    errors: int


class Probation:
    """The models on probation, one per target; `watch` judges them."""

    def __init__(
        self, store: ModelStore, report: Verdict, *, inferences: int, seconds: float
    ) -> None:
        self._store = store
        self._report = report
        self._inferences = inferences
        self._seconds = seconds
        self._trials: dict[str, Trial] = {}

    def start(self, target: Target, model: InstalledModel) -> None:
        """`model` serves from now on; its health is counted from here."""
        stats = target.pipeline.stats
        self._trials[target.name] = Trial(
            target, model, time.monotonic(), stats.inferences, stats.model_errors
        )

    def watch(self) -> None:
        """Commit a model after enough healthy inferences; roll back on errors."""
        for name, trial in list(self._trials.items()):
            stats = trial.target.pipeline.stats
            if stats.model_errors > trial.errors:
                self._rollback(trial, f"{stats.model_errors - trial.errors} inference error(s)")
            elif (
                stats.inferences - trial.inferences >= self._inferences
                or time.monotonic() - trial.started >= self._seconds
            ):
                self._store.commit(name)
                del self._trials[name]
                self._report("committed", None, trial.model)

    def _rollback(self, trial: Trial, reason: str) -> None:
        name = trial.target.name
        del self._trials[name]
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
        self._report("rolled_back", reason, trial.model)

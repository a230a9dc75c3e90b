"""An audio pipeline: PCM chunks -> Listener (frontend, model, wake-word rule) -> MQTT.

Audio is read and handled in turn on the pipeline's thread (a 100 ms chunk is a
few inferences of a tiny model): every chunk counts, none is skipped as stale.
A chunk may complete several inferences; each one's decision is published.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edge_agent.errors import InputError, ModelError
from edge_agent.model.runtime import Model
from edge_agent.mqtt.payloads import Decision, ModelInfo
from edge_agent.pipeline.audio.decisions import WakeWordDecisions
from edge_agent.pipeline.audio.listener import Heard, Listener
from edge_agent.pipeline.policy import Policy
from edge_agent.pipeline.runner import Pipeline, limited
from edge_agent.sources.base import Audio, Item


class ListeningPipeline(Pipeline):
    """A `Pipeline` around a `Listener`. `rebuild` makes a listener for another model
    (an update); the policy is a ``WakeWordDecisions`` for streaming models (whose
    rule runs inside the listener) or a ``ClassifiedAudio`` for window models."""

    def __init__(
        self,
        name: str,
        *,
        listener: Listener,
        rebuild: Callable[[Model], Listener],
        **parts: Any,
    ) -> None:
        self.listener = listener
        self._rebuild = rebuild
        super().__init__(name, model=listener.model, **parts)

    @property
    def policy(self) -> Policy:
        return self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        """A new wake-word policy (a reload) goes into the listener, where it runs."""
        self._policy = policy
        if isinstance(policy, WakeWordDecisions):
            self.listener.policy = policy.wake

    def _install(self, model: Model, info: ModelInfo) -> None:
        if model is not self.listener.model:
            listener = self._rebuild(model)  # first: a refused model changes nothing
            if isinstance(self._policy, WakeWordDecisions):
                listener.policy = self._policy.wake
            self.listener = listener
        self._serve(model, info)
        self._image = None

    def process(self, item: Item) -> Decision | None:
        """One chunk through the listener; each decision it completes is published."""
        if not isinstance(item, Audio):
            self.stats.add(input_errors=1)
            limited.warning(f"{self.name}-input", "%s: not audio: %s", self.name, item.origin)
            return None
        heard = self._hear(item)
        last = None
        for result in heard:
            try:
                decision = self.policy.decide(result, time.monotonic())
            except ValueError as exc:
                self.stats.add(model_errors=1)
                limited.error(f"{self.name}-policy", "%s: unusable output: %s", self.name, exc)
                continue
            if decision is not None:
                self._publish(decision, item.captured)
                last = decision
        return last

    def _hear(self, item: Audio) -> list[Heard]:
        with self._swap_lock:
            start = time.perf_counter()
            try:
                heard = self.listener.hear(item)
            except InputError as exc:
                self.stats.add(input_errors=1)
                limited.warning(
                    f"{self.name}-input",
                    "%s: skipped audio from %s: %s",
                    self.name,
                    item.origin,
                    exc,
                )
                return []
            except ModelError as exc:
                self.stats.add(model_errors=1)
                limited.error(f"{self.name}-model", "%s: %s", self.name, exc)
                return []
            if heard:  # the cost of this chunk's frontend and inferences, per inference
                per_call = (time.perf_counter() - start) * 1000.0 / len(heard)
                self.stats.latencies_ms.extend([per_call] * len(heard))
                self.stats.add(inferences=len(heard))
            return heard

"""One audio pipeline's inner loop: chunks -> frontend -> model runner -> wake-word policy.

`Listener.hear` takes the `Audio` chunks a source yields and returns what the
model said for each inference; a chunk of a new stream resets the frontend, the
model's state and the policy first. Streaming models come with the wake-word
policy (their `Heard.event`); a window model's outputs go to whatever policy the
pipeline has (classification), with `Heard.offset_s` as the time in the stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_agent.errors import ConfigError, InputError, ModelError
from edge_agent.model.audio.frontend import WINDOW_MS, Frontend, FrontendOptions, make_frontend
from edge_agent.model.audio.streaming import (
    ModelKind,
    StreamingRunner,
    WakeWordManifest,
    WindowRunner,
    model_kind,
    read_model_bytes,
)
from edge_agent.model.runtime import Model, RuntimeName
from edge_agent.pipeline.audio.policy import WakeEvent, WakeWordOptions, WakeWordPolicy
from edge_agent.sources.base import Audio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListenerOptions:
    """What a config says beyond the model; None means: from the manifest."""

    frontend: FrontendOptions = field(default_factory=FrontendOptions)
    word: str | None = None
    probability_cutoff: float | None = None
    sliding_window_size: int | None = None
    refractory: float = 2.0
    hop: int = 1  # window models: feature rows (10 ms each) between two runs
    runtime: RuntimeName = "auto"
    num_threads: int = 1  # a wake-word model is tiny: more threads only add overhead


@dataclass(frozen=True)
class Heard:
    """One inference: when in the stream its last feature window ended, the model's
    first output, and the wake-word event it completed, if any."""

    offset_s: float
    output: np.ndarray
    event: WakeEvent | None = None


class Listener:
    def __init__(
        self,
        frontend: Frontend,
        runner: StreamingRunner | WindowRunner,
        policy: WakeWordPolicy | None,
    ) -> None:
        if runner.features != frontend.channels:
            raise ModelError(
                f"{runner.model.label}: takes {runner.features} features per frame, "
                f"the frontend computes {frontend.channels}"
            )
        self.frontend = frontend
        self.runner = runner
        self.policy = policy
        self._stream: int | None = None
        self._window = frontend.rate * WINDOW_MS // 1000

    @property
    def kind(self) -> ModelKind:
        return "streaming" if isinstance(self.runner, StreamingRunner) else "window"

    @property
    def model(self) -> Model:
        return self.runner.model

    def hear(self, chunk: Audio) -> list[Heard]:
        """Everything this chunk completes; InputError for audio the model cannot use."""
        if chunk.rate != self.frontend.rate:
            raise InputError(f"audio at {chunk.rate} Hz; the frontend needs {self.frontend.rate}")
        if chunk.stream != self._stream:
            if self._stream is not None:
                self.reset()
            self._stream = chunk.stream
        results = self.runner.push(self.frontend.features(chunk.values))
        return [self._heard(rows, output) for rows, output in results]

    def _heard(self, rows: int, output: np.ndarray) -> Heard:
        offset = ((rows - 1) * self.frontend.step + self._window) / self.frontend.rate
        if self.policy is None:
            return Heard(offset, output)
        event = self.policy.update(float(output.reshape(-1)[0]), offset)
        return Heard(offset, output, event)

    def reset(self) -> None:
        """A new stream: clean frontend, model state and policy."""
        self.frontend.reset()
        self.runner.reset()
        if self.policy is not None:
            self.policy.reset()


def build_listener(model: str | Path, options: ListenerOptions | None = None) -> Listener:
    """A listener for a microWakeWord manifest (.json) or a .tflite audio model."""
    options = options or ListenerOptions()
    path = Path(model)
    manifest = WakeWordManifest.read(path) if path.suffix.lower() == ".json" else None
    model_path = manifest.model if manifest else path
    content = read_model_bytes(model_path)
    label = str(model_path)

    def load() -> Model:
        return Model.load(
            content, runtime=options.runtime, num_threads=options.num_threads, label=label
        )

    first = load()
    kind = model_kind(first, content)
    frontend = make_frontend(options.frontend)
    if kind == "window":
        if manifest is not None:
            raise ModelError(f"{path}: the manifest's model keeps no state: not a microWakeWord")
        return Listener(frontend, WindowRunner(first, options.hop), None)
    policy = WakeWordPolicy(wake_options(manifest, model_path, options))
    loaded = iter([first])  # the runner's first load is the model already loaded
    return Listener(frontend, StreamingRunner(lambda: next(loaded, None) or load()), policy)


def wake_options(
    manifest: WakeWordManifest | None, model_path: Path, options: ListenerOptions
) -> WakeWordOptions:
    word = options.word or (manifest.word if manifest else model_path.stem.replace("_", " "))
    cutoff = options.probability_cutoff or (manifest.probability_cutoff if manifest else None)
    window = options.sliding_window_size or (manifest.sliding_window_size if manifest else None)
    defaults = WakeWordOptions(word=word)
    try:
        return WakeWordOptions(
            word=word.lower(),
            probability_cutoff=cutoff or defaults.probability_cutoff,
            sliding_window_size=window or defaults.sliding_window_size,
            refractory=options.refractory,
        )
    except ValueError as exc:
        raise ConfigError(f"wake word {word!r}: {exc}") from exc

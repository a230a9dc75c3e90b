"""Audio models: microWakeWord manifests, streaming runners and window runners.

A streaming model (microWakeWord) takes [1, S, 40]: the S newest feature rows,
each row once; it keeps what it heard before in resource variables inside the
interpreter. Those have no reset in the Python APIs, so a new stream gets a new
interpreter (from bytes kept in memory: no disk read, ~1 ms for a 60 kB model).
A window model (keyword spotting, sound events) takes [1, F, 40] or
[1, F, 40, 1], the last F rows, and runs every `hop` rows.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_agent.errors import ModelError
from edge_agent.model.flatbuffer import MODEL_OPERATOR_CODES, _Reader
from edge_agent.model.runtime import Model

VAR_HANDLE = 142  # BuiltinOperator in the TFLite schema: the model keeps state
_OPCODE_DEPRECATED, _OPCODE_BUILTIN = 0, 3  # OperatorCode fields
ModelKind = Literal["streaming", "window"]


@dataclass(frozen=True)
class WakeWordManifest:
    """A microWakeWord JSON manifest (version 1 or 2), as ESPHome publishes them."""

    path: Path
    word: str
    model: Path  # resolved relative to the manifest
    probability_cutoff: float
    sliding_window_size: int
    feature_step_ms: int

    @classmethod
    def read(cls, path: str | Path) -> WakeWordManifest:
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: cannot read the wake-word manifest: {exc}") from exc
        try:
            return cls._parse(path, doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: not a microWakeWord manifest: {_reason(exc)}") from exc

    @classmethod
    def _parse(cls, path: Path, doc: Any) -> WakeWordManifest:
        micro = doc["micro"]
        window = micro.get("sliding_window_size", micro.get("sliding_window_average_size"))
        if window is None:
            raise KeyError("sliding_window_size")
        manifest = cls(
            path=path,
            word=str(doc["wake_word"]),
            model=path.parent / str(doc["model"]),
            probability_cutoff=float(micro["probability_cutoff"]),
            sliding_window_size=int(window),
            feature_step_ms=int(micro.get("feature_step_size", 10)),
        )
        if not 0.0 < manifest.probability_cutoff <= 1.0 or manifest.sliding_window_size < 1:
            raise ValueError("probability_cutoff must be in (0, 1], sliding_window_size >= 1")
        if manifest.feature_step_ms != 10:
            raise ValueError(
                f"feature_step_size {manifest.feature_step_ms} ms: only 10 is supported"
            )
        return manifest


def _reason(exc: Exception) -> str:
    return f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)


def read_model_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror or exc}") from exc


def is_stateful(content: bytes) -> bool:
    """Whether the model uses resource variables (VAR_HANDLE): a streaming model.
    `content` passed `check_tflite` (Model.load checks it first)."""
    reader = _Reader(content)
    try:
        model = reader.table(reader.u32(0))
        for code in reader.tables(model, MODEL_OPERATOR_CODES):
            for field, fmt in ((_OPCODE_BUILTIN, "<i"), (_OPCODE_DEPRECATED, "<b")):
                if field in code and struct.unpack_from(fmt, content, code[field])[0] == VAR_HANDLE:
                    return True
    except (ValueError, struct.error):
        return False
    return False


def model_kind(model: Model, content: bytes) -> ModelKind:
    """streaming or window, from the model: its state and its input shape."""
    shape = model.inputs[0].shape
    if len(model.inputs) != 1 or len(shape) not in (3, 4) or shape[0] != 1:
        raise ModelError(f"{model.label}: input {list(shape)} is not [1, frames, features(, 1)]")
    if len(shape) == 4 and shape[3] != 1:
        raise ModelError(f"{model.label}: input {list(shape)} is not [1, frames, features, 1]")
    return "streaming" if is_stateful(content) else "window"


class StreamingRunner:
    """Feeds S new feature rows per call to a stateful model; `reset` re-creates it."""

    def __init__(self, load: Callable[[], Model]) -> None:
        self._load = load
        self.model = load()
        shape = self.model.inputs[0].shape
        self.frames_per_call = shape[1]
        self.features = math.prod(shape[2:])
        self._rows = np.empty((self.frames_per_call, self.features), dtype=np.float32)
        self._filled = 0
        self.frames = 0  # rows seen in this stream

    def push(self, features: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(rows seen so far, first output) for each call these rows complete."""
        results = []
        for row in features:
            self._rows[self._filled] = row
            self._filled += 1
            self.frames += 1
            if self._filled == self.frames_per_call:
                self._filled = 0
                results.append((self.frames, self.model.infer(self._rows)[0]))
        return results

    def reset(self) -> None:
        self.model = self._load()  # the only way to clear the resource variables
        self._filled = 0
        self.frames = 0


class WindowRunner:
    """Runs a stateless model on the last F rows, every `hop` rows once F are in."""

    def __init__(self, model: Model, hop: int) -> None:
        if hop < 1:
            raise ModelError(f"{model.label}: hop must be >= 1 frame, not {hop}")
        self.model = model
        shape = model.inputs[0].shape
        self.window = shape[1]
        self.features = shape[2]
        self._hop = hop
        self._ring = np.zeros((2 * self.window, self.features), dtype=np.float32)
        self._end = 0  # rows [end - window, end) of the ring are the newest
        self.frames = 0

    def push(self, features: np.ndarray) -> list[tuple[int, np.ndarray]]:
        results = []
        for row in features:
            if self._end == self._ring.shape[0]:  # keep the newest window-1 rows, at the front
                keep = self.window - 1
                self._ring[:keep] = self._ring[self._end - keep : self._end]
                self._end = keep
            self._ring[self._end] = row
            self._end += 1
            self.frames += 1
            due = (self.frames - self.window) % self._hop == 0
            if self.frames >= self.window and due:
                window = self._ring[self._end - self.window : self._end]
                results.append((self.frames, self.model.infer(window)[0]))
        return results

    def reset(self) -> None:
        self._end = 0
        self.frames = 0

"""A shadow model: a candidate run beside the serving one on 1 input in N, on its own
low-priority thread behind a small queue, so it never delays a serving decision.
Its decisions are never published; what is reported is how it compares: top-1
agreement (for detectors: the same count per label, see shadow_detect.py), mean
confidence and latency of both, errors. A shadow that errors is
dropped, with the reason in its report, and the serving model never notices.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge_agent.errors import EdgeAgentError
from edge_agent.model.runtime import Model
from edge_agent.mqtt.payloads import ModelInfo
from edge_agent.sources.base import Item
from edge_agent.util.percentile import percentiles

log = logging.getLogger(__name__)

LATENCIES = 200
LOW_PRIORITY = 19


@dataclass(frozen=True)
class ShadowOptions:
    every: int = 10
    queue: int = 2
    report_interval: float = 60.0


@dataclass(frozen=True)
class Top1:
    label: str
    score: float


@dataclass(frozen=True)
class ShadowJob:
    item: Item
    serving: Top1
    serving_ms: float


def top1(scores: np.ndarray, labels: list[str] | None) -> Top1:
    """The best class: by label name when there are labels (models with different
    label files compare by name), else by index."""
    flat = np.asarray(scores, dtype=np.float32).reshape(-1)
    index = int(np.argmax(flat))
    name = labels[index] if labels is not None and index < len(labels) else str(index)
    return Top1(name, float(flat[index]))


class ShadowReader(Protocol):
    """How the shadow reads its own model: an input -> its input tensor and what
    reading the outputs needs; the outputs -> a verdict comparable with the
    serving model's (equal `label`s agree)."""

    def prepare(self, item: Item) -> tuple[np.ndarray, Any]: ...

    def verdict(self, outputs: list[np.ndarray], context: Any) -> Top1: ...


class ClassifierReader:
    """A classifier's verdict: its top-1 class, by name when it has labels."""

    def __init__(self, prepare: Callable[[Item], np.ndarray], labels: list[str] | None) -> None:
        self._prepare, self._labels = prepare, labels

    def prepare(self, item: Item) -> tuple[np.ndarray, None]:
        return self._prepare(item), None

    def verdict(self, outputs: list[np.ndarray], _context: Any) -> Top1:
        return top1(outputs[0], self._labels)


class ShadowStats:
    def __init__(self) -> None:
        self.compared = 0
        self.agreed = 0
        self.serving_confidence = 0.0
        self.shadow_confidence = 0.0
        self.serving_ms: deque[float] = deque(maxlen=LATENCIES)
        self.shadow_ms: deque[float] = deque(maxlen=LATENCIES)
        self.errors = 0
        self.skipped = 0  # the shadow was still busy: the input was not compared

    def report(self) -> dict[str, Any]:
        n = self.compared
        return {
            "compared": n,
            "agreement": round(self.agreed / n, 4) if n else None,
            "confidence": {
                "serving": round(self.serving_confidence / n, 4) if n else None,
                "shadow": round(self.shadow_confidence / n, 4) if n else None,
            },
            "latency_ms": {"serving": _p50(self.serving_ms), "shadow": _p50(self.shadow_ms)},
            "errors": self.errors,
            "skipped": self.skipped,
        }


def _p50(samples: deque[float]) -> float | None:
    values = percentiles(list(samples), (50,))
    return round(values[0], 2) if values else None


class ShadowRunner:
    """`offer` on the pipeline's thread (cheap: a counter and a non-blocking put);
    `run` is the shadow's thread body. A classifier shadow reads its outputs with
    `labels` and `prepare`; any other kind brings its `reader`."""

    def __init__(
        self,
        model: Model,
        *,
        labels: list[str] | None = None,
        prepare: Callable[[Item], np.ndarray] | None = None,
        reader: ShadowReader | None = None,
        options: ShadowOptions,
        publish: Callable[[dict[str, Any]], None],
        on_disagree: Callable[[ShadowJob, Top1], None] | None = None,
        name: str = "shadow",
        info: ModelInfo | None = None,
    ) -> None:
        self.model = model
        self.info = info
        self.name = name
        self.options = options
        self.stats = ShadowStats()
        self.dropped: str | None = None  # why the shadow was dropped
        if reader is None:
            if prepare is None:
                raise TypeError("a shadow needs a reader, or prepare for a classifier")
            reader = ClassifierReader(prepare, labels)
        self._reader = reader
        self._publish = publish
        self._on_disagree = on_disagree
        self._queue: queue.Queue[ShadowJob] = queue.Queue(maxsize=options.queue)
        self._seen = 0
        self._lock = threading.Lock()

    def due(self) -> bool:
        """Whether this input is the 1 in N to compare (counts every call)."""
        self._seen += 1
        return self.dropped is None and self._seen % self.options.every == 0

    def offer(self, job: ShadowJob) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self.stats.skipped += 1

    def report(self) -> dict[str, Any]:
        with self._lock:
            body = self.stats.report()
        return {"state": "dropped" if self.dropped else "running", "reason": self.dropped, **body}

    def run(self, stop: threading.Event) -> None:
        _lower_priority()
        next_report = time.monotonic() + self.options.report_interval
        while not stop.is_set():
            try:
                job = self._queue.get(timeout=min(0.5, self.options.report_interval))
            except queue.Empty:
                job = None
            if job is not None and self.dropped is None:
                self.compare(job)
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + self.options.report_interval
                self._send()

    def _send(self) -> None:
        try:
            self._publish(self.report())
        except Exception as exc:  # reporting is best effort; the shadow goes on
            log.error("%s: report not sent: %s: %s", self.name, type(exc).__name__, exc)

    def compare(self, job: ShadowJob) -> None:
        """Run the shadow on the job's input and count the comparison."""
        try:
            tensor, context = self._reader.prepare(job.item)
            start = time.perf_counter()
            outputs = self.model.infer(tensor)
            elapsed = (time.perf_counter() - start) * 1000.0
            theirs = self._reader.verdict(outputs, context)
        except (EdgeAgentError, ValueError, IndexError) as exc:
            self._drop(f"{type(exc).__name__}: {exc}")
            return
        agreed = theirs.label == job.serving.label
        with self._lock:
            s = self.stats
            s.compared += 1
            s.agreed += agreed
            s.serving_confidence += job.serving.score
            s.shadow_confidence += theirs.score
            s.serving_ms.append(job.serving_ms)
            s.shadow_ms.append(elapsed)
        if not agreed and self._on_disagree is not None:
            self._on_disagree(job, theirs)

    def _drop(self, reason: str) -> None:
        with self._lock:
            self.stats.errors += 1
        self.dropped = reason
        log.error("%s: dropped, the serving model carries on: %s", self.name, reason)
        self._send()


def _lower_priority() -> None:
    """Linux: a thread has its own nice value; the shadow yields the CPU to serving."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOW_PRIORITY)
    except (OSError, AttributeError):
        log.debug("shadow: cannot lower the thread's priority here")

"""Measured sizing: what an invoke() and a frame decode cost on this board, now.

A model's size says little about how it runs: a uint8 MobileNet quantized the
TF1 way runs no faster on two threads than on one, while a similar int8 one
gains 1.6x. So a pipeline left on auto times a few invokes on one thread and
on every core of its budget (`measure_invokes`), and the decoding of its first
frames (`DecodeMeter`); edge_agent.model.sizing turns the numbers into workers
and threads.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from edge_agent.model.runtime import Model

log = logging.getLogger(__name__)

WARMUP_INVOKES = 2  # the first invoke() packs weights and touches the arena
MIN_INVOKES = 3
MAX_INVOKES = 10
INVOKE_BUDGET_S = 0.1  # per thread count measured; a large detector stops at MIN_INVOKES
CALIBRATION_FRAMES = 8  # frames whose decoding is timed before sizing

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class InvokeTimes:
    """Seconds per invoke."""

    wall: float  # the fastest: a shared machine's preemptions only ever add to it
    cpu: float  # the median of the calling thread's CPU: all of it on one thread


def time_invokes(model: Model) -> InvokeTimes:
    """Wall and thread CPU time of invoke() on a zero tensor of the input's type."""
    tensors = [np.zeros(spec.shape, spec.dtype) for spec in model.inputs]
    for _ in range(WARMUP_INVOKES):
        model.infer(*tensors)
    walls: list[float] = []
    cpus: list[float] = []
    deadline = time.perf_counter() + INVOKE_BUDGET_S
    while len(walls) < MIN_INVOKES or (len(walls) < MAX_INVOKES and time.perf_counter() < deadline):
        cpu, wall = time.thread_time(), time.perf_counter()
        model.infer(*tensors)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.thread_time() - cpu)
    return InvokeTimes(min(walls), statistics.median(cpus))


@dataclass(frozen=True)
class InvokeCosts:
    one: InvokeTimes  # on one thread
    many: InvokeTimes | None  # on `threads` threads; None when the budget is one core
    threads: int


def measure_invokes(model: Model, threads: int) -> tuple[InvokeCosts, Model | None]:
    """Time `model` (loaded on one thread) and a copy on `threads` threads; the copy
    is returned for a caller that ends up wanting those threads (None if threads <= 1)."""
    one = time_invokes(model)
    if threads <= 1:
        return InvokeCosts(one, None, 1), None
    wide = model.copy(num_threads=threads)
    return InvokeCosts(one, time_invokes(wide), threads), wide


class DecodeMeter(Generic[Item, Result]):
    """Wraps a pipeline's prepare step: the thread CPU time of its first `frames`
    calls (Pillow decodes on the calling thread, so this is all of the decode)."""

    def __init__(self, prepare: Callable[[Item], Result], frames: int = CALIBRATION_FRAMES) -> None:
        self._prepare = prepare
        self._wanted = frames
        self._samples: list[float] = []
        self._lock = threading.Lock()
        self.ready = threading.Event()

    def __call__(self, item: Item) -> Result:
        if self.ready.is_set():
            return self._prepare(item)
        start = time.thread_time()
        result = self._prepare(item)
        spent = time.thread_time() - start
        with self._lock:
            if result is not None and len(self._samples) < self._wanted:
                self._samples.append(spent)
                if len(self._samples) == self._wanted:
                    self.ready.set()
        return result

    @property
    def seconds(self) -> float:
        """Median CPU per decoded frame so far (0.0 before the first)."""
        with self._lock:
            return statistics.median(self._samples) if self._samples else 0.0


def resident_mb() -> float:
    """This process's resident memory (VmRSS), 10^6 bytes; 0.0 where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return 0.0

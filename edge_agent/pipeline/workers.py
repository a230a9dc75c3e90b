"""Interpreter workers: K interpreters run consecutive frames of one camera pipeline.

An interpreter runs one invoke() at a time, and some models (a uint8 MobileNet
quantized the TF1 way) run no faster on two threads than on one: the only way
to use every core on them is several interpreters at once, each on its own
frame. Frames are numbered as the workers take them from decode-ahead (in the
camera's order), and their results reach the policy in that order through a
`ReorderBuffer`: the worker that completes the oldest outstanding frame hands
over every result now due, so a policy's debounce and smoothing still see the
scene as the camera did. One extra copy of the model per worker (the model's
bytes are shared, its arena and packed weights are not).

A worker that fails outside the errors the pipeline handles (a bug, not a bad
frame) gives up its frame (counted as a model error) and stops; the others
carry on, and when none is left the pipeline stops with an error logged.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from edge_agent.model.calibrate import resident_mb
from edge_agent.model.runtime import Model
from edge_agent.pipeline.decode_ahead import END, Ready
from edge_agent.sources.base import Item

log = logging.getLogger(__name__)

T = TypeVar("T")
TAKE_TIMEOUT = 0.5  # a worker waiting for a frame gives way this often (pause, stop)
PAUSE_TIMEOUT = 10.0  # a swap waits at most this long for the frames in flight

Outputs = list[np.ndarray]
# What a decoder prepared for a frame: a tensor, or (detection) the tensor and where
# the frame sits in it; the pipeline knows which.
Invoke = Callable[[Model, Item, Any], Outputs | None]  # None: the frame is skipped
Decide = Callable[[Item, Any, Outputs], object]


class ReorderBuffer(Generic[T]):
    """Results in frame order. `put(n, result)` files frame n's result (None: the
    frame produced nothing) and returns the results now due, oldest first. Pure."""

    def __init__(self, first: int = 0) -> None:
        self._next = first
        self._held: dict[int, T | None] = {}

    @property
    def next(self) -> int:
        """The oldest frame not yet handed over: every frame before it was."""
        return self._next

    @property
    def waiting(self) -> int:
        """Results held back for an older frame still out."""
        return len(self._held)

    def put(self, number: int, result: T | None) -> list[T]:
        if number < self._next or number in self._held:
            raise ValueError(f"frame {number} was already handed over or filed")
        self._held[number] = result
        due: list[T] = []
        while self._next in self._held:
            value = self._held.pop(self._next)
            self._next += 1
            if value is not None:
                due.append(value)
        return due


@dataclass(frozen=True)
class Job:
    number: int
    item: Item
    tensor: Any  # what the decoder prepared
    model: Model


class Crew:
    """The interpreter workers of one camera pipeline. `run` is the verb: it returns
    when the source ends (True), `stop` is set, or every worker is dead (False)."""

    def __init__(
        self,
        name: str,
        models: Sequence[Model],
        *,
        invoke: Invoke,
        decide: Decide,
        failed: Callable[[], None],
    ) -> None:
        self.name = name
        self._models = tuple(models)
        self._invoke = invoke
        self._decide = decide
        self._failed = failed  # counts a frame lost to a worker's failure
        self._take: Callable[[float], Ready | None] = _nothing
        self._stop = threading.Event()
        self._take_lock = threading.Lock()
        self._deliver_lock = threading.Lock()
        self._state = threading.Condition()
        self._buffer: ReorderBuffer[tuple[Item, Any, Outputs]] = ReorderBuffer()
        self._numbered = 0  # frames taken (and numbered) so far
        self._delivered = 0  # frames handed over or skipped, in order
        self._pausing = 0
        self._ended = False
        self._threads: dict[int, threading.Thread] = {}
        self._install_lock = threading.Lock()  # one model change (swap, resize) at a time
        self.lost = 0  # frames lost to failed workers
        self.frames = [0] * len(self._models)  # frames each worker took

    @property
    def models(self) -> tuple[Model, ...]:
        return self._models

    @property
    def workers(self) -> int:
        return len(self._models)

    def start(self, take: Callable[[float], Ready | None], stop: threading.Event) -> None:
        self._take, self._stop = take, stop
        with self._state:
            for index in range(len(self._models)):
                self._spawn(index)

    def wait(self, timeout: float) -> bool:
        """True once the crew is done: source ended, stopped, or no worker left."""
        with self._state:
            alive = [t for t in self._threads.values() if t.is_alive()]
        for thread in alive:
            thread.join(timeout / len(alive))
        return self._alive() == 0

    @property
    def ended(self) -> bool:
        return self._ended

    def join(self, timeout: float) -> None:
        for thread in list(self._threads.values()):
            thread.join(timeout)

    # -- changing the models --------------------------------------------------------------

    def swap(self, model: Model, apply: Callable[[], None]) -> None:
        """Serve `model` on every worker (copies on the threads the workers have now),
        installed between two frames together with `apply` (the pipeline's own part
        of a swap: its model info, policy, drift monitor)."""
        with self._install_lock:
            threads = self._models[0].num_threads
            first = model if model.num_threads == threads else model.copy(threads)
            models = [first, *_warm(first.copy() for _ in range(len(self._models) - 1))]
            self._replace(models, apply)

    def restaff(self, workers: int, threads: int, spare: Model | None = None) -> tuple[int, float]:
        """Run `workers` interpreters of `threads` threads each from now on, reusing
        the models that fit (and `spare`, a copy of the model serving). Loading
        happens while the frames keep flowing. Returns how many models were loaded
        anew and the resident memory each added (MB)."""
        with self._install_lock:
            before = resident_mb()
            serving = self._models[0]
            candidates = [*self._models]
            if spare is not None and spare.sha256 == serving.sha256:
                candidates.insert(0, spare)
            kept = [m for m in candidates if m.num_threads == threads][:workers]
            fresh = [] if kept else [serving.copy(threads)]
            fresh += [(kept or fresh)[0].copy() for _ in range(workers - len(kept) - len(fresh))]
            models = [*kept, *_warm(fresh)]
            added = resident_mb() - before
            self._replace(models, None)
            return len(fresh), added / len(fresh) if fresh else 0.0

    def _replace(self, models: Sequence[Model], apply: Callable[[], None] | None) -> None:
        """Install `models` (one per worker; more or fewer than now starts or stops
        workers) between two frames: new frames wait until every frame in flight was
        handed over."""
        with self._paused():
            self._models = tuple(models)
            if apply is not None:
                apply()
            with self._state:
                for index in range(len(self._models)):
                    thread = self._threads.get(index)
                    if self._take is not _nothing and (thread is None or not thread.is_alive()):
                        self._spawn(index)

    @contextmanager
    def _paused(self) -> Iterator[None]:
        with self._state:
            self._pausing += 1
        try:
            with self._take_lock:
                with self._state:
                    caught_up = self._state.wait_for(
                        lambda: self._delivered >= self._numbered or self._stop.is_set(),
                        PAUSE_TIMEOUT,
                    )
                if not caught_up:
                    log.error(
                        "%s: %d frame(s) still in flight after %.0f s; changing models anyway",
                        self.name,
                        self._numbered - self._delivered,
                        PAUSE_TIMEOUT,
                    )
                yield
        finally:
            with self._state:
                self._pausing -= 1
                self._state.notify_all()

    # -- the workers ----------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        thread = threading.Thread(
            target=self._work, args=(index,), name=f"infer-{self.name}-{index}", daemon=True
        )
        self._threads[index] = thread
        thread.start()

    def _work(self, index: int) -> None:
        while (job := self._next_job(index)) is not None:
            try:
                outputs = self._invoke(job.model, job.item, job.tensor)
            except Exception as exc:  # a bug: this worker gives up, not the pipeline
                self._give_up(index, job, exc)
                return
            self._deliver(job.number, None if outputs is None else (job.item, job.tensor, outputs))

    def _next_job(self, index: int) -> Job | None:
        while not self._stop.is_set():
            with self._state:
                if self._pausing:
                    self._state.wait(TAKE_TIMEOUT)
                    continue
            with self._take_lock:
                if self._ended or index >= len(self._models):
                    return None
                try:
                    ready = self._take(TAKE_TIMEOUT)
                except queue.Empty:
                    continue
                if ready is END:
                    self._ended = True
                    return None
                number = self._numbered
                self._numbered += 1
                if index >= len(self.frames):
                    self.frames += [0] * (index + 1 - len(self.frames))
                self.frames[index] += 1
                return Job(number, ready[0], ready[1], self._models[index])
        return None

    def _deliver(self, number: int, result: tuple[Item, Any, Outputs] | None) -> None:
        with self._deliver_lock:
            for item, tensor, outputs in self._buffer.put(number, result):
                try:
                    self._decide(item, tensor, outputs)
                except Exception:  # a bug in one decision must not stall the next frames
                    self._failed()
                    log.exception("%s: deciding on %s failed", self.name, item.origin)
            with self._state:
                self._delivered = self._buffer.next
                self._state.notify_all()

    def _give_up(self, index: int, job: Job, exc: Exception) -> None:
        self.lost += 1
        self._failed()
        log.error(
            "%s: interpreter worker %d failed on %s (%s: %s); it stops, %d left",
            self.name,
            index,
            job.item.origin,
            type(exc).__name__,
            exc,
            self._alive() - 1,
            exc_info=exc,
        )
        self._deliver(job.number, None)

    def _alive(self) -> int:
        with self._state:
            return sum(t.is_alive() for t in self._threads.values())


def _warm(models: Iterable[Model]) -> list[Model]:
    """Run each new model once: its first invoke() is slow, and it touches its memory."""
    warmed = list(models)
    for model in warmed:
        model.infer(*(np.zeros(spec.shape, spec.dtype) for spec in model.inputs))
    return warmed


def _nothing(_timeout: float) -> Ready | None:
    raise queue.Empty

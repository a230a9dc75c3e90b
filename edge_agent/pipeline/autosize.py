"""A camera pipeline's interpreter workers and decoders, sized from measurements.

With `image.workers`, `runtime.num_threads` or `image.decoders` left at 0
(auto), the pipeline times a few invokes on one thread and on every core of
its budget before it starts, runs its first frames on one worker while their
decoding is timed, then sizes itself (edge_agent.model.sizing.plan_workers),
logs the choice and the numbers, and carries on with the planned workers,
threads and decoders. Nothing is dropped on the way: the change is made between
two frames, as a model swap is.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_agent.errors import InputError, ModelError
from edge_agent.model.calibrate import DecodeMeter, InvokeCosts, measure_invokes
from edge_agent.model.runtime import Model
from edge_agent.model.sizing import Costs, WorkerPlan, plan_workers
from edge_agent.pipeline.decode_ahead import DecodeAhead
from edge_agent.pipeline.workers import Crew
from edge_agent.sources.base import Item

log = logging.getLogger(__name__)

TICK = 0.5


@dataclass(frozen=True)
class WorkerOptions:
    """A camera pipeline's interpreter workers; 0 = auto (measured at start)."""

    workers: int = 0
    threads: int = 0  # interpreter threads per worker
    decoders: int = 0
    budget: float = 1.0  # the cores this pipeline may use (the board's, shared)

    @property
    def auto(self) -> bool:
        return not (self.workers and self.threads and self.decoders)


@dataclass(frozen=True)
class Sizing:
    """What the pipeline chose and why, for the log, telemetry and `bench`."""

    plan: WorkerPlan
    costs: Costs | None  # None: every count was configured
    copy_mb: float  # resident memory each extra model copy added (0: none loaded)

    def describe(self) -> str:
        text = self.plan.describe()
        c = self.costs
        if c is not None:
            wide = f", {c.wall_n * 1e3:.2f} ms on {c.threads_n}" if c.threads_n > 1 else ""
            text += (
                f"; measured: invoke {c.invoke_1 * 1e3:.2f} ms CPU on 1 thread"
                f"{wide} (speedup {c.speedup:.2f}x: "
                f"{'scales by threads' if c.scales else 'scales by workers'}), "
                f"decode {c.decode * 1e3:.2f} ms CPU/frame"
            )
        if self.copy_mb:
            text += f"; each extra model copy +{self.copy_mb:.1f} MB resident"
        return text


class Staffing:
    """Runs a pipeline's crew over decode-ahead; sizes it first when on auto.
    `run` returns True when the source ended."""

    def __init__(
        self,
        crew: Crew,
        options: WorkerOptions,
        *,
        read: Callable[[], Item | None],
        prepare: Callable[[Item], np.ndarray | None],
    ) -> None:
        self.crew = crew
        self.options = options
        self._read = read
        self._prepare = prepare
        self.sizing: Sizing | None = None

    def run(self, stop: threading.Event) -> bool:
        opts, crew = self.options, self.crew
        invokes: InvokeCosts | None = None
        wide: Model | None = None
        if opts.auto:
            try:
                invokes, wide = measure_invokes(crew.models[0], max(1, math.ceil(opts.budget)))
            except (ModelError, InputError) as exc:  # e.g. no memory for a second interpreter
                log.error("%s: cannot size itself (%s); one interpreter serves", crew.name, exc)
            if wide is not None and invokes is not None and not _scales(invokes):
                wide = None  # not worth its memory: workers will run on one thread
        else:
            self._report(Sizing(_fixed_plan(opts), None, 0.0))
        meter = DecodeMeter(self._prepare)
        ahead = DecodeAhead(
            self._read, meter, workers=opts.decoders or 1, name=f"decode-{crew.name}"
        )
        ahead.start(stop)
        crew.start(ahead.take, stop)
        try:
            while invokes is not None and not stop.is_set():
                if meter.ready.wait(TICK):
                    self._resize(ahead, _costs(invokes, meter.seconds), wide)
                    break
                if crew.wait(0):
                    break
            wide = None
            while not crew.wait(TICK):
                pass
        finally:
            ahead.join(timeout=5)
        if not crew.ended and not stop.is_set():
            log.error("%s: every interpreter worker failed; the pipeline stops", crew.name)
        return crew.ended

    def _resize(self, ahead: DecodeAhead, costs: Costs, wide: Model | None) -> None:
        opts, crew = self.options, self.crew
        plan = plan_workers(
            costs, opts.budget, workers=opts.workers, threads=opts.threads, decoders=opts.decoders
        )
        _, copy_mb = crew.restaff(plan.workers, plan.threads, spare=wide)
        ahead.resize(plan.decoders)
        self._report(Sizing(plan, costs, copy_mb))

    def _report(self, sizing: Sizing) -> None:
        self.sizing = sizing
        log.info("%s: %s", self.crew.name, sizing.describe())


def _scales(invokes: InvokeCosts) -> bool:
    return _costs(invokes, 0.0).scales


def _costs(invokes: InvokeCosts, decode: float) -> Costs:
    many = invokes.many
    return Costs(
        invoke_1=invokes.one.cpu,
        wall_1=invokes.one.wall,
        wall_n=many.wall if many is not None else 0.0,
        threads_n=invokes.threads,
        decode=decode,
    )


def _fixed_plan(opts: WorkerOptions) -> WorkerPlan:
    return WorkerPlan(
        workers=opts.workers,
        threads=opts.threads,
        decoders=opts.decoders,
        budget=opts.budget,
        infer_share=0.0,
        decode_share=0.0,
        scales=False,
    )

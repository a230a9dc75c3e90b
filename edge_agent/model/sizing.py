"""How many interpreter threads, interpreter workers and frame decoders a pipeline
gets when the configuration leaves them at 0 (auto). Pure: numbers in, counts out.

Sensor pipelines (`plan_threads`): small models (a few kB to a few hundred kB)
finish an invoke() in microseconds, less than it takes to wake a thread pool, so
one thread is faster (the demo vibration model: 3 us with one thread, 8 us with
two); larger ones get every core.

Camera pipelines (`plan_workers`) are sized from what was measured on this board
at start (edge_agent/model/calibrate.py), not from the model's size: the CPU an
invoke() costs on one thread, how much faster it runs on every core of the
budget, and the CPU a frame's decoding costs. The budget (the board's cores,
split between its camera pipelines) is shared between inference and decoding in
proportion to their cost; the inference share runs on interpreter threads when
the model scales with them (speedup / threads >= THREAD_EFFICIENCY), else on
interpreter workers of one thread each: a uint8 MobileNetV2 quantized the TF1
way runs 7.3 ms on one thread and 8.0 ms on two, so threads only burn CPU, while
two interpreters on two frames use both cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SMALL_MODEL_BYTES = 1_000_000  # below this, threads cost more than they save
CORES_PER_DECODER = 4  # one decoder keeps up with an interpreter on up to 3 cores


@dataclass(frozen=True)
class ThreadPlan:
    interpreter: int
    decoders: int  # 0: not a camera pipeline


def plan_threads(
    cores: int,
    *,
    camera: bool,
    model_bytes: int,
    interpreter: int = 0,
    decoders: int = 0,
) -> ThreadPlan:
    """The threads for one pipeline; a count given (> 0) is kept as it is."""
    cores = max(1, cores)
    if not camera:
        return ThreadPlan(interpreter or (1 if model_bytes < SMALL_MODEL_BYTES else cores), 0)
    decoders = decoders or max(1, cores // CORES_PER_DECODER)
    auto = 1 if model_bytes < SMALL_MODEL_BYTES else max(1, cores - decoders)
    return ThreadPlan(interpreter or auto, decoders)


# -- measured sizing: interpreter workers ------------------------------------------------

THREAD_EFFICIENCY = 0.85  # speedup / threads at or above which a model "scales"
# A share up to 10% above N cores runs on N threads: one more would buy at most
# a tenth more frames/s for a whole extra interpreter (its arena, its packed weights).
SHARE_SLACK = 0.10
MAX_WORKERS = 8


@dataclass(frozen=True)
class Costs:
    """What a calibration measured, in seconds per frame."""

    invoke_1: float  # CPU per invoke on one thread
    wall_1: float  # wall time per invoke on one thread
    wall_n: float  # wall time per invoke on `threads_n` threads (0: not measured)
    threads_n: int
    decode: float  # CPU per frame decoded and resized

    @property
    def speedup(self) -> float:
        """One thread's CPU per invoke over the wall time on `threads_n`: CPU time does
        not count the moments a shared machine takes the core away, so a noisy
        neighbour can only make the model look as if it scaled less, never more."""
        return self.invoke_1 / self.wall_n if self.threads_n > 1 and self.wall_n > 0 else 1.0

    @property
    def scales(self) -> bool:
        """The model runs faster on more threads at little extra CPU."""
        return self.threads_n > 1 and self.speedup / self.threads_n >= THREAD_EFFICIENCY


@dataclass(frozen=True)
class WorkerPlan:
    """One camera pipeline's threads: `workers` interpreters of `threads` each, and
    `decoders` frame decoders; the shares are the cores each side needs at full
    speed, from the measured costs."""

    workers: int
    threads: int
    decoders: int
    budget: float  # the cores this pipeline may use
    infer_share: float
    decode_share: float
    scales: bool

    def describe(self) -> str:
        return (
            f"{self.workers} worker{'s' if self.workers > 1 else ''} x {self.threads} "
            f"thread{'s' if self.threads > 1 else ''}, {self.decoders} "
            f"decoder{'s' if self.decoders > 1 else ''} (budget {self.budget:.1f} cores: "
            f"{self.infer_share:.2f} for inference, {self.decode_share:.2f} for decoding)"
        )


def core_budget(cores: int, camera_pipelines: int) -> float:
    """The cores one camera pipeline may plan for: they share the board."""
    return max(1, cores) / max(1, camera_pipelines)


def _slots(share: float) -> int:
    """Threads needed to keep `share` cores (nearly) busy."""
    return max(1, math.ceil(share / (1 + SHARE_SLACK)))


def plan_workers(
    costs: Costs, budget: float, *, workers: int = 0, threads: int = 0, decoders: int = 0
) -> WorkerPlan:
    """Split `budget` cores between inference and decoding in proportion to their
    measured CPU per frame; then run the inference share on threads when the model
    scales with them, else on workers (one interpreter each, one thread). Counts
    given (> 0) are kept. Pure."""
    budget = max(1.0, budget)
    per_frame = costs.invoke_1 + costs.decode
    infer_share = budget * costs.invoke_1 / per_frame if per_frame > 0 else budget
    decode_share = budget - infer_share
    slots = _slots(infer_share)
    scales = costs.scales
    if workers and threads:
        pass
    elif workers:
        threads = max(1, slots // workers) if scales else 1
    elif threads:
        workers = max(1, math.ceil(slots / threads))
    elif scales:
        workers, threads = 1, min(slots, costs.threads_n)
    else:
        workers, threads = slots, 1
    return WorkerPlan(
        workers=min(workers, MAX_WORKERS),
        threads=threads,
        decoders=decoders or (_slots(decode_share) if costs.decode > 0 else 1),
        budget=budget,
        infer_share=infer_share,
        decode_share=decode_share,
        scales=scales,
    )

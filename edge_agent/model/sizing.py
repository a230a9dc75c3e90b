"""How many threads a pipeline's interpreter and its frame decoders get when the
configuration leaves them at 0 (auto). Pure: the cores and the model's size in,
two counts out.

A camera pipeline spends CPU on two things at once: decoding the next frame and
running the model on this one. With more runnable threads than cores, the
interpreter's worker threads wait for a decoder to be descheduled and every
invoke() stretches; so the decoders and the interpreter share the cores instead
of both taking all of them. Measured on 2 cores with MobileNetV2-224 int8 and
720p JPEGs: 2 interpreter threads + 2 decoders 141-165 frames/s, 1 + 1
158-180 frames/s (benchmarks/README.md).

Small models (the sensor kind: a few kB to a few hundred kB) finish an invoke()
in microseconds, less than it takes to wake a thread pool: one thread is faster
(the demo vibration model: 3 us with one thread, 8 us with two).
"""

from __future__ import annotations

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

"""CPU per second of audio for a wake-word pipeline, and its ratio to invoke() alone.

    .venv/bin/python benchmarks/audio.py [--seconds N] [--json] [--strict]

The microWakeWord "okay nabu" model (tests/fixtures/audio, or EDGE_AGENT_FIXTURES)
on its own recordings, looped until N seconds of audio, in 100 ms chunks as a
CommandPcmSource delivers them. Measured with time.process_time on one thread:

  pipeline   frontend (pymicro-features) + quantize + invoke + wake-word policy,
             through Listener.hear: CPU seconds per second of audio
  frontend   the frontend alone
  invoke     the interpreter's invoke() alone on a ready int8 tensor, as many
             calls as the pipeline made

Target: pipeline <= 0.05 s CPU per second of audio (20x real time on one core).
Exits 0 unless --strict and the target is missed. The machine is shared: the
load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from edge_agent.model.audio.frontend import MicroFrontend
from edge_agent.pipeline.audio.listener import ListenerOptions, build_listener
from edge_agent.sources.audio.wav import read_wav
from edge_agent.sources.base import Audio

TARGET = 0.05
CHUNK = 1600  # 100 ms
FIXTURES = Path(
    os.environ.get("EDGE_AGENT_FIXTURES", Path(__file__).resolve().parents[1] / "tests/fixtures")
)


def recording(seconds: float) -> np.ndarray:
    files = sorted((FIXTURES / "audio").glob("*.wav"))
    if not files:
        sys.exit(f"no recordings in {FIXTURES / 'audio'}; set EDGE_AGENT_FIXTURES")
    one = np.concatenate([read_wav(f)[0] for f in files])
    return np.tile(one, int(np.ceil(seconds * 16000 / one.size)))[: int(seconds * 16000)]


def measure(seconds: float, runtime: str) -> dict[str, float]:
    samples = recording(seconds)
    audio_s = samples.size / 16000
    listener = build_listener(FIXTURES / "audio/okay_nabu.json", ListenerOptions(runtime=runtime))  # type: ignore[arg-type]
    chunks = [samples[i : i + CHUNK] for i in range(0, samples.size, CHUNK)]

    start = time.process_time()
    calls = events = 0
    for offset, values in enumerate(chunks):
        heard = listener.hear(Audio(values, 16000, 1, offset * CHUNK, "bench", 0.0))
        calls += len(heard)
        events += sum(h.event is not None for h in heard)
    pipeline = time.process_time() - start

    frontend = MicroFrontend()
    start = time.process_time()
    for values in chunks:
        frontend.features(values)
    front = time.process_time() - start

    interpreter = listener.model._interpreter  # the bare invoke() floor
    spec = listener.model.inputs[0]
    interpreter.set_tensor(spec.index, np.zeros(spec.shape, dtype=spec.dtype))
    start = time.process_time()
    for _ in range(calls):
        interpreter.invoke()
    invoke = time.process_time() - start
    return {
        "audio_s": round(audio_s, 1),
        "invokes": calls,
        "events": events,
        "pipeline_cpu_per_s": pipeline / audio_s,
        "frontend_cpu_per_s": front / audio_s,
        "invoke_cpu_per_s": invoke / audio_s,
        "ratio_to_invoke": pipeline / invoke if invoke else float("inf"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="seconds of audio (300)")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    result = measure(args.seconds, args.runtime)
    result["load_before"] = load
    result["load_after"] = os.getloadavg()[0]
    ok = result["pipeline_cpu_per_s"] <= TARGET
    if args.json:
        print(json.dumps({**result, "target": TARGET, "pass": ok}))
    else:
        print(f"load average {load:.2f} -> {result['load_after']:.2f}")
        print(
            f"{result['audio_s']} s of audio, {result['invokes']} invokes, "
            f"{result['events']} wake-word events"
        )
        for key in ("pipeline", "frontend", "invoke"):
            print(f"{key:9} {result[f'{key}_cpu_per_s'] * 1000:8.2f} ms CPU per s of audio")
        print(f"pipeline / invoke alone: {result['ratio_to_invoke']:.2f}x")
        verdict = "PASS" if ok else "MISS"
        print(f"{verdict} pipeline <= {TARGET * 1000:.0f} ms CPU per s of audio")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())

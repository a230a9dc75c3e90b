"""The cost of closing the loop: the camera pipeline's frames/s with sample capture
(1 in 100 at random) and a shadow model (1 in 10) against the same pipeline without
them (target >= 0.9x), and the CPU a captured sample costs.

    .venv/bin/python benchmarks/loop.py               # 3 rounds of 2 x 6 s, ~1 min
    .venv/bin/python benchmarks/loop.py --seconds 10 --rounds 5

Each round runs both variants in child agents (the same `measure_pipeline` as
`edge-agent bench`), alternately, against one throwaway mosquitto. Reported: the
median wall-clock fps ratio, and the ratio of the median CPU time per frame, which
is what the target is checked on: on a shared VM the wall-clock rate of the same
run swings 2x, while CPU per frame holds (a CPU-bound board's fps is cores / CPU
per frame). Serving: MobileNetV2 224 int8 on 1280x720 JPEGs; shadow: MobileNetV1
0.25 128 (the test fixture), so the shadow also decodes each of its frames again. The CPU per
captured sample is measured in this process on the writer alone (encode, two
atomic writes with fsync, eviction check), with the tap's per-inference cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.capture.rules import CaptureRules, RuleOptions
from edge_agent.capture.store import SampleStore, StoreOptions
from edge_agent.capture.tap import Tap
from edge_agent.capture.writer import CaptureWriter, Pending
from edge_agent.devtools.bench import camera_config, local_broker, measure_pipeline
from edge_agent.devtools.measure import make_frames
from edge_agent.mqtt.payloads import Decision, ModelInfo
from edge_agent.sources.base import Frame

ROOT = Path(__file__).resolve().parents[1]
SERVING = ROOT / "models" / "bench" / "mobilenet_v2_224_int8.tflite"
SHADOW = ROOT / "tests" / "fixtures" / "models" / "mobilenet_v1_0.25_128_quant.tflite"
PHOTOS = ROOT / "tests" / "fixtures" / "images"


def with_loop(config: dict[str, Any], shadow: Path) -> dict[str, Any]:
    pipeline = config["pipelines"][0]
    pipeline["capture"] = {
        "enabled": True,
        "every": 100,
        "per_hour": 1_000_000,
        "on_drift": False,
        "on_disagreement": False,
    }
    pipeline["shadow"] = {"model": str(shadow), "every": 10, "report_interval": 5}
    return config


def pipeline_rounds(
    work: Path, port: int, pattern: str, seconds: float, rounds: int
) -> dict[str, Any]:
    results = []
    for i in range(rounds):
        base = measure_pipeline(
            camera_config(SERVING, pattern, port, work / f"base-{i}"), seconds=seconds
        )
        state = work / f"loop-{i}"
        loop = measure_pipeline(
            with_loop(camera_config(SERVING, pattern, port, state), SHADOW), seconds=seconds
        )
        kept = len(list((state / "samples").glob("*.json")))
        results.append(
            {
                "base_cpu_ms_per_frame": 1000 * base.cpu / base.items,
                "loop_cpu_ms_per_frame": 1000 * loop.cpu / loop.items,
                "base_fps": base.rate,
                "loop_fps": loop.rate,
                "ratio": loop.rate / base.rate,
                "kept": kept,
                "loop_inputs": loop.inputs,
                "base_cpu_pct": base.cpu_percent,
                "loop_cpu_pct": loop.cpu_percent,
            }
        )
        print(
            f"round {i}: without {base.rate:.1f} fps, with {loop.rate:.1f} fps "
            f"({loop.rate / base.rate:.3f}x), {kept} samples kept of {loop.inputs} inputs",
            file=sys.stderr,
        )
    median = sorted(results, key=lambda r: r["ratio"])[len(results) // 2]
    base_cpu = statistics.median(r["base_cpu_ms_per_frame"] for r in results)
    loop_cpu = statistics.median(r["loop_cpu_ms_per_frame"] for r in results)
    # On a shared VM the wall-clock rate swings 2x between runs of the same thing;
    # CPU per frame does not, and on a CPU-bound board fps is cores / CPU per frame.
    return {
        "rounds": results,
        "median_wall_ratio": round(median["ratio"], 3),
        "cpu_ms_per_frame": {"without": round(base_cpu, 3), "with": round(loop_cpu, 3)},
        "cpu_ratio": round(base_cpu / loop_cpu, 3),
    }


def capture_costs(work: Path, frames: list[bytes], count: int = 200) -> dict[str, float]:
    """CPU per captured sample (the writer thread's work) and per inference (the tap)."""
    writer = CaptureWriter(
        SampleStore(StoreOptions(work / "cost-samples", quota_bytes=50 << 20)), capacity=count
    )
    info = ModelInfo("m", "1", "0" * 64)
    scores = np.random.default_rng(0).random((1, 1001)).astype(np.float32)
    side = {"pipeline": "cam", "why": ["random"]}
    start = time.process_time()
    for i in range(count):
        writer.write(Pending("cam", Frame(frames[i % len(frames)], "bench", time.time()), side))
    per_sample_ms = (time.process_time() - start) * 1000 / count
    tap = Tap(
        "cam",
        "bench",
        labels=[str(i) for i in range(1001)],
        rules=CaptureRules(RuleOptions(every=1_000_000_000, per_hour=1)),
        writer=writer,
    )
    decision = Decision("x", 0.9, "x", "heartbeat", "x")
    frame = Frame(frames[0], "bench", time.time())
    n = 20_000
    start = time.process_time()
    for _ in range(n):
        tap.observed(frame, scores, decision, info)
    per_inference_us = (time.process_time() - start) * 1e6 / n
    return {
        "cpu_ms_per_captured_sample": round(per_sample_ms, 3),
        "tap_us_per_inference": round(per_inference_us, 2),
        "jpeg_kb": round(statistics.mean(len(f) for f in frames) / 1e3, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loop-bench-") as tmp:
        work = Path(tmp)
        photos = [PHOTOS / n for n in ("cat_720p.jpg", "parrot.jpg") if (PHOTOS / n).is_file()]
        paths = make_frames(work / "frames", photos=photos)
        costs = capture_costs(work, [p.read_bytes() for p in paths])
        with local_broker(work / "broker") as port:
            if port is None:
                print("mosquitto is not installed", file=sys.stderr)
                return 1
            runs = pipeline_rounds(
                work, port, str(paths[0].parent / "*.jpg"), args.seconds, args.rounds
            )
    report = {**runs, **costs, "target": 0.9, "passed": runs["cpu_ratio"] >= 0.9}
    print(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())

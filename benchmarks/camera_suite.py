"""The camera part of benchmarks/perf.py: three models, two frame sizes, full speed
and paced, one and two pipelines, each against the CPU-bound limit measured
around it.

The CPU-bound limit is cores / (CPU per invoke on one thread + CPU per decode):
what a pipeline that wastes nothing could reach on this board, whatever threads
it uses. Each pipeline run sits between two measurements of those baselines
(invoke on one thread and on every core, decode), taken together, and is
compared with them: this VM's speed drifts by a third within a minute. Every
round runs every case once, so a slow spell hits all cases alike; the median of
the rounds and their spread are reported.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from edge_agent.devtools.bench import (
    Baselines,
    Paced,
    PipelineRun,
    bench_policy,
    camera_config,
    measure_baselines,
    measure_paced,
    measure_pipeline,
)
from edge_agent.devtools.bench_live import PACED_FPS
from edge_agent.devtools.measure import LoopStats, make_frames

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
PHOTOS = FIXTURES / "images"
MODELS = {
    "MobileNetV2-224 int8 (models/bench)": ROOT
    / "models"
    / "bench"
    / "mobilenet_v2_224_int8.tflite",
    "MobileNet v1 0.25-128 uint8 (TF1 quantization)": FIXTURES
    / "models"
    / "mobilenet_v1_0.25_128_quant.tflite",
    "SSD MobileNet v1 COCO uint8 (as a plain model)": FIXTURES
    / "models"
    / "ssd_mobilenet_v1_coco_quant.tflite",
}
MOBILENET_V2 = next(iter(MODELS))
SIZES = ((1280, 720), (1920, 1080))
PACED_SIZE = (1920, 1080)
ROUNDS = 3


def size_name(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@dataclass(frozen=True)
class Frames:
    paths: list[Path]
    described: str

    @property
    def pattern(self) -> str:
        return str(self.paths[0].parent / "*.jpg")

    @property
    def encoded(self) -> list[bytes]:
        return [p.read_bytes() for p in self.paths]


def make_test_frames(folder: Path, size: tuple[int, int]) -> Frames:
    """Eight JPEGs of `size`: crops of cat_720p.jpg and parrot.jpg (synthetic scenes
    when the fixtures are absent)."""
    photos = [PHOTOS / n for n in ("cat_720p.jpg", "parrot.jpg") if (PHOTOS / n).is_file()]
    paths = make_frames(folder, photos=photos, size=size)
    origin = " and ".join(p.name for p in photos) + " variations" if photos else "synthetic"
    kb = statistics.mean(p.stat().st_size for p in paths) / 1e3
    return Frames(paths, f"{len(paths)} JPEGs {size_name(size)}, {origin}, {kb:.0f} kB avg")


@dataclass(frozen=True)
class Round:
    """One pipeline run and the baselines measured around it."""

    base: Baselines
    run: PipelineRun

    @property
    def ratio(self) -> float:
        return self.run.rate / self.base.limit


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))


@dataclass
class Case:
    """A model at a frame size: full-speed rounds, and paced rounds when measured."""

    model: str
    size: str
    full: list[Round]
    paced: list[Paced]

    def ratios(self) -> Spread:
        return Spread.of([r.ratio for r in self.full])


@dataclass
class CameraSuite:
    frames: dict[str, str]  # size -> what the frames are
    cases: list[Case]
    two: list[Round]  # two MobileNetV2 pipelines in one agent, 1280x720
    naive: list[tuple[LoopStats, float]]  # naive baseline, MobileNetV2 720p pipeline / naive

    def case(self, model: str, size: str) -> Case:
        return next(c for c in self.cases if c.model == model and c.size == size)


def around(
    model: Path, frames: Frames, seconds: float, run: Callable[[], PipelineRun]
) -> tuple[Baselines, PipelineRun]:
    """`run` between two baseline measurements, taken together."""
    before = measure_baselines(model, frames.encoded, seconds)
    result = run()
    after = measure_baselines(model, frames.encoded, seconds)
    return before.plus(after), result


@dataclass(frozen=True)
class Bench:
    """Where and how long: the same for every run of a suite."""

    work: Path
    port: int
    seconds: float

    @property
    def span(self) -> float:
        return self.seconds / 2  # a full-speed run

    @property
    def base_seconds(self) -> float:
        return self.seconds / 4  # each baseline measurement, before and after


def run_case(bench: Bench, case: Case, frames: Frames, round_: int) -> None:
    """One round of `case`: full speed, then paced if the case is paced."""
    model = MODELS[case.model]
    state = bench.work / f"state-{round_}-{model.stem}-{case.size}"
    config = camera_config(model, frames.pattern, bench.port, state, policy=bench_policy(model))
    full = partial(measure_pipeline, config, seconds=bench.span)
    case.full.append(Round(*around(model, frames, bench.base_seconds, full)))
    if case.size == size_name(PACED_SIZE):
        state = state.with_name(state.name + "-paced")
        paced = partial(
            measure_paced, model, frames.paths, bench.port, state, seconds=bench.seconds
        )
        base, run = around(model, frames, bench.base_seconds, paced)
        case.paced.append(Paced.against(run, PACED_FPS, base))


def run_two(bench: Bench, frames: Frames, round_: int) -> Round:
    model = MODELS[MOBILENET_V2]
    state = bench.work / f"two-{round_}"
    config = camera_config(model, frames.pattern, bench.port, state, pipelines=2)
    run = partial(measure_pipeline, config, seconds=bench.span)
    return Round(*around(model, frames, bench.base_seconds, run))


def run_suite(
    work: Path, port: int, seconds: float, naive: Callable[[Frames], LoopStats]
) -> CameraSuite:
    """ROUNDS rounds of every case, the two-pipeline run and the naive baseline."""
    bench = Bench(work, port, seconds)
    frames = {size_name(s): make_test_frames(work / f"frames-{size_name(s)}", s) for s in SIZES}
    cases = [Case(m, size_name(s), [], []) for m in MODELS for s in SIZES]
    suite = CameraSuite({k: f.described for k, f in frames.items()}, cases, [], [])
    first = size_name(SIZES[0])
    for i in range(ROUNDS):
        for case in cases:
            compared = case.model == MOBILENET_V2 and case.size == first
            stats = naive(frames[case.size]) if compared else None
            run_case(bench, case, frames[case.size], i)
            if stats is not None:
                suite.naive.append((stats, case.full[-1].run.rate / stats.rate))
        suite.two.append(run_two(bench, frames[first], i))
    return suite


def mobilenet_v2_peak_rss(suite: CameraSuite) -> float:
    """The highest peak RSS of a one-pipeline MobileNetV2 run with auto sizing."""
    return max(r.run.peak_rss_mb for c in suite.cases if c.model == MOBILENET_V2 for r in c.full)


def print_suite(suite: CameraSuite) -> None:
    print(f"\n1-3 camera pipelines, auto sizing, {ROUNDS} rounds (median [low-high])")
    for size, described in suite.frames.items():
        print(f"  frames {size}: {described}")
    for case in suite.cases:
        _print_case(case)
    print("\n  two MobileNetV2 camera pipelines in one agent, 1280x720 each:")
    for r in suite.two:
        print(
            f"    total {r.run.rate:6.1f} frames/s, limit {r.base.limit:6.1f}: "
            f"{r.ratio:.2f}x; CPU {r.run.cpu_percent:.0f}%"
        )
        for sizing in r.run.sizing:
            print(f"      {sizing['pipeline']}: {sizing.get('described', 'configured')}")
    two = Spread.of([r.ratio for r in suite.two])
    print(f"    total / limit {two.median:.2f}x [{two.low:.2f}-{two.high:.2f}]")
    print("\n  naive baseline (MobileNetV2, 1280x720, one thread, every core):")
    for stats, ratio in suite.naive:
        print(f"    {stats.rate:6.1f} frames/s; the pipeline {ratio:.2f}x")


def _print_case(case: Case) -> None:
    print(f"\n  {case.model}, {case.size}")
    first = case.full[0].run
    for sizing in first.sizing[:1]:
        print(f"    sizing (round 1): {sizing.get('described', 'configured')}")
    for r in case.full:
        b, run = r.base, r.run
        print(
            f"    invoke 1 thread {b.invoke_1.cpu_per_item * 1e3:6.2f} ms CPU, "
            f"{b.cores} threads {b.invoke_all.p50_ms:6.2f} ms wall; decode "
            f"{b.decode.cpu_per_item * 1e3:5.2f} ms CPU; limit {b.limit:6.1f}; pipeline "
            f"{run.rate:6.1f} frames/s = {r.ratio:.2f}x, CPU {run.cpu_percent:.0f}%, "
            f"p50 {run.p50_ms:.1f} ms, RSS {run.peak_rss_mb:.1f} MB"
        )
    ratios = case.ratios()
    print(f"    pipeline / limit {ratios.median:.2f}x [{ratios.low:.2f}-{ratios.high:.2f}]")
    for p in case.paced:
        print(
            f"    paced {p.fps:.0f} fps: capture to decision p50 {p.run.p50_ms:5.1f} ms "
            f"({p.p50_ratio:.2f}x), p99 {p.run.p99_ms:5.1f} ms ({p.p99_ratio:.2f}x) vs decode "
            f"+ invoke alone {p.alone_ms:.1f} ms; CPU {p.run.cpu_per_item * 1e3:.2f} ms/frame "
            f"({p.cpu_ratio:.2f}x {p.alone_cpu_ms:.2f} ms)"
        )

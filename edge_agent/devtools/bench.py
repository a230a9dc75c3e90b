"""`edge-agent bench`: how fast this board runs a camera model, alone and in a pipeline.

    edge-agent bench [--model M] [--frames GLOB] [--seconds N] [--json]

In one run, on the same frames:

  invoke           `Model.infer` on a ready tensor, one thread calling it, the
                   interpreter on one thread, then on every core: frames/s, p50,
                   and the process CPU time each invoke costs (`time.process_time`)
  decode           the pipeline's own preprocessing (`ImagePreprocessor.prepare`:
                   JPEG draft decode, RGB, resize) in a single-threaded loop:
                   CPU seconds per frame
  CPU-bound limit  cores / (CPU per invoke on one thread + CPU per decode): what a
                   pipeline that wastes nothing could reach on this board, whatever
                   threads and interpreter workers it uses
  pipeline         a real agent in a child process (files source looping over the
                   frames at fps 0, auto sizing (the plan and the measurements
                   behind it are printed), decode-ahead, interpreter workers,
                   the policy, outbox, MQTT to a throwaway mosquitto when one is
                   installed): frames/s and its ratio to the limit, CPU%, peak RSS
  paced            the same agent behind a live camera (a `command` source that
                   writes the frames at 10 fps, bench_live.py): capture-to-decision
                   p50/p99 and CPU per frame, against decode + invoke alone

The baselines are measured half before and half after the pipeline runs and taken
together: a shared machine's speed drifts by several percent over a minute.
The measurement functions are reused by `benchmarks/perf.py`, which adds three
models at two frame sizes, rounds, two pipelines at once, the naive baseline, the
sensor pipeline, start-up time and bandwidth.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.app import wiring
from edge_agent.app.agent import Agent
from edge_agent.config.settings import load_settings
from edge_agent.devtools.bench_live import PACED_FPS, paced_config
from edge_agent.devtools.measure import (
    DEVICE,
    LoopStats,
    cpu_bound_limit,
    frame_files,
    make_frames,
    measure_ceiling,
    measure_decode,
    percentiles_ms,
)
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.model.runtime import Model, default_threads
from edge_agent.model.sizing import ThreadPlan


@dataclass(frozen=True)
class PipelineRun:
    """What a child agent did over the measured span (pipeline 0's counters)."""

    items: int
    wall: float
    cpu: float
    p50_ms: float  # capture (source read) to decision, per input
    p99_ms: float
    peak_rss_mb: float  # VmHWM of the child, 10^6 bytes
    inputs: int  # totals since the agent started
    events: int
    bytes_in: int
    bytes_out: int
    sizing: list[dict[str, Any]] = field(default_factory=list)  # per pipeline (autosize.py)

    @property
    def cpu_per_item(self) -> float:
        return self.cpu / self.items if self.items else 0.0

    @property
    def rate(self) -> float:
        return self.items / self.wall if self.wall else 0.0

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu / self.wall if self.wall else 0.0


CLASSIFY: dict[str, Any] = {"kind": "classification"}


def camera_config(
    model: Path,
    pattern: str,
    port: int,
    state_dir: Path,
    *,
    loop: bool = True,
    policy: dict[str, Any] | None = None,
    pipelines: int = 1,
) -> dict[str, Any]:
    """An agent with `pipelines` camera pipelines on `model`, each over the files
    `pattern` matches."""
    return {
        "device_id": DEVICE,
        "state_dir": str(state_dir),
        "log_level": "warning",
        "mqtt": {"host": "127.0.0.1", "port": port},
        "pipelines": [
            {
                "name": f"cam{i}" if i else "cam",
                "model": str(model),
                "model_name": f"m{i}",
                "source": {"kind": "files", "pattern": pattern, "loop": loop, "fps": 0},
                # A detector is timed as a plain model here (bench_detect times its
                # decoding): say so, or the pipeline refuses a detector under this policy.
                "model_kind": "classifier",
                "policy": policy or CLASSIFY,
            }
            for i in range(pipelines)
        ],
    }


def planned_threads(config: dict[str, Any]) -> ThreadPlan:
    """The threads the agent loads the first pipeline of `config` with (a camera
    pipeline on auto sizes itself once running: see PipelineRun.sizing)."""
    settings = load_settings(None, config)
    pipeline = settings.pipelines[0]
    return wiring.thread_plan(settings, pipeline, pipeline.model)


def measure_pipeline(
    config: dict[str, Any],
    *,
    warmup: float = 1.0,
    seconds: float = 5.0,
    until_done: bool = False,
    timeout: float = 120.0,
) -> PipelineRun:
    """Run an agent with `config` in a child process; measure its first pipeline for
    `seconds` after `warmup` (or from start to end of a finite source, `until_done`)."""
    request = {"config": config, "warmup": warmup, "seconds": seconds}
    request |= {"until_done": until_done, "timeout": timeout}
    child = subprocess.run(
        [sys.executable, "-m", "edge_agent.devtools.bench", "--child"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout + seconds + warmup + 60,
        check=False,
    )
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        tail = " | ".join(child.stderr.strip().splitlines()[-5:])
        raise EdgeAgentError(f"bench: the pipeline process failed ({child.returncode}): {tail}")
    return PipelineRun(**json.loads(lines[-1]))


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in 10^6 bytes."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


@dataclass(frozen=True)
class _Mark:
    wall: float
    cpu: float
    items: int
    latencies: int


def _instrument(pipeline: Any, latencies: list[float]) -> None:
    """Record, for every input the pipeline decides on, the seconds from its capture
    (the source's read) to the end of the policy's decision."""
    conclude = pipeline._conclude

    def timed(item: Any, prepared: Any, outputs: Any) -> Any:
        decision = conclude(item, prepared, outputs)
        latencies.append(time.time() - item.captured)
        return decision

    # Instance hooks: the pipeline's code stays as it is.
    setattr(pipeline, "_conclude", timed)  # noqa: B010
    if pipeline._staffing is not None:  # interpreter workers call it directly
        pipeline._staffing.crew._decide = timed


def _mark(pipelines: Sequence[Any], latencies: list[float]) -> _Mark:
    items = sum(p.stats.inferences for p in pipelines)
    return _Mark(time.perf_counter(), time.process_time(), items, len(latencies))


def _running(pipeline: str) -> bool:
    return any(t.name == f"pipeline-{pipeline}" for t in threading.enumerate())


def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise EdgeAgentError(f"bench: nothing inferred within {timeout:.0f} s")
        time.sleep(0.01)


def _settled(pipeline: Any) -> bool:
    """It has inferred, and sized its workers if it sizes them."""
    sized = pipeline._staffing is None or pipeline.sizing is not None
    return bool(pipeline.stats.inferences > 0 and sized)


def _measured(agent: Any, runner: threading.Thread, request: dict[str, Any]) -> dict[str, Any]:
    pipelines = agent.pipelines
    latencies: list[float] = []
    for pipeline in pipelines:
        _instrument(pipeline, latencies)
    runner.start()
    if request["until_done"]:
        begin = _mark(pipelines, latencies)
        runner.join(request["timeout"])
    else:
        _wait_for(lambda: all(_settled(p) for p in pipelines), request["timeout"])
        time.sleep(request["warmup"])
        begin = _mark(pipelines, latencies)
        deadline = begin.wall + request["seconds"]
        while time.perf_counter() < deadline and all(_running(p.name) for p in pipelines):
            # A finite source may end early: the span ends with it. Not more often:
            # this thread's CPU counts in the measurement.
            time.sleep(0.05)
    end = _mark(pipelines, latencies)
    p50, p99 = percentiles_ms(latencies[begin.latencies : end.latencies])
    return {
        "items": end.items - begin.items,
        "wall": end.wall - begin.wall,
        "cpu": end.cpu - begin.cpu,
        "p50_ms": p50,
        "p99_ms": p99,
    }


def sizing_dict(pipeline: Any) -> dict[str, Any]:
    sizing = pipeline.sizing
    if sizing is None:
        return {"pipeline": pipeline.name, "workers": 1}
    data: dict[str, Any] = {"pipeline": pipeline.name, "described": sizing.describe()}
    return data | asdict(sizing.plan) | {"costs": asdict(sizing.costs) if sizing.costs else None}


def run_child(request: dict[str, Any]) -> dict[str, Any]:
    """The child's side of `measure_pipeline`: one agent, measured in this process."""
    agent = Agent(load_settings(None, request["config"]))
    stop = threading.Event()
    runner = threading.Thread(
        target=agent.run, args=(stop,), kwargs={"until_done": request["until_done"]}
    )
    try:
        result = _measured(agent, runner, request)
    finally:
        stop.set()
        if runner.is_alive():
            runner.join(30)
    pipeline = agent.pipelines[0]
    source = pipeline.source.stats
    return result | {
        "peak_rss_mb": peak_rss_mb(),
        "inputs": source.read,
        "events": pipeline.stats.events,
        "bytes_in": source.bytes_in,
        "bytes_out": pipeline.emitter.bytes_out,
        "sizing": [sizing_dict(p) for p in agent.pipelines],
    }


@contextmanager
def local_broker(workdir: Path) -> Iterator[int | None]:
    """A throwaway mosquitto's port, or None when mosquitto is not installed."""
    from edge_agent.devtools.localbroker import Mosquitto  # noqa: PLC0415 - see synthetic_frame

    workdir.mkdir(parents=True, exist_ok=True)
    try:
        broker = Mosquitto(workdir, persistence=False)
        broker.start()
    except RuntimeError:
        yield None
        return
    try:
        yield broker.port
    finally:
        broker.stop()


# -- edge-agent bench ----------------------------------------------------------------------


@dataclass(frozen=True)
class Baselines:
    """The parts of a frame measured alone, each on one thread calling it."""

    invoke_1: LoopStats  # Model.infer, interpreter on one thread
    invoke_all: LoopStats  # the same on every core
    decode: LoopStats  # ImagePreprocessor.prepare
    cores: int

    def plus(self, other: Baselines) -> Baselines:
        return Baselines(
            self.invoke_1.plus(other.invoke_1),
            self.invoke_all.plus(other.invoke_all),
            self.decode.plus(other.decode),
            self.cores,
        )

    @property
    def limit(self) -> float:
        return cpu_bound_limit(self.invoke_1, self.decode, self.cores)

    def invoke_at(self, threads: int) -> LoopStats:
        """The invoke loop nearest to `threads` interpreter threads (1 or every core)."""
        return self.invoke_1 if threads < self.cores else self.invoke_all


def measure_baselines(model_path: Path, frames: Sequence[bytes], seconds: float) -> Baselines:
    """Invoke on one thread and on every core, and decode, `seconds` in all."""
    cores = default_threads()
    one = Model.load(model_path, num_threads=1)
    part = seconds / 3
    invoke_1, decode = measure_ceiling(one, part), measure_decode(one, frames, part)
    del one
    invoke_all = measure_ceiling(Model.load(model_path, num_threads=cores), part)
    return Baselines(invoke_1, invoke_all, decode, cores)


def bench_policy(model_path: Path) -> dict[str, Any]:
    """A classifier's policy for a `[1, N]` output; anything else (a detector run as a
    plain model) gets a threshold on its first value: the bench times the model."""
    shape = Model.load(model_path, num_threads=1).outputs[0].shape
    if len(shape) == 2 and shape[0] == 1:
        return CLASSIFY
    return {"kind": "threshold", "index": 0, "on_threshold": 0.5, "off_threshold": 0.4}


def pipeline_threads(run: PipelineRun) -> int:
    """The first pipeline's interpreter threads per worker."""
    return int(run.sizing[0].get("threads", 1)) if run.sizing else 1


@dataclass(frozen=True)
class Paced:
    """A pipeline fed by a live camera at `fps`, against decode + invoke alone."""

    run: PipelineRun
    fps: float
    alone_ms: float  # p50 decode + p50 invoke (at the pipeline's threads), wall
    alone_cpu_ms: float  # CPU per decode + CPU per invoke

    @classmethod
    def against(cls, run: PipelineRun, fps: float, base: Baselines) -> Paced:
        invoke = base.invoke_at(pipeline_threads(run))
        return cls(
            run,
            fps,
            base.decode.p50_ms + invoke.p50_ms,
            (base.decode.cpu_per_item + invoke.cpu_per_item) * 1e3,
        )

    @property
    def p50_ratio(self) -> float:
        return self.run.p50_ms / self.alone_ms

    @property
    def p99_ratio(self) -> float:
        return self.run.p99_ms / self.alone_ms

    @property
    def cpu_ratio(self) -> float:
        return self.run.cpu_per_item * 1e3 / self.alone_cpu_ms


def measure_paced(
    model_path: Path,
    files: Sequence[Path],
    port: int,
    state_dir: Path,
    *,
    seconds: float,
    fps: float = PACED_FPS,
) -> PipelineRun:
    """The pipeline behind a live camera offering `files` at `fps` (bench_live.py)."""
    config = paced_config(
        model_path, files, port, state_dir, policy=bench_policy(model_path), fps=fps
    )
    return measure_pipeline(config, warmup=1.0, seconds=seconds)


@dataclass(frozen=True)
class BenchReport:
    model: str
    runtime: str
    cores: int
    frames: str  # what the frames are
    broker: bool  # False: no mosquitto here, events stayed in the outbox
    base: Baselines
    limit_fps: float
    pipeline: PipelineRun
    paced: Paced

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        b = self.base
        data["base"]["invoke_1"] |= {
            "fps": b.invoke_1.rate,
            "cpu_ms": b.invoke_1.cpu_per_item * 1e3,
        }
        data["base"]["invoke_all"] |= {
            "fps": b.invoke_all.rate,
            "cpu_ms": b.invoke_all.cpu_per_item * 1e3,
        }
        data["base"]["decode"] |= {"cpu_ms": b.decode.cpu_per_item * 1e3}
        data["pipeline"] |= {"fps": self.pipeline.rate, "cpu_percent": self.pipeline.cpu_percent}
        data["pipeline_vs_limit"] = self.pipeline.rate / self.limit_fps
        p = self.paced
        data["paced"] |= {"p50_ratio": p.p50_ratio, "p99_ratio": p.p99_ratio}
        data["paced"] |= {"cpu_ratio": p.cpu_ratio, "cpu_ms_per_frame": p.run.cpu_per_item * 1e3}
        return data


def bundled_model() -> Path:
    """The MobileNetV2 benchmark model of a checkout (models/ is not installed)."""
    path = Path(__file__).resolve().parents[2] / "models" / "bench" / "mobilenet_v2_224_int8.tflite"
    if not path.is_file():
        raise ConfigError("bench: no bundled benchmark model here; pass --model MODEL.tflite")
    return path


def run_bench(model_path: Path, pattern: str, seconds: float, workdir: Path) -> BenchReport:
    """Baselines (invoke on one thread and on every core, decode) half before and half
    after the two pipeline runs (full speed over the files `pattern` matches, then a
    live camera at 10 fps), taken together: a shared machine's speed drifts."""
    from edge_agent.devtools.localbroker import free_port  # noqa: PLC0415 - see synthetic_frame

    files = frame_files(pattern)
    frames = [p.read_bytes() for p in files]
    policy = bench_policy(model_path)
    with local_broker(workdir / "broker") as broker:
        port = broker or free_port()
        config = camera_config(model_path, pattern, port, workdir / "state", policy=policy)
        before = measure_baselines(model_path, frames, seconds / 2)
        pipeline = measure_pipeline(config, warmup=min(1.0, seconds), seconds=seconds)
        paced = measure_paced(model_path, files, port, workdir / "paced", seconds=max(5.0, seconds))
        after = measure_baselines(model_path, frames, seconds / 2)
    base = before.plus(after)
    return BenchReport(
        model=str(model_path),
        runtime=Model.load(model_path, num_threads=1).runtime,
        cores=base.cores,
        frames=f"{len(frames)} files matching {pattern}",
        broker=broker is not None,
        base=base,
        limit_fps=base.limit,
        pipeline=pipeline,
        paced=Paced.against(paced, PACED_FPS, base),
    )


def print_report(report: BenchReport) -> None:
    b, p, q = report.base, report.pipeline, report.paced
    cpu_invoke, cpu_decode = b.invoke_1.cpu_per_item * 1e3, b.decode.cpu_per_item * 1e3
    print(f"model {report.model} ({report.runtime}, {report.cores} cores)")
    print(f"frames: {report.frames}")
    for sizing in p.sizing:
        print(f"pipeline sizing: {sizing.get('described', 'configured: one interpreter')}")
    print(f"  {'invoke, 1 thread':<36}{b.invoke_1.rate:8.1f} frames/s", end="")
    print(f"   p50 {b.invoke_1.p50_ms:.2f} ms, CPU {cpu_invoke:.2f} ms/invoke")
    a = b.invoke_all
    print(f"  {f'invoke, {report.cores} threads':<36}{a.rate:8.1f} frames/s", end="")
    print(f"   p50 {a.p50_ms:.2f} ms, CPU {a.cpu_per_item * 1e3:.2f} ms/invoke")
    print(f"  {'decode + resize, one thread':<36}{b.decode.rate:8.1f} frames/s", end="")
    print(f"   p50 {b.decode.p50_ms:.2f} ms, CPU {cpu_decode:.2f} ms/frame")
    print(
        f"  {'CPU-bound limit':<36}{report.limit_fps:8.1f} frames/s   "
        f"{report.cores} / ({cpu_invoke:.2f} + {cpu_decode:.2f} ms)"
    )
    print(f"  {'camera pipeline, full speed':<36}{p.rate:8.1f} frames/s", end="")
    print(f"   {p.rate / report.limit_fps:.2f}x the limit; CPU {p.cpu_percent:.0f}%", end="")
    print(f", {p.cpu_per_item * 1e3:.2f} ms/frame, peak RSS {p.peak_rss_mb:.0f} MB")
    r = q.run
    print(f"  {f'paced, a live camera at {q.fps:.0f} fps':<36}{r.rate:8.1f} frames/s", end="")
    print(
        f"   capture to decision p50 {r.p50_ms:.1f} ms ({q.p50_ratio:.2f}x), "
        f"p99 {r.p99_ms:.1f} ms ({q.p99_ratio:.2f}x) vs decode + invoke alone "
        f"{q.alone_ms:.1f} ms"
    )
    print(
        f"  {'':<36}{'':>8}            CPU {r.cpu_per_item * 1e3:.2f} ms/frame "
        f"({q.cpu_ratio:.2f}x decode + invoke alone, {q.alone_cpu_ms:.2f} ms)"
    )
    if not report.broker:
        print("  (mosquitto is not installed: events stayed in the outbox, nothing went to MQTT)")


def run(args: argparse.Namespace) -> int:
    """`edge-agent bench` with its parsed options (edge_agent/commands/bench.py)."""
    model = Path(args.model) if args.model else bundled_model()
    if args.seconds <= 0:
        raise ConfigError("--seconds must be > 0")
    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as tmp:
        workdir = Path(tmp)
        pattern = args.frames
        if pattern is None:
            make_frames(workdir / "frames")
            pattern = str(workdir / "frames" / "*.jpg")
        report = run_bench(model, pattern, args.seconds, workdir)
    from edge_agent.devtools import bench_detect  # noqa: PLC0415 - it imports this module

    detector = Path(args.detector) if args.detector else None
    labels = Path(args.detector_labels) if args.detector_labels else None
    detection = bench_detect.run_detection(detector, labels, args.seconds / 2)
    if args.json:
        data = report.as_dict() | {"detection": [d.as_dict() for d in detection]}
        print(json.dumps(data, indent=2))
    else:
        print_report(report)
        print("detection")
        bench_detect.print_overheads(detection)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m edge_agent.devtools.bench --child`: one measured pipeline in a child
    process, its options as JSON on stdin, its figures as JSON on stdout."""
    parser = argparse.ArgumentParser(prog="edge-agent bench (child)")
    parser.add_argument("--child", action="store_true", required=True)
    parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(run_child(json.loads(sys.stdin.read()))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

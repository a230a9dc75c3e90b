"""How much the durable outbox costs: edge-agent's delivery path against raw paho.

    .venv/bin/python benchmarks/outbox_throughput.py [--events N] [--runs 3]

Starts its own throwaway mosquitto (persistence off) and, against that one
broker, with the same ~275-byte JSON decision events at QoS 1, measures:

  raw paho     paho 2.x (MQTT 5, loop_start, max_inflight 100) publishing N
               messages from the main thread; clock stops when all N are PUBACKed.
  power-loss   a producer thread calling Outbox.add per event (as a pipeline
  crash        does) + the Dispatcher thread + MqttPublisher, Outbox durability
               "power-loss" (synchronous=FULL) or "crash" (NORMAL); clock stops
               when all N are acknowledged and the outbox is empty.

Every variant builds each payload inside the timed loop (edge-agent builds it in
Outbox.add). Each variant gets one warm-up run, then --runs measured runs,
interleaved (raw, power-loss, crash, raw, ...) so drift hits all of them alike;
the median is reported. A subscriber in a separate process counts what the broker
delivered for every run, so a fast-but-lossy run fails the benchmark (exit 1);
so does missing the target ratio, with --strict. "add only" rows are a ceiling
for reference: Outbox.add alone, no MQTT.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.devtools.localbroker import Mosquitto, mosquitto_binary
from edge_agent.mqtt.delivery import Dispatcher, OutboxWriter
from edge_agent.mqtt.outbox import Durability, NewEvent, Outbox
from edge_agent.mqtt.payloads import (
    Decision,
    ModelInfo,
    Topics,
    encode,
    event_payload,
    new_event_id,
)
from edge_agent.mqtt.publisher import MqttOptions, MqttPublisher

HOST = "127.0.0.1"
INFLIGHT = 100
TARGET = 0.7  # edge-agent's throughput should be at least this fraction of raw paho's
DURABILITY: dict[str, Durability] = {"power-loss": "power-loss", "crash": "crash"}
VARIANTS = ("raw paho", *DURABILITY)
BROKER_CONFIG = (
    # Never drop or throttle what the counting subscriber gets.
    "max_queued_messages 0\nmax_inflight_messages 0\n"
)

DECISION = Decision(state="person", score=0.9731, previous="empty", reason="change", label="person")
MODEL = ModelInfo("mnv1", "3", "9f2c" * 16)


def make_payload(seq: int) -> bytes:
    """A real decision event (the README's schema), ~250 bytes."""
    return encode(
        event_payload(
            device="cam-01",
            pipeline="door",
            seq=seq,
            event_id=new_event_id(),
            epoch=time.time(),
            decision=DECISION,
            model=MODEL,
        )
    )


@dataclass(frozen=True)
class Run:
    variant: str
    events: int
    seconds: float
    received: int  # what the subscriber got on the run's topic

    @property
    def rate(self) -> float:
        return self.events / self.seconds


# -- the variants -------------------------------------------------------------


def run_raw(port: int, topic: str, events: int) -> float:
    acked = 0
    done = threading.Event()
    connected = threading.Event()

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if not rc.is_failure:
            connected.set()

    def on_publish(_c: mqtt.Client, _u: Any, _mid: int, _rc: ReasonCode | None, _p: Any) -> None:
        nonlocal acked
        acked += 1  # only paho's network thread writes it
        if acked == events:
            done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(INFLIGHT)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(HOST, port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("raw paho: not connected")
        start = time.perf_counter()
        for seq in range(1, events + 1):
            client.publish(topic, make_payload(seq), qos=1)
        if not done.wait(120):
            raise RuntimeError(f"raw paho: {acked}/{events} acknowledged")
        return time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()


def run_edge(port: int, topic: str, events: int, durability: Durability, state: Path) -> float:
    client_id = f"edge-{uuid.uuid4().hex[:8]}"
    path = state / f"{client_id}.db"
    outbox = Outbox(path, durability=durability, max_events=max(10_000, events), max_bytes=1 << 40)
    publisher = MqttPublisher(
        MqttOptions(
            host=HOST,
            port=port,
            client_id=client_id,
            topics=Topics("bench-status", client_id),
            max_inflight=INFLIGHT,
        )
    )
    dispatcher = Dispatcher(outbox, publisher, window=INFLIGHT)
    writer = OutboxWriter(outbox, dispatcher.wake)
    publisher.on_ack(dispatcher.on_ack)
    stop = threading.Event()
    delivery = threading.Thread(target=dispatcher.run, args=(stop,), name="delivery")
    storing = threading.Thread(target=writer.run, args=(stop,), name="outbox-writer")

    def produce() -> None:  # what Pipeline.process does per decision
        for _ in range(events):
            writer.submit(NewEvent("door", topic, make_payload, 1))

    producer = threading.Thread(target=produce, name="pipeline")
    publisher.start()
    try:
        if not publisher.connected.wait(10):
            raise RuntimeError("MqttPublisher: not connected")
        delivery.start()
        storing.start()
        start = time.perf_counter()
        producer.start()
        deadline = time.monotonic() + 120
        while dispatcher.delivered < events:  # a plain int read: takes no lock
            if time.monotonic() > deadline:
                raise RuntimeError(f"edge-agent: {dispatcher.delivered}/{events} delivered")
            time.sleep(0.001)
        elapsed = time.perf_counter() - start
        producer.join()
        depth = outbox.stats().depth
        if depth:
            raise RuntimeError(f"edge-agent: {depth} event(s) left in the outbox")
        return elapsed
    finally:
        stop.set()
        for thread in (delivery, storing):
            if thread.is_alive():
                thread.join(10)
        publisher.stop()
        outbox.close()
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()


def run_add_only(events: int, durability: Durability, state: Path) -> float:
    """The ceiling: Outbox.add alone, one thread, no MQTT, nothing read or deleted."""
    path = state / f"add-only-{uuid.uuid4().hex[:8]}.db"
    outbox = Outbox(path, durability=durability, max_events=max(10_000, events), max_bytes=1 << 40)
    try:
        start = time.perf_counter()
        for _ in range(events):
            outbox.add("door", "bench/none", make_payload, qos=1)
        return time.perf_counter() - start
    finally:
        outbox.close()
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()


# -- the counting subscriber (a separate process) -------------------------------


def subscriber_main(port: int) -> None:
    """Count messages per topic under bench/#; answer `wait TOPIC N SECONDS` on stdin."""
    counts: dict[str, int] = {}
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with lock:
            counts[msg.topic] = counts.get(msg.topic, 0) + 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"count-{os.getpid()}")
    client.on_connect = lambda c, *_: c.subscribe("bench/#", qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    client.connect(HOST, port)
    client.loop_start()
    if not subscribed.wait(10):
        sys.exit("subscriber: no SUBACK")
    print("ready", flush=True)
    for line in sys.stdin:
        _, topic, expected, seconds = line.split()
        deadline = time.monotonic() + float(seconds)
        while time.monotonic() < deadline:
            with lock:
                if counts.get(topic, 0) >= int(expected):
                    break
            time.sleep(0.001)
        # A little longer, so duplicates (QoS 1 may repeat) are seen too.
        time.sleep(0.05)
        with lock:
            print(counts.get(topic, 0), flush=True)
    client.disconnect()
    client.loop_stop()


class CountingSubscriber:
    def __init__(self, port: int) -> None:
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--subscriber", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._readline() != "ready":
            raise RuntimeError("the counting subscriber did not start")

    def _readline(self) -> str:
        assert self._process.stdout is not None
        return self._process.stdout.readline().strip()

    def received(self, topic: str, expected: int, timeout: float = 30.0) -> int:
        assert self._process.stdin is not None
        self._process.stdin.write(f"wait {topic} {expected} {timeout}\n")
        self._process.stdin.flush()
        return int(self._readline())

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(10)


# -- the benchmark ----------------------------------------------------------------


def filesystem(path: Path) -> str:
    """The type and device of the filesystem holding `path` (from /proc/mounts)."""
    best, found = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return found
    resolved = str(path.resolve())
    for line in mounts:
        device, point, kind = line.split()[:3]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, found = point, f"{kind} on {device} ({point})"
    return found


def machine(state: Path) -> list[str]:
    version = subprocess.run(
        [mosquitto_binary(), "-h"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return [
        f"cpus: {os.cpu_count()} ({platform.processor() or platform.machine()}),"
        f" {platform.system()} {platform.release()}",
        f"python {platform.python_version()}, paho-mqtt {paho.mqtt.__version__},"
        f" sqlite {sqlite3.sqlite_version}, {version[0] if version else 'mosquitto ?'}",
        f"outbox files: {state} on {filesystem(state)}",
    ]


def measure(
    variant: str, port: int, events: int, state: Path, subscriber: CountingSubscriber, label: str
) -> Run:
    topic = f"bench/{label}/{variant.replace(' ', '-')}"
    if variant in DURABILITY:
        seconds = run_edge(port, topic, events, DURABILITY[variant], state)
    else:
        seconds = run_raw(port, topic, events)
    return Run(variant, events, seconds, subscriber.received(topic, events))


def report(
    runs: list[Run], events: int, ceilings: dict[Durability, list[float]], *, strict: bool
) -> bool:
    """Print the table; False if a run lost (or duplicated) messages, or, with
    `strict`, if edge-agent missed the target ratio."""
    medians = {v: statistics.median(r.rate for r in runs if r.variant == v) for v in VARIANTS}
    raw = medians["raw paho"]
    print(f"\n{'variant':<28} {'runs (events/s)':<28} {'median':>9} {'vs raw':>7}  received")
    ok = True
    for variant in VARIANTS:
        mine = [r for r in runs if r.variant == variant]
        rates = " ".join(f"{r.rate:8.0f}" for r in mine)
        got = sum(r.received for r in mine)
        lost = got != events * len(mine)
        ok = ok and not lost
        ratio = medians[variant] / raw
        print(
            f"{variant:<28} {rates:<28} {medians[variant]:9.0f} {ratio:6.2f}x"
            f"  {got}/{events * len(mine)}{'  LOST OR DUPLICATED' if lost else ''}"
        )
    for durability, seconds in ceilings.items():
        rates = " ".join(f"{events / s:8.0f}" for s in seconds)
        median = statistics.median(events / s for s in seconds)
        name = f"add only, {durability}"
        print(f"{name:<28} {rates:<28} {median:9.0f} {median / raw:6.2f}x  (no MQTT)")
    for variant in VARIANTS[1:]:
        ratio = medians[variant] / raw
        verdict = "meets" if ratio >= TARGET else "MISSES"
        print(f"{variant}: {ratio:.2f}x raw paho, {verdict} the {TARGET}x target")
        ok = ok and (ratio >= TARGET or not strict)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=5000, help="events per run (5000)")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per variant (3)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the outbox files go (default: a temporary directory); its"
        " filesystem decides what an fsync costs",
    )
    parser.add_argument(
        "--strict", action="store_true", help=f"exit 1 if edge-agent is below {TARGET}x raw paho"
    )
    parser.add_argument("--subscriber", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.subscriber:
        subscriber_main(args.subscriber)
        return 0

    with tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp:
        state = args.state_dir or Path(tmp) / "state"
        state.mkdir(parents=True, exist_ok=True)
        (Path(tmp) / "broker").mkdir()
        broker = Mosquitto(Path(tmp) / "broker", BROKER_CONFIG, persistence=False)
        broker.start()
        subscriber = CountingSubscriber(broker.port)
        try:
            print("\n".join(machine(state)))
            size = statistics.mean(len(make_payload(n)) for n in range(1, 101))
            print(
                f"{args.events} events/run, payload ~{size:.0f} B JSON, QoS 1,"
                f" in flight {INFLIGHT}, 1 warm-up + median of {args.runs} runs per variant"
            )
            began = time.monotonic()
            warm = min(args.events, 1000)
            warmups = [measure(v, broker.port, warm, state, subscriber, "warmup") for v in VARIANTS]
            if any(r.received != warm for r in warmups):
                print(f"warm-up lost messages: {warmups}")
                return 1
            runs = [
                measure(variant, broker.port, args.events, state, subscriber, f"run{i}")
                for i in range(args.runs)
                for variant in VARIANTS
            ]
            ceilings = {
                d: [run_add_only(args.events, d, state) for _ in range(args.runs)]
                for d in DURABILITY.values()
            }
            ok = report(runs, args.events, ceilings, strict=args.strict)
            print(f"total {time.monotonic() - began:.1f}s")
        finally:
            subscriber.close()
            broker.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

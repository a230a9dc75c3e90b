"""The aarch64 smoke test: edge-agent's own code on an emulated arm64 Python.

Run by scripts/aarch64/smoke.sh under qemu-aarch64-static with PYTHONPATH set to
the aarch64 wheels and the edge-agent wheel; it can also run on any machine with
edge-agent installed (`--any-arch`). Steps, each timed:

  1. import every edge_agent module (every native dependency loads on aarch64)
     and sign/verify with Ed25519 (cryptography, as model updates do);
  2. load the bundled demo model and a real fixture model with `--runtime`;
  3. classify the fixture parrot (top-1 `macaw`) and a demo frame (`circle`);
  4. feed the frame's scores to a ClassificationPolicy: its first decision;
  5. publish that decision event with paho-mqtt, QoS 1, to `--port`, wait for the
     PUBACK, and write the exact payload bytes to `--payload-out` for the host to
     compare with what a subscriber received.

Exit 0 when every check holds; 1 with a one-line reason otherwise.
"""

# Imports of edge_agent and its dependencies are deferred into the steps, so that
# their cost under emulation is timed as a step of its own.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()


class Steps:
    """Prints each step with its duration, and keeps them for the summary line."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.times: dict[str, float] = {}
        self._last = time.perf_counter()

    def done(self, name: str, detail: str = "") -> None:
        now = time.perf_counter()
        self.times[name] = round(now - self._last, 3)
        self._last = now
        print(f"  [{self.tag}] {name:<22} {self.times[name]:7.2f} s  {detail}", flush=True)


def fail(message: str) -> None:
    print(f"  FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtime", required=True, choices=["tflite-runtime", "litert"])
    p.add_argument("--project", type=Path, required=True, help="the checkout (for models/)")
    p.add_argument("--fixtures", type=Path, required=True, help="tests/fixtures")
    p.add_argument("--port", type=int, required=True, help="the host's mosquitto, on 127.0.0.1")
    p.add_argument("--topic", required=True)
    p.add_argument("--device", default="aarch64-smoke")
    p.add_argument("--pipeline", default="camera")
    p.add_argument("--payload-out", type=Path, required=True)
    p.add_argument("--tag", default="", help="prefix of the printed lines")
    p.add_argument("--any-arch", action="store_true", help="do not insist on aarch64")
    return p.parse_args()


def import_everything(steps: Steps) -> None:
    import edge_agent

    names = [
        m.name
        for m in pkgutil.walk_packages(edge_agent.__path__, "edge_agent.")
        if not m.name.endswith("__main__")  # runs the CLI when imported
    ]
    for name in names:
        importlib.import_module(name)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    key.public_key().verify(key.sign(b"manifest"), b"manifest")  # raises if wrong
    import numpy

    steps.done("import edge_agent", f"{len(names)} modules, numpy {numpy.__version__}")


def classify(model: Any, image: Path, labels: list[str]) -> tuple[Any, list[Any]]:
    from edge_agent.model.labels import align_labels, top_k
    from edge_agent.model.preprocess import ImagePreprocessor

    tensor = ImagePreprocessor(model.inputs[0]).prepare(image.read_bytes())
    scores = model.infer(tensor)[0]
    names = align_labels(labels, int(scores.size), str(image))
    return scores, top_k(scores, names, 3)


def publish(args: argparse.Namespace, payload: bytes) -> tuple[int, str]:
    """QoS 1, MQTT 5: returns (mid, reason of the PUBACK)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    acks: dict[int, str] = {}
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{args.device}-{args.pipeline}",
        protocol=mqtt.MQTTv5,
    )
    client.on_publish = lambda _c, _u, mid, reason, _p: acks.__setitem__(mid, str(reason))
    try:
        client.connect("127.0.0.1", args.port, keepalive=30)
    except OSError as exc:
        fail(f"cannot connect to the broker on 127.0.0.1:{args.port}: {exc}")
    client.loop_start()
    try:
        info = client.publish(args.topic, payload, qos=1)
        info.wait_for_publish(timeout=60)
        check(info.is_published(), "no PUBACK within 60 s")
    finally:
        client.disconnect()
        client.loop_stop()
    return info.mid, acks.get(info.mid, "?")


def main() -> None:
    args = parse_args()
    tag = args.tag or args.runtime
    steps = Steps(tag)
    machine = platform.machine()
    check(args.any_arch or machine == "aarch64", f"this is {machine}, not aarch64")
    print(
        f"  [{tag}] Python {platform.python_version()} on {machine}, "
        f"glibc {platform.libc_ver()[1]}, {socket.gethostname()}",
        flush=True,
    )
    steps.done("python start", f"(interpreter up {time.perf_counter() - STARTED:.2f} s)")

    import_everything(steps)

    from edge_agent.model.labels import read_labels
    from edge_agent.model.runtime import Model
    from edge_agent.mqtt.payloads import ModelInfo, encode, event_payload, new_event_id
    from edge_agent.pipeline.policy import ClassificationPolicy

    models = args.project / "models"
    fixtures = args.fixtures
    shapes = Model.load(models / "shapes_int8.tflite", runtime=args.runtime)
    mobilenet = Model.load(
        fixtures / "models" / "mobilenet_v1_0.25_128_quant.tflite", runtime=args.runtime
    )
    check(shapes.runtime == args.runtime, f"loaded with {shapes.runtime}, not {args.runtime}")
    steps.done("load 2 models", f"runtime {shapes.runtime}")

    scores, top = classify(
        mobilenet,
        fixtures / "images" / "parrot.jpg",
        read_labels(fixtures / "models" / "imagenet_labels.txt"),
    )
    check(top[0].label == "macaw", f"parrot.jpg: top-1 {top[0].label!r}, expected 'macaw'")
    steps.done("classify parrot.jpg", ", ".join(f"{s.label} {s.score:.3f}" for s in top))

    shape_labels = read_labels(models / "shapes_labels.txt")
    frame = models / "samples" / "camera" / "frame_015.jpg"
    scores, top = classify(shapes, frame, shape_labels)
    check(top[0].label == "circle", f"{frame.name}: top-1 {top[0].label!r}, expected 'circle'")
    steps.done(f"classify {frame.name}", ", ".join(f"{s.label} {s.score:.3f}" for s in top))

    policy = ClassificationPolicy(shape_labels, threshold=0.5)
    decision = policy.decide(scores, time.monotonic())
    check(decision is not None, "the policy made no first decision")
    assert decision is not None
    check(
        (decision.state, decision.previous, decision.reason) == ("circle", None, "change"),
        f"unexpected decision {decision}",
    )
    steps.done("policy", f"{decision.previous} -> {decision.state} ({decision.reason})")

    payload = encode(
        event_payload(
            device=args.device,
            pipeline=args.pipeline,
            seq=1,
            event_id=new_event_id(),
            epoch=time.time(),
            decision=decision,
            model=ModelInfo(name="shapes_int8", version="local", sha256=shapes.sha256),
        )
    )
    mid, reason = publish(args, payload)
    args.payload_out.write_bytes(payload)
    steps.done("publish QoS 1", f"mid {mid}, PUBACK {reason}, {len(payload)} bytes")

    summary = {
        "runtime": args.runtime,
        "machine": machine,
        "steps": steps.times,
        "total": round(time.perf_counter() - STARTED, 3),
    }
    print(f"  [{tag}] OK {json.dumps(summary)}", flush=True)


if __name__ == "__main__":
    main()

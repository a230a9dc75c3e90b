"""How long a model update takes to serve, and what the swap costs a busy pipeline.

    .venv/bin/python benchmarks/update_swap.py [--rounds 5]

A camera pipeline runs the demo model on the demo frames as fast as it can
(files source, looping, fps 0) while a local HTTP server publishes a signed
manifest for a new model (the same network, different bytes). Each round measures,
in the same run:

  seconds to serve   from `check_now()` (what cmd/update triggers) to the first
                     inference on the new model: fetch, signature, download,
                     sha256, self-test, atomic install, swap
  inputs dropped     inputs not inferred while the swap happened: skipped as
                     bad input, failed inference, or dropped by the source
                     (target: 0)
  fps before/after   inference rate in the second before the check and after the swap
"""

from __future__ import annotations

import argparse
import functools
import http.server
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edge_agent.app.agent import Agent
from edge_agent.cli import main as edge_agent
from edge_agent.config.settings import load_settings
from edge_agent.devtools.localbroker import Mosquitto

MODELS = Path(__file__).resolve().parents[1] / "models"
SHAPES = MODELS / "shapes_int8.tflite"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/manifest.json"


def publish(site: Path, keys: Path, version: int) -> None:
    model = site / f"shapes-{version}.tflite"
    model.write_bytes(SHAPES.read_bytes() + version.to_bytes(4, "big") * 4)
    manifest = site / "manifest.json"
    for argv in (
        [
            "manifest",
            "create",
            str(model),
            "--name",
            f"shapes={model}",
            "--version",
            str(version),
            "-o",
            str(manifest),
        ],
        ["manifest", "sign", str(manifest), "--key", str(keys / "key.pem")],
    ):
        if edge_agent(argv) != 0:
            raise RuntimeError(f"edge-agent {' '.join(argv)} failed")


def config(work: Path, port: int, url: str, keys: Path) -> dict[str, Any]:
    return {
        "device_id": "bench",
        "state_dir": str(work / "state"),
        "mqtt": {"host": "127.0.0.1", "port": port},
        "update": {
            "enabled": True,
            "manifest_url": url,
            "keys": [str(keys / "key.pub")],
            "allow_http": True,
            "probation_inferences": 50,
            "interval": 3600,
        },
        "pipelines": [
            {
                "name": "cam",
                "model": str(SHAPES),
                "model_name": "shapes",
                "model_version": "1",
                "labels": str(MODELS / "shapes_labels.txt"),
                "source": {
                    "kind": "files",
                    "pattern": str(MODELS / "samples/camera/*.jpg"),
                    "loop": True,
                },
                "policy": {"kind": "classification", "threshold": 0.6},
            }
        ],
    }


def lost(pipeline: Any) -> int:
    """Inputs not inferred: every input is either inferred or counted here."""
    stats = pipeline.stats
    return int(stats.input_errors + stats.model_errors + pipeline.source.stats.dropped)


def one_round(agent: Agent, site: Path, keys: Path, version: int) -> dict[str, float]:
    pipeline = agent.pipelines[0]
    assert agent.updater is not None
    publish(site, keys, version)
    before = pipeline.stats.inferences
    time.sleep(1.0)
    fps_before = pipeline.stats.inferences - before
    lost0 = lost(pipeline)
    start = time.perf_counter()
    agent.updater.check_now()
    while pipeline.model_info.version != str(version):
        time.sleep(0.0005)
    served = time.perf_counter() - start
    time.sleep(0.2)  # let the pipeline finish the input it holds
    dropped = lost(pipeline) - lost0
    after = pipeline.stats.inferences
    time.sleep(1.0)
    return {
        "serve_s": served,
        "dropped": dropped,
        "fps_before": fps_before,
        "fps_after": pipeline.stats.inferences - after,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="update-bench-") as tmp:
        work = Path(tmp)
        site, keys = work / "site", work / "keys"
        site.mkdir()
        keys.mkdir()
        edge_agent(
            [
                "manifest",
                "keygen",
                "--private",
                str(keys / "key.pem"),
                "--public",
                str(keys / "key.pub"),
            ]
        )
        (work / "broker").mkdir()
        broker = Mosquitto(work / "broker", persistence=False)
        broker.start()
        server, url = serve(site)
        publish(site, keys, 1)
        agent = Agent(load_settings(None, config(work, broker.port, url, keys)))
        stop = threading.Event()
        runner = threading.Thread(target=agent.run, args=(stop,))
        runner.start()
        try:
            time.sleep(2)
            rounds = [one_round(agent, site, keys, v) for v in range(2, 2 + args.rounds)]
        finally:
            stop.set()
            runner.join(30)
            server.shutdown()
            broker.stop()
    report(rounds)
    return 0 if all(r["dropped"] == 0 for r in rounds) else 1


def report(rounds: list[dict[str, float]]) -> None:
    print(
        f"{'round':>5} {'seconds to serve':>17} {'inputs dropped':>15} "
        f"{'fps before':>11} {'fps after':>10}"
    )
    for i, r in enumerate(rounds, 1):
        print(
            f"{i:>5} {r['serve_s']:>17.3f} {r['dropped']:>15.0f} {r['fps_before']:>11.0f} "
            f"{r['fps_after']:>10.0f}"
        )
    serve_times = [r["serve_s"] for r in rounds]
    print(
        f"median seconds to serve: {statistics.median(serve_times):.3f}; "
        f"inputs dropped in all rounds: {sum(r['dropped'] for r in rounds):.0f} (target 0)"
    )


if __name__ == "__main__":
    sys.exit(main())

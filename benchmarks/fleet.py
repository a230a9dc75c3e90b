"""A fleet on one machine: real agents, thousands of simulated devices, one broker.

    .venv/bin/python benchmarks/fleet.py                       # 20 agents + 2000 simulated
    .venv/bin/python benchmarks/fleet.py --agents 5 --sims 500 # smaller, quicker

Starts a throwaway mosquitto, a static HTTP server (strong ETags, 304s, byte
counts), `--agents` real `edge-agent run` processes (the bundled vibration model
on the sample CSV at 64 samples/s, updates polled every 10 s) and `--sims`
simulated devices in one process (edge_agent.devtools.fleetsim: the MQTT contract
with a 30 s will delay; manifest polls with the real Fetcher and
verify_manifest). Measures, in this order:

  1. manifest polls per second and bytes per unchanged poll (request + 304);
  2. `edge-agent fleet status` over the whole fleet;
  3. a staged rollout (5, 25, 100 %) of a new model to every device;
  4. a rollout of a model that fails on a tenth of the simulated devices: it
     must halt at stage 1 and return the fleet to the previous model;
  5. MQTT bytes per device per day at the demo's decision rate (from agent-00);
  6. broker restarts (SIGKILL, 3 s down, restart): time until 99 % of the
     simulated devices are back, broker peak CPU and RSS, for the first retry
     spread over 10 s, for full jitter without that spread, and for the paho
     schedule the agent had (1-2 s, doubling, no jitter).

Everything is bounded (each wait has a deadline) and torn down at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fleet_devices import Fleet
from fleet_parts import Broker, Site, StaticSite, percentile, run_cli

DEMO_WINDOWS_PER_S = 400 / 32  # the demo's vibration pipeline: 400 Hz, hop 32
BENCH_WINDOWS_PER_S = 64 / 64  # the agents here: 64 Hz, hop 64
DAY = 86_400


def measure_polls(fleet: Fleet, http: StaticSite, seconds: float) -> dict[str, Any]:
    fleet.wait_online(fleet.total, 120, "every device online")
    time.sleep(12)  # every device has polled once and stored its ETag
    before = http.counts()
    time.sleep(seconds)
    after = http.counts()
    polls = after["manifest"] - before["manifest"]
    unchanged = after["304"] - before["304"]
    return {
        "polls_per_s": round(polls / seconds, 1),
        "unchanged_share": round(unchanged / max(1, polls), 3),
        "bytes_per_unchanged_poll": http.bytes_per_304(),
    }


def fleet_status(broker: Broker, work: Path) -> dict[str, Any]:
    started = time.monotonic()
    out = run_cli(["fleet", "status", "--json", "--port", str(broker.port),
                   "--db", str(work / "fleet.db"), "--seconds", "8"])  # fmt: skip
    status = json.loads(out.stdout)
    online = sum(1 for d in status["devices"] if d["online"])
    return {"devices": len(status["devices"]), "online": online,
            "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def rollout(broker: Broker, site: Site, manifest: Path, work: Path) -> dict[str, Any]:
    started = time.monotonic()
    done = run_cli(
        ["fleet", "rollout", str(manifest), "--key", str(site.private),
         "--publish-dir", str(site.root), "--port", str(broker.port),
         "--db", str(work / "fleet.db"),
         "--stages", "5,25,100", "--min-devices", "20", "--max-failure", "0.05",
         "--soak", "5s", "--stage-timeout", "60s", "--settle", "10s", "--json"],
        check=False, timeout=400,
    )  # fmt: skip
    result = json.loads(done.stdout)
    states: dict[str, int] = {}
    for row in result["rows"]:
        states[row["state"]] = states.get(row["state"], 0) + 1
    return {
        "exit": done.returncode,
        "completed": result["completed"],
        "halted_at": result["halted_at"],
        "reason": result["reason"],
        "outcomes": states,
        "returned": result["returned"],
        "seconds": round(time.monotonic() - started, 1),
        "published_version": site.published()["version"],
    }


def storm(fleet: Fleet, broker: Broker, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    fleet.restart_sims(mode)
    fleet.wait_sims_connected(args.sims, 90)
    time.sleep(2)
    down = time.time()
    broker.kill()
    time.sleep(3)
    up = broker.start_measured()
    deadline = time.monotonic() + args.storm_timeout
    back: list[float] = []
    while time.monotonic() < deadline:
        broker.sample()
        stats = fleet.sim_stats()
        back = sorted(t - up for t in stats["connected_at"] if t >= down)
        if len(back) >= args.sims:
            break
        time.sleep(0.1)
    time.sleep(1.2)
    stats = fleet.sim_stats()
    back = sorted(t - up for t in stats["connected_at"] if t >= down)
    return {
        "mode": mode,
        "back": len(back),
        "p50_s": round(percentile(back, 50), 2) if back else None,
        "p99_s": round(percentile(back, 99), 2) if len(back) >= 0.99 * args.sims else None,
        "peak_connects_per_s": max(Counter(int(t) for t in back).values(), default=0),
        "broker_peak_cpu_pct": broker.peak_cpu,
        "broker_peak_rss_mb": broker.peak_rss_mb(),
        "refused_connects": stats["connect_failures"],
        "agents_back": fleet.agents_back_after(up, 20),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--poll-interval", type=float, default=20.0, help="simulated devices")
    parser.add_argument("--storm-timeout", type=float, default=25.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    started = time.monotonic()
    results: dict[str, Any] = {"agents": args.agents, "sims": args.sims}
    with Site() as site, StaticSite(site.root) as http, Broker(site.work) as broker:
        fleet = Fleet(site, broker, http.url("/manifest.json"), args)
        try:
            fleet.start()
            results["startup_s"] = round(time.monotonic() - started, 1)
            results["polls"] = measure_polls(fleet, http, 15)
            print("polls:", results["polls"], flush=True)
            results["status"] = fleet_status(broker, site.work)
            print("status:", results["status"], flush=True)
            results["rollout_ok"] = rollout(broker, site, site.new_manifest(2), site.work)
            print("rollout to all:", results["rollout_ok"], flush=True)
            results["rollout_bad"] = rollout(broker, site, site.new_manifest(3), site.work)
            print("rollout with failures:", results["rollout_bad"], flush=True)
            results["mqtt_per_device_day"] = fleet.bytes_per_day(
                DEMO_WINDOWS_PER_S / BENCH_WINDOWS_PER_S, DAY
            )
            print("MQTT bytes/device/day:", results["mqtt_per_device_day"], flush=True)
            results["storms"] = [
                storm(fleet, broker, mode, args) for mode in ("window10", "jitter", "legacy")
            ]
            for row in results["storms"]:
                print("broker restart:", row, flush=True)
        finally:
            fleet.stop()
    results["total_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m edge_agent.devtools.fleetsim_cli`: a simulated fleet as a process
(see fleetsim.py), for benchmarks that restart brokers around it."""

from __future__ import annotations

import argparse
import resource
import signal
import threading
from pathlib import Path

from edge_agent.devtools.fleetsim import FleetSim, SimOptions
from edge_agent.util.backoff import BackoffOptions


def main(argv: list[str] | None = None) -> int:
    """Run a simulated fleet until SIGTERM/SIGINT or --duration."""
    p = argparse.ArgumentParser(prog="python -m edge_agent.devtools.fleetsim_cli")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--id-prefix", default="sim")
    p.add_argument("--manifest-url", required=True)
    p.add_argument("--key", type=Path, action="append", required=True)
    p.add_argument("--model-sha256", required=True)
    p.add_argument("--fail-fraction", type=float, default=0.0)
    p.add_argument("--fail-mode", default="rollback")
    p.add_argument("--fail-sha256", help="only this model fails (default: any update)")
    p.add_argument("--model-version", default="1")
    p.add_argument("--nofile", type=int, default=8192, help="raise the open files limit")
    p.add_argument("--first-window", type=float, default=0.0)
    p.add_argument("--legacy-backoff", action="store_true")
    p.add_argument("--poll-interval", type=float, default=3600.0)
    p.add_argument("--nudge-jitter", type=float, default=10.0)
    p.add_argument("--probation", type=float, default=1.0)
    p.add_argument("--ramp", type=float, default=5.0)
    p.add_argument("--will-delay", type=int, default=30)
    p.add_argument("--stats", type=Path)
    p.add_argument("--duration", type=float, default=600.0, help="stop after this (a bound)")
    a = p.parse_args(argv)
    _raise_nofile(a.nofile)
    sim = FleetSim(
        SimOptions(
            host=a.host,
            port=a.port,
            count=a.count,
            id_prefix=a.id_prefix,
            manifest_url=a.manifest_url,
            keys=tuple(a.key),
            model_sha256=a.model_sha256,
            fail_fraction=a.fail_fraction,
            fail_mode=a.fail_mode,
            fail_sha256=a.fail_sha256,
            model_version=a.model_version,
            backoff=BackoffOptions(1.0, 60.0, a.first_window),
            legacy_backoff=a.legacy_backoff,
            poll_interval=a.poll_interval,
            nudge_jitter=a.nudge_jitter,
            probation=a.probation,
            ramp=a.ramp,
            will_delay=a.will_delay,
            stats_file=a.stats,
        )
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    sim.start()
    done.wait(a.duration)
    sim.stop()
    return 0


def _raise_nofile(wanted: int) -> None:
    """A connection is a file descriptor: 2,000 devices need more than the usual 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


if __name__ == "__main__":
    raise SystemExit(main())

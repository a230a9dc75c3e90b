"""Thousands of simulated devices in one process, speaking the agent's MQTT
contract (status with a delayed last will, info, update, state, alerts; the
per-device and fleet-wide update nudges) and polling a real manifest with the
real update client code (see simdevice.py). For `benchmarks/fleet.py` and the
fleet tests:

    python -m edge_agent.devtools.fleetsim_cli --port 1883 --count 2000 \\
        --manifest-url http://127.0.0.1:8000/manifest.json --key update-key.pub \\
        --model-sha256 <sha of the serving model> --stats stats.json

One asyncio loop holds the connections (mqttwire: a few KB each); HTTP polls run
on a few worker threads. Reconnects use `util.backoff` (optionally the paho
schedule the agent had before: 1-2 s, doubling, no jitter, `legacy_backoff`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.devtools.mqttwire import Will, WireClient, WireError
from edge_agent.devtools.simdevice import SimDevice
from edge_agent.mqtt.payloads import ModelInfo, encode
from edge_agent.update.fetch import Fetcher, FetchOptions
from edge_agent.update.keys import load_public_key
from edge_agent.update.nudge import fleet_update_topic, nudge_delay
from edge_agent.update.targeting import rollout_bucket
from edge_agent.util.backoff import Backoff, BackoffOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimOptions:
    host: str
    port: int
    count: int
    manifest_url: str
    keys: tuple[Path, ...]
    model_sha256: str  # the model every device serves at the start
    prefix: str = "edge"
    id_prefix: str = "sim"
    model_name: str = "vibration"
    model_version: str = "1"
    pipeline: str = "vibration"
    fail_fraction: float = 0.0  # devices whose updates fail, picked by a hash of their id
    fail_mode: str = "rollback"
    fail_sha256: str | None = None  # only this model fails on them; None: every update
    sites: tuple[str, ...] = ("lab", "field")
    keepalive: int = 60
    will_delay: int = 30
    backoff: BackoffOptions = field(default_factory=BackoffOptions)
    legacy_backoff: bool = False
    poll_interval: float = 3600.0
    poll_jitter: float = 0.1
    nudge_jitter: float = 10.0
    probation: float = 1.0
    ramp: float = 5.0  # the first connects are spread over this many seconds
    workers: int = 6
    seed: int = 0
    stats_file: Path | None = None


class FleetSim:
    """`start()` runs the fleet on a background thread; `stop()` ends it."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.rng = random.Random(options.seed)  # noqa: S311 - a simulation
        self.keys: tuple[Ed25519PublicKey, ...] = tuple(load_public_key(k) for k in options.keys)
        self.fetcher = Fetcher(FetchOptions(allow_http=True))
        self.devices = [self._device(i) for i in range(options.count)]
        self.clients = {d.device: WireClient(d.device, self._handler(d)) for d in self.devices}
        self.connected_at: dict[str, float] = {}
        self.disconnected_at: dict[str, float] = {}
        self.counters = {"connects": 0, "connect_failures": 0, "disconnects": 0, "checks": 0}
        self.mqtt_bytes = {"out": 0, "in": 0}
        self._pool = ThreadPoolExecutor(options.workers, thread_name_prefix="fleetsim-http")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_poll: dict[str, float] = {}

    def _device(self, index: int) -> SimDevice:
        o = self.options
        name = f"{o.id_prefix}-{index:05d}"
        fails = rollout_bucket("fleetsim-fail", name) < o.fail_fraction * 100
        return SimDevice(
            device=name,
            pipeline=o.pipeline,
            model=ModelInfo(o.model_name, o.model_version, o.model_sha256),
            tags={"site": o.sites[index % len(o.sites)]},
            fail=o.fail_mode if fails else None,
            fail_only=o.fail_sha256,
        )

    def failing(self) -> list[str]:
        return [d.device for d in self.devices if d.fail]

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fleetsim", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("fleetsim: the event loop did not start")

    def stop(self, timeout: float = 20.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        tasks = [asyncio.create_task(self._life(d, i)) for i, d in enumerate(self.devices)]
        ticker = asyncio.create_task(self._ticker())
        await self._stop.wait()
        for client in self.clients.values():
            client.abort()
        for task in [*tasks, ticker]:
            task.cancel()
        await asyncio.gather(*tasks, ticker, return_exceptions=True)
        self._write_stats()

    # -- connections -------------------------------------------------------------

    async def _life(self, device: SimDevice, index: int) -> None:
        """Connect, serve until the connection drops, wait the backoff, again."""
        o = self.options
        await asyncio.sleep(o.ramp * index / max(1, o.count))
        rng = random.Random(f"{o.seed}:{device.device}")  # noqa: S311 - a simulation
        backoff = Backoff(o.backoff, rng)
        legacy_first = max(1, math.ceil(rng.uniform(1.0, 2.0)))  # as the old publisher
        client = self.clients[device.device]
        will = Will(self._topic(device, "status"), b"offline", delay=o.will_delay)
        while True:
            try:
                await client.connect(
                    o.host,
                    o.port,
                    keepalive=o.keepalive,
                    will=will,
                    session_expiry=max(o.will_delay, 2 * o.keepalive),
                )
            except (OSError, TimeoutError, WireError):
                self.counters["connect_failures"] += 1
            else:
                backoff.reset()
                self._on_connected(device, client)
                await client.run()
                self.counters["disconnects"] += 1
                self.disconnected_at[device.device] = time.time()
            attempt = backoff.attempt
            delay = backoff.next_delay()
            if o.legacy_backoff:
                delay = min(o.backoff.cap, legacy_first * 2.0**attempt)
            await asyncio.sleep(delay)

    def _on_connected(self, device: SimDevice, client: WireClient) -> None:
        self.counters["connects"] += 1
        self.connected_at[device.device] = time.time()
        o = self.options
        client.subscribe(fleet_update_topic(o.prefix), self._topic(device, "cmd/update"))
        self._publish(device, "status", b"online")
        self._publish(device, "info", encode(device.info()))
        self._publish(device, f"{device.pipeline}/state", encode(device.state()))
        if device.update is not None:
            self._publish(device, "update", encode(device.update))
        if device.device not in self._next_poll:
            # As the agent's update thread: a first check 0-5 s after start.
            self._next_poll[device.device] = time.monotonic() + self.rng.uniform(0, 5)

    def _publish(self, device: SimDevice, suffix: str, payload: bytes, retain: bool = True) -> None:
        client = self.clients[device.device]
        if client.connected:
            self.mqtt_bytes["out"] += client.publish(
                self._topic(device, suffix), payload, 1, retain
            )

    def _topic(self, device: SimDevice, suffix: str) -> str:
        return f"{self.options.prefix}/{device.device}/{suffix}"

    def _handler(self, device: SimDevice) -> Any:
        def on_message(topic: str, _payload: bytes) -> None:
            self.mqtt_bytes["in"] += len(topic) + len(_payload)
            delay = nudge_delay(self.options.nudge_jitter, self.rng)
            due = time.monotonic() + delay
            self._next_poll[device.device] = min(self._next_poll.get(device.device, due), due)

        return on_message

    # -- polling ---------------------------------------------------------------------

    def _interval(self) -> float:
        o = self.options
        spread = o.poll_interval * o.poll_jitter
        return o.poll_interval + self.rng.uniform(-spread, spread)

    async def _ticker(self) -> None:
        """Every 0.2 s: start due checks; every keepalive/2: ping. Writes stats."""
        last_ping = last_stats = time.monotonic()
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            for device in self.devices:
                due = self._next_poll.get(device.device)
                if due is not None and now >= due and device.device not in self._busy:
                    self._busy.add(device.device)
                    self._next_poll[device.device] = now + self._interval()
                    task = asyncio.create_task(self._check(device))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            if now - last_ping >= self.options.keepalive / 2:
                last_ping = now
                for client in self.clients.values():
                    if client.connected:
                        client.ping()
            if now - last_stats >= 1.0:
                last_stats = now
                self._write_stats()

    async def _check(self, device: SimDevice) -> None:
        assert self._loop is not None
        try:
            self.counters["checks"] += 1
            o = self.options
            reports = await self._loop.run_in_executor(
                self._pool, device.check, self.fetcher, o.manifest_url, self.keys
            )
            for report in reports:
                self._publish(device, "update", encode(report))
            if reports and reports[-1]["state"] == "installed":
                self._publish_model(device)
                self._loop.call_later(o.probation, self._probation_over, device, device.trial)
            elif reports:
                self._publish(device, "info", encode(device.info()))
        except Exception:
            log.exception("fleetsim: %s: check failed", device.device)
        finally:
            self._busy.discard(device.device)

    def _probation_over(self, device: SimDevice, trial: int) -> None:
        verdict = device.probation_over(trial)
        if verdict is None:
            return  # a later install replaced this trial; its own timer judges it
        self._publish(device, "update", encode(verdict))
        self._publish_model(device)
        if device.failing in ("errors", "drift") and self._loop is not None:
            self._loop.call_later(self.options.probation, self._misbehave, device)

    def _misbehave(self, device: SimDevice) -> None:
        if device.failing == "errors":
            device.errors += 5
            self._publish(device, f"{device.pipeline}/state", encode(device.state()))
        else:
            self._publish(device, f"{device.pipeline}/alert", encode(device.alert()), False)

    def _publish_model(self, device: SimDevice) -> None:
        device.inferences += 20
        self._publish(device, f"{device.pipeline}/state", encode(device.state()))
        self._publish(device, "info", encode(device.info()))

    # -- numbers -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for device in self.devices:
            state = (device.update or {}).get("state", "none")
            states[state] = states.get(state, 0) + 1
        return {
            "devices": len(self.devices),
            "connected": sum(1 for c in self.clients.values() if c.connected),
            **self.counters,
            "polls": sum(d.polls for d in self.devices),
            "unchanged": sum(d.unchanged for d in self.devices),
            "update_states": states,
            "mqtt_bytes": dict(self.mqtt_bytes),
            "wire_bytes_out": sum(c.bytes_out for c in self.clients.values()),
            "connected_at": list(self.connected_at.values()),
            "time": time.time(),
        }

    def _write_stats(self) -> None:
        path = self.options.stats_file
        if path is not None:
            temp = path.with_name(path.name + ".tmp")
            temp.write_text(json.dumps(self.snapshot()), encoding="utf-8")
            temp.replace(path)

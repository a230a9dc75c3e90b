"""MQTT 5 Will Delay on a real mosquitto, as the wiring note prescribes it: a short
drop does not publish `offline`, a long one does, and without a Session Expiry
Interval at least as long the delay is void (the will goes out at once)."""

from __future__ import annotations

import asyncio

import pytest

from edge_agent.devtools.mqttwire import Will, WireClient
from tests.broker import Mosquitto
from tests.subscriber import Subscriber

pytestmark = pytest.mark.integration
DELAY = 2


def offline(watcher: Subscriber, device: str) -> bool:
    return any(m.payload == b"offline" for m in watcher.on(f"{device}/status"))


async def connect(port: int, device: str, session_expiry: int) -> WireClient:
    client = WireClient(device)
    will = Will(f"edge/{device}/status", b"offline", delay=DELAY)
    await client.connect("127.0.0.1", port, will=will, session_expiry=session_expiry)
    client.publish(f"edge/{device}/status", b"online", qos=1, retain=True)
    return client


async def scenario(port: int, watcher: Subscriber) -> None:
    short = await connect(port, "short", 60)
    long = await connect(port, "long", 60)
    void = await connect(port, "void", 0)
    await asyncio.sleep(0.3)  # the onlines are delivered before anything drops
    for client in (short, long, void):
        client.abort()  # the network goes away: no DISCONNECT
    short = await connect(port, "short", 60)  # back well within the delay
    reader = asyncio.create_task(short.run())
    for _ in range(200):  # the long drop's will, after DELAY seconds
        if offline(watcher, "long"):
            break
        await asyncio.sleep(0.05)
    short.disconnect()
    await reader


def test_will_delay(broker: Mosquitto) -> None:
    watcher = Subscriber(broker.port, "edge/+/status", client_id="will-watcher")
    try:
        asyncio.run(scenario(broker.port, watcher))
        assert offline(watcher, "long")
        # By the time the long drop's delayed will arrived, the short drop's would
        # have too: it dropped at the same moment.
        assert not offline(watcher, "short")
        # Session expiry 0 ends the session at the drop, and the will with it:
        # it arrived before the delayed one.
        topics = [m.topic for m in watcher.messages if m.payload == b"offline"]
        assert topics.index("edge/void/status") < topics.index("edge/long/status")
    finally:
        watcher.close()

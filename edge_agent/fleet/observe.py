"""The operator's MQTT connection: reads every device's retained and live topics
into a `FleetView`, and sends the fleet-wide nudge. paho-mqtt 2.x, MQTT 5.

paho is used only here; its errors become `PublishError` at this boundary.
Messages are applied on paho's thread under a lock; readers take `snapshot()`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import PublishError
from edge_agent.fleet.view import Change, DeviceView, FleetView
from edge_agent.update.nudge import fleet_update_topic

log = logging.getLogger(__name__)

TOPICS = ("+/status", "+/info", "+/update", "+/+/state", "+/+/alert", "+/+/shadow")


@dataclass(frozen=True)
class BrokerOptions:
    host: str = "localhost"
    port: int = 1883
    prefix: str = "edge"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None  # set: TLS, verified against this CA (else the system's)
    tls: bool = False
    client_id: str | None = None  # default: edge-agent-fleet-<random>
    connect_timeout: float = 10.0


ChangeHandler = Callable[[list[Change]], None]


class FleetObserver:
    """`start()` connects and subscribes; `snapshot()` returns copies of the views."""

    def __init__(self, options: BrokerOptions, on_changes: ChangeHandler | None = None) -> None:
        self.options = options
        self.view = FleetView(options.prefix)
        self.messages = 0
        self.retained = 0  # messages the broker sent from its retained store
        self._lock = threading.Lock()
        self._on_changes = on_changes
        self._subscribed = threading.Event()
        self._client = self._build()

    def _build(self) -> mqtt.Client:
        opts = self.options
        client_id = opts.client_id or f"edge-agent-fleet-{uuid.uuid4().hex[:8]}"
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if opts.username:
            client.username_pw_set(opts.username, opts.password)
        if opts.tls or opts.ca_file:
            client.tls_set(ca_certs=opts.ca_file)
        client.reconnect_delay_set(1, 10)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        """Connect and wait for the subscriptions; PublishError if the broker does not answer."""
        opts = self.options
        try:
            self._client.connect_async(opts.host, opts.port, keepalive=30, clean_start=True)
        except (OSError, ValueError) as exc:
            raise PublishError(f"cannot connect to {opts.host}:{opts.port}: {exc}") from exc
        self._client.loop_start()
        if not self._subscribed.wait(opts.connect_timeout):
            self.stop()
            raise PublishError(
                f"broker {opts.host}:{opts.port} did not accept the connection and "
                f"subscriptions within {opts.connect_timeout:g} s"
            )

    def settle(self, seconds: float, quiet: float = 0.5) -> None:
        """Wait until retained messages stop arriving (none for `quiet` s), at most
        `seconds`: a big fleet's retained topics take a moment. Live messages do
        not count: a busy fleet never goes quiet."""
        deadline = time.monotonic() + seconds
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if self.retained != last:
                last, since = self.retained, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)

    def snapshot(self) -> dict[str, DeviceView]:
        with self._lock:
            return {name: _copy(view) for name, view in self.view.devices.items()}

    def summary(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return self.view.summary()

    def device(self, name: str) -> DeviceView | None:
        with self._lock:
            view = self.view.devices.get(name)
            return None if view is None else _copy(view)

    def nudge(self, payload: dict[str, Any]) -> None:
        """The fleet-wide `cmd/update`; QoS 1, not retained (a retained nudge would
        make every reconnecting device poll)."""
        topic = fleet_update_topic(self.options.prefix)
        data = json.dumps(payload, separators=(",", ":")).encode()
        info = self._client.publish(topic, data, qos=1, retain=False)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise PublishError(f"{topic}: {mqtt.error_string(info.rc)}")
        info.wait_for_publish(self.options.connect_timeout)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    # paho callbacks, on its network thread: each catches everything.

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        try:
            if rc.is_failure:
                log.error("fleet: the broker refused the connection: %s", rc)
                return
            prefix = self.options.prefix
            # QoS 0: a broker sends the retained messages of a QoS 1 subscription
            # through its per-client queue (mosquitto: 20 in flight + 1000 queued by
            # default) and drops the rest; a fleet has far more.
            client.subscribe([(f"{prefix}/{topic}", 0) for topic in TOPICS])
        except Exception:
            log.exception("fleet: error in the connect callback")

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _m: int, codes: Any, _p: Any) -> None:
        failed = [code for code in codes if getattr(code, "is_failure", False)]
        if failed:
            log.error("fleet: subscriptions refused: %s", failed)
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            with self._lock:
                self.messages += 1
                self.retained += 1 if message.retain else 0
                changes = self.view.apply(message.topic, bytes(message.payload), time.time())
            if changes and self._on_changes is not None:
                self._on_changes(changes)
        except Exception:
            log.exception("fleet: error handling %s", message.topic)


def _copy(view: DeviceView) -> DeviceView:
    return DeviceView(
        **{
            **vars(view),
            "tags": dict(view.tags),
            "models": dict(view.models),
            "update": dict(view.update),
            "errors": dict(view.errors),
            "alerts": dict(view.alerts),
            "shadows": dict(view.shadows),
        }
    )

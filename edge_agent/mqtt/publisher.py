"""The MQTT connection: online/offline status with a last will, publishes, acks.

paho-mqtt is used only here; its return codes and callbacks are translated
into counters, log lines and `PublishError` at this boundary.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import PublishError
from edge_agent.mqtt.payloads import STATUS_OFFLINE, STATUS_ONLINE, Topics
from edge_agent.util.logs import RateLimitedLog
from edge_agent.util.tls import MqttTls
from edge_agent.util.tls import apply as apply_tls

log = logging.getLogger(__name__)
limited = RateLimitedLog(log)

AckHandler = Callable[[int, ReasonCode | None], None]
# MQTT 5 brokers say how many unacknowledged QoS 1/2 messages they take (Receive
# Maximum, 65535 when unsaid); 3.1.1 ones cannot, and mosquitto silently drops
# QoS 2 messages beyond its default max_inflight_messages, 20.
MQTT5_DEFAULT_QUOTA = 65_535
MQTT311_QUOTA = 20


@dataclass(frozen=True)
class MqttOptions:
    host: str
    port: int
    client_id: str
    topics: Topics
    protocol: str = "5"
    keepalive: int = 30
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: MqttTls | None = None  # None: plain TCP
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    max_inflight: int = 100


@dataclass
class PublisherStats:
    published: int = 0  # handed to paho
    acknowledged: int = 0  # PUBACK/PUBCOMP received (or sent, for QoS 0)
    refused: int = 0  # the broker answered with a failure reason code
    bytes_out: int = 0  # topic + payload of everything handed to paho
    connects: int = 0
    disconnects: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def sent(self, size: int) -> None:  # the hot path: once per message
        with self._lock:
            self.published += 1
            self.bytes_out += size

    def answered(self, refused: bool) -> None:
        with self._lock:
            if refused:
                self.refused += 1
            else:
                self.acknowledged += 1


class MqttPublisher:
    """`publish` is the verb; `start` connects in the background (retrying until
    the broker answers) and `stop` says goodbye."""

    def __init__(self, options: MqttOptions) -> None:
        self.options = options
        self.stats = PublisherStats()
        self.connected = threading.Event()
        self._on_ack: AckHandler | None = None
        self._commands: dict[str, Callable[[bytes], None]] = {}
        self._stopping = False
        self._v5 = options.protocol == "5"
        self._quota = MQTT5_DEFAULT_QUOTA if self._v5 else MQTT311_QUOTA
        self._client = self._build_client()

    def _build_client(self) -> mqtt.Client:
        opts = self.options
        v5 = opts.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=opts.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            # A clean session on every connection: the broker keeps no state for
            # us, and paho re-sends every unacknowledged QoS 2 message as a new
            # PUBLISH. With a kept session paho re-sends PUBREL instead, and a
            # broker that lost that session (restarted) answers PUBCOMP for a
            # message it never received: an event settled but never delivered.
            # At least once either way; consumers de-duplicate by id.
            clean_session=None if v5 else True,
        )
        if opts.username:
            client.username_pw_set(opts.username, opts.password)
        apply_tls(client, opts.tls)  # ConfigError for unusable certificate or key files
        client.will_set(opts.topics.status, STATUS_OFFLINE, qos=1, retain=True)
        # paho doubles the delay without jitter; a random start spreads a fleet's
        # reconnects after a broker restart.
        first = opts.reconnect_min * random.uniform(1.0, 2.0)  # noqa: S311 - not crypto
        longest = max(1, math.ceil(opts.reconnect_max))
        client.reconnect_delay_set(min(max(1, math.ceil(first)), longest), longest)
        client.max_inflight_messages_set(min(opts.max_inflight, self._quota))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        return client

    def on_ack(self, handler: AckHandler) -> None:
        """Call `handler(mid, reason)` on paho's thread for every acknowledged
        message; it must be quick and take no lock a publishing thread holds."""
        self._on_ack = handler

    def on_command(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Subscribe to `topic` (again after every reconnect) and call `handler(payload)`
        on paho's thread; it must be quick (set an event, no blocking work)."""
        self._commands[topic] = handler
        self._client.message_callback_add(topic, self._dispatch_command)

    def _dispatch_command(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            handler = self._commands.get(message.topic)
            if handler is not None:
                log.info("command received on %s", message.topic)
                handler(bytes(message.payload))
        except Exception:
            log.exception("error handling command on %s", message.topic)

    def start(self) -> None:
        opts = self.options
        kwargs: dict[str, Any] = {"keepalive": opts.keepalive}
        if opts.protocol == "5":
            kwargs["clean_start"] = True
        try:
            self._client.connect_async(opts.host, opts.port, **kwargs)
        except (OSError, ValueError) as exc:
            raise PublishError(f"cannot connect to {opts.host}:{opts.port}: {exc}") from exc
        self._client.loop_start()

    @property
    def send_quota(self) -> int:
        """How many QoS 1/2 messages may await acknowledgement at once: the broker's
        Receive Maximum from its last CONNACK (MQTT 5)."""
        return self._quota

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry: float | None = None,
    ) -> int:
        """Hand a message to paho; returns its message id. While disconnected paho
        keeps QoS 1/2 messages in memory and sends them after reconnecting; the
        outbox, not paho, is what makes events durable. `expiry` (seconds) becomes
        the MQTT 5 message expiry interval."""
        properties = None
        if expiry is not None and self.options.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = max(1, math.ceil(expiry))
        info = self._send(topic, payload, qos, retain, properties)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise PublishError(f"{topic}: {mqtt.error_string(info.rc)}")
        return int(info.mid)

    def _send(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self.stats.sent(len(topic) + len(payload))  # topics are ASCII in practice
        return info

    def stop(self, timeout: float = 5.0) -> None:
        """Publish `offline` (the will is not sent on a clean disconnect), wait up
        to `timeout` for it and all in flight to be acknowledged, disconnect."""
        deadline = time.monotonic() + timeout
        self._stopping = True
        if self.connected.is_set():
            info = self._send(self.options.topics.status, STATUS_OFFLINE, 1, True)
            while not info.is_published() and time.monotonic() < deadline:
                time.sleep(0.02)
        self._client.disconnect()
        self._client.loop_stop()

    # paho callbacks: run on paho's network thread. An exception here has killed
    # or stalled that thread in past paho versions, so each one catches all.

    def _on_connect(
        self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, props: Properties | None
    ) -> None:
        try:
            if rc.is_failure:
                limited.error("connect", "broker %s refused the connection: %s", self._where(), rc)
                return
            if self._v5:  # paho itself ignores it (and cannot change its limit now)
                self._quota = int(getattr(props, "ReceiveMaximum", MQTT5_DEFAULT_QUOTA))
            log.info(
                "connected to %s as %s (at most %d unacknowledged)",
                self._where(),
                self.options.client_id,
                min(self.options.max_inflight, self._quota),
            )
            self.stats.add(connects=1)
            self.connected.set()
            self._send(self.options.topics.status, STATUS_ONLINE, 1, True)
            for topic in self._commands:
                self._client.subscribe(topic, qos=1)
        except Exception:
            log.exception("error in MQTT connect callback")

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        try:
            limited.warning("connect", "cannot reach broker %s; retrying", self._where())
        except Exception:
            log.exception("error in MQTT connect-fail callback")

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        try:
            was_connected = self.connected.is_set()
            self.connected.clear()
            if self._stopping:
                log.info("disconnected from %s", self._where())
            elif was_connected:
                self.stats.add(disconnects=1)
                log.warning("disconnected from %s: %s; reconnecting", self._where(), rc)
            else:
                limited.warning("connect", "cannot reach broker %s: %s", self._where(), rc)
        except Exception:
            log.exception("error in MQTT disconnect callback")

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode | None, _p: Any
    ) -> None:
        # Takes no lock a publishing thread may hold: paho holds its own here.
        try:
            refused = rc is not None and rc.is_failure
            self.stats.answered(refused)
            if refused:
                limited.error(f"refused-{rc}", "broker refused message %d: %s", mid, rc)
            if self._on_ack is not None:
                self._on_ack(mid, rc)
        except Exception:
            log.exception("error in MQTT publish callback")

    def _where(self) -> str:
        return f"{self.options.host}:{self.options.port}"

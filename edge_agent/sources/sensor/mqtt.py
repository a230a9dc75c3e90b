"""Samples from MQTT messages, one per message (Zigbee2MQTT, Tasmota, ESPHome)."""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import InputError
from edge_agent.sources.sensor.common import DEFAULT_QUEUE_SIZE, SensorSource, check_channels
from edge_agent.sources.sensor.parsing import parse_line
from edge_agent.sources.sensor.window import SlidingWindow
from edge_agent.util.tls import MqttTls
from edge_agent.util.tls import apply as apply_tls

logger = logging.getLogger(__name__)


class MqttSensorSource(SensorSource):
    """Samples from MQTT messages, one per message, e.g. a Zigbee2MQTT sensor's
    `{"temperature": 21.5, "humidity": 40}` with `fields=["temperature", "humidity"]`.
    Payloads are parsed like `LinesSource` lines, so a JSON array, a CSV line or a
    bare number (with one field) work too.

    paho's network thread delivers messages and reconnects by itself (and
    resubscribes in `on_connect`). Its callbacks catch every exception, which
    would otherwise kill that thread, and take only locks that no thread holds
    while calling into paho (the queue's and the counters').
    """

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        topic: str,
        fields: list[str],
        window: SlidingWindow,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        tls: MqttTls | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        check_channels(len(fields), window)
        super().__init__(
            name, window=window, origin=f"mqtt://{host}:{port}/{topic}", queue_size=queue_size
        )
        self._topic = topic
        self._fields = list(fields)
        self._subscribed = threading.Event()
        self._client = self._make_client(client_id, username, password)
        apply_tls(self._client, tls)
        self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()

    @property
    def subscribed(self) -> bool:
        """True while connected and subscribed: for health checks, and tests that
        must not publish before anyone listens."""
        return self._subscribed.is_set()

    def _make_client(
        self, client_id: str | None, username: str | None, password: str | None
    ) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "")
        if username is not None:
            client.username_pw_set(username, password)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _halt(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._subscribed.clear()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            if reason.is_failure:
                self._reject("connect refused", str(reason))
                return
            client.subscribe(self._topic, qos=0)
        except Exception as exc:
            self._reject("callback failed", repr(exc))

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        try:
            self._reject("connect failed", "broker unreachable; retrying")
        except Exception:
            logger.exception("%s: callback failed", self.name)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        try:
            if any(reason.is_failure for reason in reasons):
                self._reject("subscribe refused", f"{self._topic}: {reasons}")
                return
            self._subscribed.set()
        except Exception as exc:
            self._reject("callback failed", repr(exc))

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        try:
            self._subscribed.clear()
            if not self._stop.is_set():
                self._reject("connection lost", f"{reason}; reconnecting")
        except Exception as exc:
            self._reject("callback failed", repr(exc))

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            self.stats.add(bytes_in=len(message.payload))
            text = message.payload.decode("utf-8")
            sample = parse_line(text, len(self._fields), self._fields)
            self._sample(sample)
        except (InputError, UnicodeDecodeError) as exc:
            self._reject("bad message", f"on {message.topic}: {exc}")
        except Exception as exc:
            self._reject("callback failed", repr(exc))

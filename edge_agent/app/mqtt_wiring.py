"""Settings -> the MQTT client's options: broker, credentials, TLS."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from edge_agent.config import settings as cfg
from edge_agent.mqtt.payloads import Topics
from edge_agent.mqtt.publisher import MqttOptions
from edge_agent.util.tls import MqttTls, read_secret


def topics_for(settings: cfg.Settings) -> Topics:
    return Topics(settings.mqtt.prefix, settings.device_id)


def mqtt_options(settings: cfg.Settings) -> MqttOptions:
    m = settings.mqtt
    return MqttOptions(
        host=m.host,
        port=m.port,
        client_id=m.client_id or settings.device_id,
        topics=topics_for(settings),
        protocol=m.protocol,
        keepalive=m.keepalive,
        username=m.username,
        password=mqtt_password(m),
        tls=mqtt_tls(m.tls),
        reconnect_min=m.reconnect_min,
        reconnect_max=m.reconnect_max,
        max_inflight=settings.outbox.inflight,
        first_retry_window=min(m.first_retry_window, m.reconnect_max),
        will_delay=m.will_delay,
    )


def mqtt_password(m: cfg.MqttSettings) -> str | None:
    """`password`, or the content of `password_file` (read once, at start-up)."""
    if m.password_file is not None:
        return read_secret(m.password_file, key="mqtt.password_file")
    return secret(m.password)


def mqtt_tls(t: cfg.MqttTlsSettings | None) -> MqttTls | None:
    if t is None:
        return None
    return MqttTls(
        ca_file=_path(t.ca_file),
        cert_file=_path(t.cert_file),
        key_file=_path(t.key_file),
        insecure=t.insecure,
        alpn=tuple(t.alpn),
        min_version=t.min_version,
    )


def _path(value: Path | None) -> str | None:
    return None if value is None else str(value)


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None

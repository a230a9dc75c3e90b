"""Home Assistant MQTT discovery: each pipeline's entities, announced retained.

`discovery_configs` is pure; `Discovery` publishes the configs, re-announces when
Home Assistant starts, and deletes (empty retained payload) the entities of
pipelines that are gone, using a file of the topics announced, across restarts.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge_agent.errors import PublishError
from edge_agent.mqtt.payloads import STATUS_OFFLINE, STATUS_ONLINE, Topics, encode
from edge_agent.util.fs import atomic_write

log = logging.getLogger(__name__)

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
HA_ONLINE = b"online"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def node_id(device_id: str) -> str:
    """The device id as a discovery topic level: characters outside [a-zA-Z0-9_-] become `_`."""
    return _UNSAFE.sub("_", device_id)


def status_topic(discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX) -> str:
    """Where Home Assistant publishes `online` when it starts (its birth message)."""
    return f"{discovery_prefix}/status"


@dataclass(frozen=True)
class EntitySpec:
    """One pipeline's state entity: a `binary_sensor` when it has exactly two known
    states and `on_state` is one of them, else a `sensor` showing the state name."""

    pipeline: str
    states: tuple[str, ...] | None = None
    on_state: str | None = None

    @property
    def binary(self) -> bool:
        states = set(self.states or ())
        return len(states) == 2 and self.on_state in states


def threshold_spec(pipeline: str, *, on_state: str, off_state: str) -> EntitySpec:
    return EntitySpec(pipeline, (on_state, off_state), on_state)


def classification_spec(
    pipeline: str, *, states: Mapping[str, str] | None, default_state: str
) -> EntitySpec:
    """Known states only with a `states` mapping (else every label is a state); with
    two, the one that is not `default_state` is ON."""
    if states is None:
        return EntitySpec(pipeline)
    known = tuple(sorted({*states.values(), default_state}))
    on = next((s for s in known if s != default_state), None) if len(known) == 2 else None
    return EntitySpec(pipeline, known, on)


def device_fields(device_id: str, prefix: str, sw_version: str) -> dict[str, Any]:
    """What every entity of the device shares: availability and the device block (for
    the entities of detection and wake-word pipelines; `discovery_configs` builds
    the same)."""
    return {
        "availability_topic": Topics(prefix, device_id).status,
        "payload_available": STATUS_ONLINE.decode(),
        "payload_not_available": STATUS_OFFLINE.decode(),
        "dev": {
            "identifiers": [f"edge_agent_{device_id}"],
            "name": device_id,
            "manufacturer": "edge-agent",
            "model": "edge-agent",
            "sw_version": sw_version,
        },
        "origin": {"name": "edge-agent", "sw_version": sw_version},
    }


def _literal(text: str) -> str:
    """A Jinja string literal (JSON escapes are Jinja escapes)."""
    return json.dumps(text, ensure_ascii=False)


def discovery_configs(
    *,
    device_id: str,
    prefix: str,
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
    entities: Sequence[EntitySpec],
    sw_version: str,
    latency: bool = True,
) -> dict[str, bytes]:
    """Config topic -> compact JSON payload, for every entity of every pipeline:
    its state, its model version and (with `latency`, i.e. telemetry on) the
    p50 inference latency read from the telemetry topic."""
    topics = Topics(prefix, device_id)
    node = node_id(device_id)
    common: dict[str, Any] = {
        "availability_topic": topics.status,
        "payload_available": STATUS_ONLINE.decode(),
        "payload_not_available": STATUS_OFFLINE.decode(),
        "dev": {
            "identifiers": [f"edge_agent_{device_id}"],
            "name": device_id,
            "manufacturer": "edge-agent",
            "model": "edge-agent",
            "sw_version": sw_version,
        },
        "origin": {"name": "edge-agent", "sw_version": sw_version},
    }
    configs: dict[str, bytes] = {}

    def add(component: str, spec: EntitySpec, what: str, **fields: str) -> None:
        object_id = f"{node}_{node_id(spec.pipeline)}_{what}"
        topic = f"{discovery_prefix}/{component}/{node}/{node_id(spec.pipeline)}_{what}/config"
        if topic in configs:
            raise ValueError(f"two entities on {topic}: pipeline names clash once sanitised")
        configs[topic] = encode(
            {
                "unique_id": f"edge_agent_{device_id}_{spec.pipeline}_{what}",
                "object_id": object_id,  # HA < 2025.10
                "default_entity_id": f"{component}.{object_id}",  # HA >= 2025.10
                **fields,
                **common,
            }
        )

    for spec in entities:
        name, state_topic = spec.pipeline, topics.state(spec.pipeline)
        if spec.binary:  # "None" (no decision yet) is HA's unknown
            on = _literal(spec.on_state or "")
            template = (
                f"{{{{ 'ON' if value_json.state == {on} else "
                "('None' if value_json.state is none else 'OFF') }}"
            )
            binary = {"payload_on": "ON", "payload_off": "OFF"}
        else:
            template, binary = "{{ value_json.state }}", {}
        add(
            "binary_sensor" if spec.binary else "sensor",
            spec,
            "state",
            name=name,
            state_topic=state_topic,
            json_attributes_topic=state_topic,  # the counters, as attributes
            value_template=template,
            **binary,
        )
        add(
            "sensor",
            spec,
            "model_version",
            name=f"{name} model version",
            state_topic=state_topic,
            value_template="{{ value_json.model.version }}",
            entity_category="diagnostic",
        )
        if latency:  # "None" (HA: unknown) while latency_ms is {}, before the first inference
            where = f"value_json.pipelines.get({_literal(name)}, {{}}).get('latency_ms', {{}})"
            add(
                "sensor",
                spec,
                "latency_p50",
                name=f"{name} latency p50",
                state_topic=topics.telemetry,
                value_template=f"{{{{ {where}.get('p50') }}}}",
                unit_of_measurement="ms",
                state_class="measurement",
                entity_category="diagnostic",
            )
    return configs


class Sink(Protocol):
    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int:
        """Queue one message; raises PublishError if it cannot even be queued."""
        ...


class Timer(Protocol):  # what Discovery uses of threading.Timer
    def start(self) -> None: ...
    def cancel(self) -> None: ...


def _daemon_timer(interval: float, function: Callable[[], None]) -> Timer:
    timer = threading.Timer(interval, function)
    timer.daemon = True  # a pending announce never holds the process up
    timer.name = "ha-discovery"
    return timer


class Discovery:
    """Announces `configs` (retained, QoS 1) and keeps `announced_file` listing every
    config topic that may still be retained on the broker."""

    def __init__(
        self,
        *,
        sink: Sink,
        configs: dict[str, bytes],
        announced_file: Path,
        delay: Callable[[], float] = lambda: random.uniform(1, 5),  # noqa: S311 - not crypto
        timer_factory: Callable[[float, Callable[[], None]], Timer] = _daemon_timer,
    ) -> None:
        self.configs = dict(configs)
        self._sink = sink
        self._file = announced_file
        self._delay = delay
        self._timer_factory = timer_factory
        self._lock = threading.Lock()  # the file
        self._timer_lock = threading.Lock()  # apart: paho's thread must not wait on fsync
        self._timer: Timer | None = None
        self._closed = False

    def announce(self) -> None:
        """Publish every config; the topics are recorded before they are published, so
        a crash in between leaves nothing on the broker that the file does not list."""
        with self._lock:
            announced = self._announced()
            self._record(announced | set(self.configs), announced)
            for topic, payload in self.configs.items():
                self._publish(topic, payload)
        log.info("home assistant: announced %d entities", len(self.configs))

    def on_homeassistant_status(self, payload: bytes) -> None:
        """Home Assistant started (`online` on its status topic): announce again after
        `delay()` seconds, so a fleet does not answer all at once. Quick: for paho's
        thread. A request while one is pending is merged into it."""
        if payload.strip() != HA_ONLINE:
            return
        with self._timer_lock:
            if self._closed or self._timer is not None:
                return
            self._timer = self._timer_factory(self._delay(), self._fire)
            self._timer.start()

    def remove_stale(self, current: Collection[str]) -> list[str]:
        """Delete (empty retained payload) every recorded entity whose topic is not in
        `current` (all of them when it is empty: discovery turned off); return those."""
        with self._lock:
            announced = self._announced()
            stale = sorted(announced - set(current))
            for topic in stale:
                self._publish(topic, b"")
            self._record(announced - set(stale), announced)
        if stale:
            log.info("home assistant: removed %d entities: %s", len(stale), ", ".join(stale))
        return stale

    def cancel(self) -> None:
        """Stop a pending announce and ignore later requests (at shutdown)."""
        with self._timer_lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _fire(self) -> None:
        with self._timer_lock:
            self._timer = None
            if self._closed:
                return
        try:
            self.announce()
        except Exception:  # a timer thread: log, never die silently
            log.exception("home assistant: re-announce failed")

    def _publish(self, topic: str, payload: bytes) -> None:
        try:
            self._sink.publish(topic, payload, qos=1, retain=True)
        except PublishError as exc:
            log.error("home assistant: cannot publish %s: %s", topic, exc)

    def _announced(self) -> set[str]:
        try:
            topics = json.loads(self._file.read_bytes())
            if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
                raise ValueError("not a list of topics")
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            log.warning("home assistant: ignoring unreadable %s: %s", self._file, exc)
            return set()
        return set(topics)

    def _record(self, topics: set[str], before: set[str]) -> None:
        """Rewrite the file only when it changes (flash wears); no topics, no file."""
        try:
            if not topics:
                self._file.unlink(missing_ok=True)
            elif topics != before:
                atomic_write(self._file, json.dumps(sorted(topics), indent=0).encode())
        except OSError as exc:
            log.error("home assistant: cannot record announced topics in %s: %s", self._file, exc)

"""Settings -> the device's side of fleet operations: the retained `info` topic,
what is re-published on every (re)connect, and the fleet-wide update nudge.

A broker that restarts without persistence forgets every retained message; one
with persistence may have saved them before the last change. Either way the
device is the source of truth, so each connect re-publishes its status (the
publisher does that), `info`, every pipeline's state and the last update status.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from edge_agent import __version__
from edge_agent.app.mqtt_wiring import topics_for
from edge_agent.config import settings as cfg
from edge_agent.mqtt.fleetinfo import Board, info_payload, info_topic, read_board
from edge_agent.mqtt.payloads import encode
from edge_agent.mqtt.publisher import MqttPublisher
from edge_agent.pipeline.runner import Pipeline
from edge_agent.update.nudge import FleetNudge, fleet_update_topic
from edge_agent.update.targeting import rollout_bucket

if TYPE_CHECKING:
    from edge_agent.update.store import ModelStore

log = logging.getLogger(__name__)

# Update transitions after which what `info` says (models, trusted manifest,
# bucket) may have changed.
INFO_CHANGES = frozenset({"installed", "committed", "rolled_back", "up_to_date", "skipped"})


class FleetPresence:
    """Registers its re-publishing on the publisher's connect hooks; `update_reported`
    is told every update status the agent publishes; `cancel` at shutdown."""

    def __init__(
        self,
        settings: cfg.Settings,
        publisher: MqttPublisher,
        pipelines: Sequence[Pipeline],
        store: ModelStore | None,
        board: Board | None = None,
    ) -> None:
        self.settings = settings
        self._publisher = publisher
        self._pipelines = list(pipelines)
        self._store = store
        self._board = board if board is not None else read_board()
        self._topic = info_topic(settings.mqtt.prefix, settings.device_id)
        self._update_topic = topics_for(settings).update
        self._lock = threading.Lock()
        self._last_update: bytes | None = None  # the update status as last published
        self.nudge: FleetNudge | None = None
        publisher.on_connected(self.publish_info)
        for pipeline in self._pipelines:
            publisher.on_connected(pipeline.publish_state)
        publisher.on_connected(self._republish_update)

    def info(self) -> dict[str, Any]:
        """The `info` payload (schema in mqtt/fleetinfo.py) as things are now."""
        manifest, bucket = None, None
        if self._store is not None:
            manifest = self._store.trusted_version()
            salt = self._store.rollout_salt()
            bucket = None if salt is None else rollout_bucket(salt, self.settings.device_id)
        runtime = self._pipelines[0].model.runtime if self._pipelines else "unknown"
        return info_payload(
            device=self.settings.device_id,
            agent_version=__version__,
            runtime=runtime,
            board=self._board,
            models={p.name: p.model_info for p in self._pipelines},
            manifest_version=manifest,
            bucket=bucket,
            tags=self.settings.fleet.tags,
            epoch=time.time(),
        )

    def publish_info(self) -> None:
        self._publisher.publish(self._topic, encode(self.info()), qos=1, retain=True)

    def update_reported(self, payload: bytes, state: str) -> None:
        """Remember the update status just published (for the next connect) and
        refresh `info` after a transition that may have changed it."""
        with self._lock:
            self._last_update = payload
        if state in INFO_CHANGES:
            try:
                self.publish_info()
            except Exception:  # the update thread must carry on
                log.exception("cannot publish %s after the update state %s", self._topic, state)

    def _republish_update(self) -> None:
        with self._lock:
            payload = self._last_update
        if payload is not None:
            self._publisher.publish(self._update_topic, payload, qos=1, retain=True)

    def listen_for_nudges(self, check_now: Callable[[], None]) -> FleetNudge:
        """Subscribe to `{prefix}/fleet/cmd/update`: check after a random delay
        within `update.nudge_jitter`, so a fleet does not poll in the same second."""
        self.nudge = FleetNudge(self.settings.update.nudge_jitter, check_now)
        self._publisher.on_command(
            fleet_update_topic(self.settings.mqtt.prefix), self.nudge.on_message
        )
        return self.nudge

    def cancel(self) -> None:
        if self.nudge is not None:
            self.nudge.cancel()

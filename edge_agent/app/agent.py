"""The composition root: builds everything from the settings, runs, shuts down."""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_agent import __version__
from edge_agent.app import loop_wiring, model_kinds, mqtt_wiring, telemetry, wiring
from edge_agent.app.fleet_wiring import FleetPresence
from edge_agent.app.sdnotify import Heartbeats, Notifier, Watchdog
from edge_agent.app.statelock import StateDirLock
from edge_agent.app.supervision import Supervisor
from edge_agent.config import settings as cfg
from edge_agent.errors import EdgeAgentError, ModelError
from edge_agent.mqtt import homeassistant as ha
from edge_agent.mqtt.delivery import Dispatcher, OutboxWriter
from edge_agent.mqtt.payloads import encode
from edge_agent.mqtt.publisher import MqttPublisher
from edge_agent.pipeline.policy import Policy
from edge_agent.pipeline.runner import Pipeline

if TYPE_CHECKING:
    from edge_agent.update.manager import UpdateManager
    from edge_agent.update.ring import DeviceKeyring
    from edge_agent.update.store import ModelStore

log = logging.getLogger(__name__)

PIPELINE = "pipeline-"  # thread name prefix
# Whatever the disk or the broker do, a stop must end well within systemd's
# 30 s: storing what pipelines decided last, then delivering, are each bounded.
WRITE_TIMEOUT = 5.0


def keep_image_buffers_mapped() -> None:
    """glibc hands each decoded frame's buffers back to the kernel and maps new
    ones for the next frame: hundreds of page faults per frame, a third of the
    decode time. Raising the mmap and trim thresholds keeps them in the heap.
    Linux/glibc only; elsewhere nothing happens."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, 64 << 20)
        mallopt(M_TRIM_THRESHOLD, 128 << 20)
        # One malloc arena per thread (decoders, interpreter, paho...) costs
        # resident memory a 1 GB board does not have; two serve these threads.
        mallopt(M_ARENA_MAX, 2)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # from glibc's malloc.h


def ha_entity(p: cfg.PipelineSettings) -> ha.EntitySpec:
    """A pipeline's Home Assistant state entity, from its policy's known states."""
    pol = p.policy
    if isinstance(pol, cfg.ThresholdPolicySettings):
        return ha.threshold_spec(p.name, on_state=pol.on_state, off_state=pol.off_state)
    if not isinstance(pol, cfg.ClassificationPolicySettings):  # detection, wake word
        return ha.EntitySpec(p.name)  # the decision string; kinds.py adds the rest
    return ha.classification_spec(p.name, states=pol.states, default_state=pol.default_state)


class Agent:
    """`run` is the verb: it blocks until `stop` is set (or, with `until_done`,
    until every finite source is exhausted), then shuts down cleanly."""

    def __init__(self, settings: cfg.Settings, *, notifier: Notifier | None = None) -> None:
        keep_image_buffers_mapped()
        self.settings = settings
        # Before anything touches the outbox: a second agent on this state_dir stops here.
        self.state_lock = StateDirLock.acquire(settings.state_dir)
        try:
            self._build(settings, notifier)
        except BaseException:
            self.state_lock.release()
            raise

    def _build(self, settings: cfg.Settings, notifier: Notifier | None) -> None:
        self.notifier = notifier if notifier is not None else Notifier(None)  # systemd
        self.heartbeats = Heartbeats()  # pipelines beat; the watchdog pings while all do
        self.publisher = MqttPublisher(mqtt_wiring.mqtt_options(settings))
        self.outbox = wiring.build_outbox(settings)
        self.dispatcher = Dispatcher(self.outbox, self.publisher, window=settings.outbox.inflight)
        self.writer = OutboxWriter(
            self.outbox, self.dispatcher.wake, max_pending=settings.outbox.max_events
        )
        self.publisher.on_ack(self.dispatcher.on_ack)
        self.store = self._build_store()
        self.keys = self._build_keys()
        self.pipelines = self._build_pipelines()
        self.fleet = FleetPresence(settings, self.publisher, self.pipelines, self.store)
        # Sample capture, shadow models, feedback: hooked into the pipelines, or nothing.
        self.loop = loop_wiring.build_loop(settings, self.pipelines, self.publisher)
        self.updater = self._build_updater()
        self.discovery = self._build_discovery()
        self.threads = Supervisor(self.heartbeats)  # by name
        self._delivery_stop = threading.Event()
        self.started = time.time()  # telemetry's uptime_s
        self.metrics: telemetry.MetricsServer | None = None
        self.reload_requested = threading.Event()  # set by SIGHUP
        self.reloader: Callable[[], cfg.Settings] | None = None
        self._loaded = settings  # the last configuration read, applied where it could be

    def _build_store(self) -> ModelStore | None:
        # The update machinery (and `cryptography`, ~7 MB) is loaded only if used.
        if not self.settings.update.enabled:
            return None
        from edge_agent.app import update_wiring  # noqa: PLC0415

        return update_wiring.build_store(self.settings)

    def _build_keys(self) -> DeviceKeyring | None:
        """The device key and cached group keys, if encrypted models may be met."""
        if not wiring.needs_device_key(self.settings):
            return None
        from edge_agent.app import update_wiring  # noqa: PLC0415

        return update_wiring.build_keyring(self.settings, self.store)

    def _build_updater(self) -> UpdateManager | None:
        if self.store is None:
            return None
        from edge_agent.app import update_wiring  # noqa: PLC0415

        topics = mqtt_wiring.topics_for(self.settings)

        def publish(status: dict[str, Any]) -> None:
            payload = encode(status)
            self.publisher.publish(topics.update, payload, qos=1, retain=True)
            self.fleet.update_reported(payload, status["state"])  # info, and again on connect

        updater = update_wiring.build_manager(
            self.settings, self.store, self.pipelines, publish, self.keys
        )
        self.publisher.on_command(topics.command("update"), lambda _payload: updater.check_now())
        self.fleet.listen_for_nudges(updater.check_now)
        return updater

    def _build_discovery(self) -> ha.Discovery:
        """Home Assistant entities for every configured pipeline (one whose model did
        not load keeps its entities); with discovery off, none: `run` removes any
        announced before."""
        h = self.settings.homeassistant
        configs: dict[str, bytes] = {}
        if h.enabled:
            configs = ha.discovery_configs(
                device_id=self.settings.device_id,
                prefix=self.settings.mqtt.prefix,
                discovery_prefix=h.discovery_prefix,
                entities=[ha_entity(p) for p in self.settings.pipelines],
                sw_version=__version__,
                latency=self.settings.telemetry.interval > 0,
            )
            configs.update(model_kinds.discovery_configs(self.settings, __version__))
        discovery = ha.Discovery(
            sink=self.publisher,
            configs=configs,
            announced_file=self.settings.state_dir / "homeassistant.json",
        )
        if h.enabled:  # HA's birth message: re-announce after a random 1-5 s
            self.publisher.on_command(
                ha.status_topic(h.discovery_prefix), discovery.on_homeassistant_status
            )
        return discovery

    def _build_pipelines(self) -> list[Pipeline]:
        built, failed = [], []
        for p in self.settings.pipelines:
            try:
                built.append(
                    wiring.build_pipeline(
                        self.settings,
                        p,
                        sink=self.publisher,
                        outbox=self.outbox,
                        submit=self.writer.submit,
                        store=self.store,
                        on_progress=functools.partial(self.heartbeats.beat, p.name),
                        keys=self.keys,
                    )
                )
            except ModelError as exc:
                # One broken model must not take the other pipelines down.
                log.error("pipeline %s not started: %s", p.name, exc)
                failed.append(p.name)
        if not built:
            raise ModelError(f"no pipeline could start ({', '.join(failed)})")
        return built

    def run(
        self,
        stop: threading.Event,
        *,
        until_done: bool = False,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.publisher.start()
        # Queued (QoS 1) until connected. Stale entities first: a removed pipeline,
        # a changed device id or prefix, or discovery turned off.
        self.discovery.remove_stale(self.discovery.configs)
        if self.discovery.configs:
            self.discovery.announce()
        # Watched: if one dies, the watchdog stops being fed, as for a pipeline.
        watched = self._delivery_stop
        self.threads.start("delivery", self.dispatcher.run, watched, stop=watched)
        self.threads.start("outbox-writer", self.writer.run, watched, stop=watched)
        self.loop.start(self.threads, watched)
        for pipeline in self.pipelines:
            self.heartbeats.register(pipeline.name)  # pipelines beat for themselves
            self.threads.start(PIPELINE + pipeline.name, self._run_pipeline, pipeline, stop)
        if self.updater is not None:
            # A download that hangs must not keep a stopped agent alive; installs
            # are atomic renames, so ending it mid-way loses nothing.
            self.threads.start("update", self.updater.run, watched, stop=watched, daemon=True)
        self._start_telemetry()
        self.notifier.ready(f"{len(self.pipelines)} pipeline(s) running")
        if on_ready:
            on_ready()
        watchdog = Watchdog(self.notifier, self.heartbeats)
        pipelines = self.threads.threads(self.threads.names(PIPELINE))
        while not stop.is_set():
            if until_done and not any(t.is_alive() for t in pipelines):
                break
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.notifier.reloading()
                pending = self.reload()
                self.notifier.ready(
                    f"reloaded; a restart would apply: {', '.join(pending)}"
                    if pending
                    else f"reloaded; {len(self.pipelines)} pipeline(s) running"
                )
            self.threads.beat_alive()
            watchdog.tick()
            stop.wait(0.2)
        self.notifier.stopping()
        self.shutdown(stop)

    def telemetry_snapshot(self) -> dict[str, Any]:
        """The telemetry payload; /metrics shows the same numbers."""
        snap = telemetry.snapshot(
            self.settings.device_id, self.pipelines, self.outbox.stats(), self.started, time.time()
        )
        samples = self.loop.snapshot()
        if samples is not None:
            snap["samples"] = samples
        return snap

    def _start_telemetry(self) -> None:
        """Stopped with the delivery threads, before the publisher says offline."""
        t = self.settings.telemetry
        if t.interval > 0:
            topic = mqtt_wiring.topics_for(self.settings).telemetry

            def publish(payload: bytes) -> None:
                self.publisher.publish(topic, payload, qos=0)  # a lost sample: the next one

            sender = telemetry.TelemetryPublisher(t.interval, self.telemetry_snapshot, publish)
            self.threads.start("telemetry", sender.run, self._delivery_stop, daemon=True)
        if t.prometheus_port:
            server = telemetry.MetricsServer(t.prometheus_port, self.telemetry_snapshot)
            try:
                server.start()
            except OSError as exc:  # the port is taken: MQTT telemetry still works
                log.error("metrics: cannot serve on port %d: %s", t.prometheus_port, exc)
            else:
                self.metrics = server

    def reload(self) -> list[str]:
        """Apply a new configuration where that can be done live (log level, decision
        policies); return (and log) the changed keys that need a restart."""
        if self.reloader is None:
            return []
        try:
            new = self.reloader()
            applied = self._apply_changes(new)
        except EdgeAgentError as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            return []
        except Exception:  # a bug must not take the main loop (signals, watchdog) down
            log.exception("reload failed, the running configuration stays")
            return []
        pending = [k for k in cfg.changed_keys(self.settings, new) if not self._live(k, new)]
        log.info(
            "reloaded: %d change(s) applied live%s",
            len(applied),
            f" ({', '.join(applied)})" if applied else "",
        )
        if pending:
            log.warning("reload: these changes need a restart: %s", ", ".join(pending))
        return pending

    def _apply_changes(self, new: cfg.Settings) -> list[str]:
        """Every live change, or none: the new policies are all built before any is
        installed, so a reload that fails half-way (a missing labels file) changes
        nothing. Returns the keys applied."""
        applied: list[str] = []
        policies: dict[str, tuple[Pipeline, Policy]] = {}
        for key in cfg.changed_keys(self._loaded, new):
            if not self._live(key, new):
                continue
            built = None if key == "log_level" else self._policy_for(key, new)
            if key == "log_level" or built is not None:
                applied.append(key)
            if built is not None:
                policies[built[0].name] = built
        if "log_level" in applied:
            logging.getLogger().setLevel(new.log_level.upper())
        for pipeline, policy in policies.values():
            pipeline.policy = policy
        self._loaded = new
        return applied

    def _live(self, key: str, new: cfg.Settings) -> bool:
        """Whether `key` can change without a restart: the log level, and the policy
        of a pipeline that is still at the same place in the list."""
        if key == "log_level":
            return True
        parts = key.split(".")
        if len(parts) < 3 or parts[0] != "pipelines" or parts[2] != "policy":
            return False
        index = int(parts[1])
        return (
            index < len(self.settings.pipelines)
            and index < len(new.pipelines)
            and self.settings.pipelines[index].name == new.pipelines[index].name
        )

    def _policy_for(self, key: str, new: cfg.Settings) -> tuple[Pipeline, Policy] | None:
        """The new policy of the pipeline that `key` belongs to, built but not installed."""
        p = new.pipelines[int(key.split(".")[1])]
        pipeline = next((x for x in self.pipelines if x.name == p.name), None)
        if pipeline is None:  # its model did not load at start
            return None
        return pipeline, wiring.rebuild_policy(p, pipeline, self.store, self.keys)

    def _run_pipeline(self, pipeline: Pipeline, stop: threading.Event) -> None:
        try:
            pipeline.run(stop)
            # Done on purpose (stopped, or a finite source ended): no longer watched.
            # One that died stays watched, so its silence gets the service restarted.
            self.heartbeats.unregister(pipeline.name)
        except EdgeAgentError as exc:
            log.error("pipeline %s stopped: %s", pipeline.name, exc)
        except Exception:
            log.exception("pipeline %s crashed", pipeline.name)

    def shutdown(self, stop: threading.Event, flush_timeout: float = 5.0) -> None:
        """Stop sources, let the inference in flight finish, deliver what the
        broker will take within `flush_timeout`, say offline. Undelivered events
        stay in the outbox for the next start."""
        stop.set()
        for pipeline in self.pipelines:
            pipeline.source.close()
        pipelines = self.threads.names(PIPELINE)
        self.threads.join(pipelines, timeout=10)
        self._delivery_stop.set()  # the writer, the dispatcher, the updater, telemetry
        self.threads.join([n for n in self.threads.names() if n not in pipelines], timeout=10)
        if self.metrics is not None:
            self.metrics.close()
        self.writer.flush(WRITE_TIMEOUT)  # what could not be stored is logged, by pipeline
        if not self.dispatcher.drain(flush_timeout):
            log.warning(
                "stopping with %d event(s) still in the outbox; they are sent on the next start",
                self.outbox.stats().depth,
            )
        self.discovery.cancel()
        self.fleet.cancel()
        self.publisher.stop(timeout=2.0)
        self.outbox.close()
        self.state_lock.release()
        log.info("stopped")

"""The composition root: builds everything from the settings, runs, shuts down."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edge_agent import settings as cfg
from edge_agent import wiring
from edge_agent.errors import EdgeAgentError, ModelError
from edge_agent.pipeline import Pipeline
from edge_agent.publisher import MqttPublisher

log = logging.getLogger(__name__)


class Agent:
    """`run` is the verb: it blocks until `stop` is set (or, with `until_done`,
    until every finite source is exhausted), then shuts down cleanly."""

    def __init__(self, settings: cfg.Settings) -> None:
        self.settings = settings
        self.publisher = MqttPublisher(wiring.mqtt_options(settings))
        self.pipelines = self._build_pipelines()
        self._threads: list[threading.Thread] = []

    def _build_pipelines(self) -> list[Pipeline]:
        built, failed = [], []
        for p in self.settings.pipelines:
            try:
                built.append(wiring.build_pipeline(self.settings, p, self.publisher))
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
        for pipeline in self.pipelines:
            thread = threading.Thread(
                target=self._run_pipeline, args=(pipeline, stop), name=f"pipeline-{pipeline.name}"
            )
            thread.start()
            self._threads.append(thread)
        if on_ready:
            on_ready()
        while not stop.is_set():
            if until_done and not any(t.is_alive() for t in self._threads):
                break
            stop.wait(0.2)
        self.shutdown(stop)

    def _run_pipeline(self, pipeline: Pipeline, stop: threading.Event) -> None:
        try:
            pipeline.run(stop)
        except EdgeAgentError as exc:
            log.error("pipeline %s stopped: %s", pipeline.name, exc)
        except Exception:
            log.exception("pipeline %s crashed", pipeline.name)

    def shutdown(self, stop: threading.Event, flush_timeout: float = 5.0) -> None:
        """Stop sources, let the inference in flight finish, drain, say offline."""
        stop.set()
        for pipeline in self.pipelines:
            pipeline.source.close()
        for thread in self._threads:
            thread.join(timeout=10)
        deadline = time.monotonic() + flush_timeout
        while self.publisher.in_flight() > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.publisher.stop(timeout=max(0.5, deadline - time.monotonic()))
        log.info("stopped")

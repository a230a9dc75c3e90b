"""The agent's threads, kept by name, and what happens when one dies.

A watched thread that ends before it was asked to stop (an exception, or a
plain return) has died: the death is logged at once with its reason, and the
thread stays registered with the heartbeats without beating again, so the
systemd watchdog stops being fed and the service is restarted, exactly as for a
pipeline that died. While a watched thread is alive the main loop beats for it
(`beat_alive`): these threads block on purpose (a disk-full retry, a download),
so being alive, not being busy, is their sign of health.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from edge_agent.app.sdnotify import Heartbeats

log = logging.getLogger(__name__)


class Supervisor:
    """Starts named threads and notices the death of watched ones. `start`,
    `beat_alive` and `join` are called from the main thread."""

    def __init__(self, heartbeats: Heartbeats) -> None:
        self._heartbeats = heartbeats
        self._threads: dict[str, threading.Thread] = {}
        self._watched: set[str] = set()
        self._lock = threading.Lock()
        self.deaths: dict[str, str] = {}  # thread name -> reason

    def start(
        self,
        name: str,
        target: Callable[..., None],
        *args: object,
        stop: threading.Event | None = None,
        daemon: bool = False,
    ) -> None:
        """Run `target(*args)` on a thread called `name`. With `stop`, the thread is
        watched: ending while `stop` is not set is a death. `daemon`: a thread that
        must never keep the process alive after a stop (it holds nothing to save)."""
        if name in self._threads:
            raise ValueError(f"a thread named {name} was already started")
        if stop is not None:
            self._watched.add(name)
            self._heartbeats.register(name)
        thread = threading.Thread(
            target=self._run, args=(name, target, args, stop), name=name, daemon=daemon
        )
        self._threads[name] = thread
        thread.start()

    def _run(
        self,
        name: str,
        target: Callable[..., None],
        args: tuple[object, ...],
        stop: threading.Event | None,
    ) -> None:
        try:
            target(*args)
        except Exception as exc:
            self._died(name, f"{type(exc).__name__}: {exc}", exc)
            return
        if stop is not None and not stop.is_set():
            self._died(name, "it returned before it was asked to stop", None)

    def _died(self, name: str, reason: str, exc: BaseException | None) -> None:
        with self._lock:
            self.deaths[name] = reason
        log.error(
            "thread %s died: %s; the watchdog is no longer fed, so systemd restarts the agent",
            name,
            reason,
            exc_info=exc,
        )

    def beat_alive(self) -> None:
        """Beat for every watched thread still alive; a dead one stays silent."""
        with self._lock:
            dead = set(self.deaths)
        for name in self._watched - dead:
            if self._threads[name].is_alive():
                self._heartbeats.beat(name)

    def threads(self, names: Iterable[str]) -> list[threading.Thread]:
        return [self._threads[n] for n in names if n in self._threads]

    def names(self, prefix: str = "") -> list[str]:
        return [n for n in self._threads if n.startswith(prefix)]

    def join(self, names: Iterable[str], timeout: float) -> list[str]:
        """Wait up to `timeout` seconds for each; return those still running."""
        stuck = []
        for name in names:
            thread = self._threads.get(name)
            if thread is None:
                continue
            thread.join(timeout)
            if thread.is_alive():
                stuck.append(name)
        if stuck:
            log.error("thread(s) still running after %.0f s: %s", timeout, ", ".join(stuck))
        return stuck

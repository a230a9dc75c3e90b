"""sd_notify(3) without libsystemd: readiness, status and watchdog pings to systemd.

The protocol is one AF_UNIX datagram of `KEY=value` lines sent to the socket named
by `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading "@").
Without `$NOTIFY_SOCKET` (not run by systemd, or not `Type=notify`) every call is
a no-op. A failed send is logged (rate-limited) and never raised: telling systemd
how we are must not be what stops the agent.

The watchdog is only worth having if a ping means "the work is moving". So the
pipelines `beat()` a `Heartbeats` on every turn of their loop (an input processed,
or a poll of the source that returned empty), and `Watchdog.tick()` on the main
thread sends `WATCHDOG=1` only while every registered worker has beaten recently:
a wedged pipeline stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

from edge_agent.util.logs import RateLimitedLog

log = logging.getLogger(__name__)

SEND_TIMEOUT = 1.0  # seconds; the notify socket is PID 1's, it is read promptly


class Notifier:
    """Sends state changes to the service manager. Thread-safe; every method is a
    no-op when `address` is None. Build it with `from_environ(os.environ)`."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        send_timeout: float = SEND_TIMEOUT,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        """`address`: $NOTIFY_SOCKET as given (a path, or "@name" for an abstract
        socket); `watchdog_usec`: the watchdog interval meant for this process;
        `send_timeout`: the longest a send may block on a receiver that is not reading."""
        self.address = address
        self._target = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._send_timeout = send_timeout
        self._monotonic_ns = monotonic_ns
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._limited = RateLimitedLog(log, interval=300.0)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, pid: int | None = None) -> Notifier:
        """The notifier systemd's environment describes. `WATCHDOG_USEC` is ignored
        when `WATCHDOG_PID` names another process (`pid` defaults to ours)."""
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            # e.g. "vsock:2:1234" (systemd >= 253 in VMs); not for a board's daemon
            log.warning("NOTIFY_SOCKET=%s is not a unix socket; not notifying systemd", address)
            address = None
        usec = _watchdog_usec(environ, os.getpid() if pid is None else pid)
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self._target is not None

    def watchdog_interval(self) -> float | None:
        """Seconds within which systemd wants `WATCHDOG=1`, or None without a
        watchdog. sd_watchdog_enabled(3) advises pinging at half of it."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 1_000_000

    def send(self, **fields: object) -> bool:
        """Send `KEY=value` lines in the order given: `send(READY=1, STATUS="up")`.
        True if the datagram left; False if disabled or it failed (logged)."""
        if self._target is None or not fields:
            return False
        message = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items())
        try:
            with self._lock:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.settimeout(self._send_timeout)
                self._sock.sendto(message.encode(), self._target)
        except OSError as exc:
            self._limited.warning(
                f"send:{exc.errno}", "cannot notify systemd at %s: %s", self.address, exc
            )
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (or a reload is): `Type=notify` units become active."""
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        """Free text shown by `systemctl status`."""
        return self.send(STATUS=text)

    def stopping(self) -> bool:
        """Shutdown has begun; systemd stops expecting watchdog pings."""
        return self.send(STOPPING=1)

    def reloading(self) -> bool:
        """A reload has begun; send `ready()` when it is done. systemd >= 253 wants
        the CLOCK_MONOTONIC time with it (older ones ignore the extra field)."""
        return self.send(RELOADING=1, MONOTONIC_USEC=self._monotonic_ns() // 1000)

    def watchdog(self) -> bool:
        """Keep-alive ping: `WatchdogSec=` restarts the service without one."""
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class Heartbeats:
    """When each named worker last showed progress. Thread-safe and pure: the
    caller says what time it is when asking."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}

    def register(self, name: str) -> None:
        """Start watching `name`; registering counts as its first beat."""
        with self._lock:
            self._last[name] = self._clock()

    def unregister(self, name: str) -> None:
        """Stop watching `name` (it finished on purpose, e.g. a source exhausted)."""
        with self._lock:
            self._last.pop(name, None)

    def beat(self, name: str) -> None:
        """`name` made progress: an input processed, or a poll of its source
        returned. Beats of unregistered names are ignored, so a late beat cannot
        bring back a worker that was unregistered."""
        now = self._clock()
        with self._lock:
            if name in self._last:
                self._last[name] = now

    def silent(self, now: float, max_silence: float) -> dict[str, float]:
        """The workers that have not beaten within `max_silence` seconds of `now`,
        with how long they have been silent."""
        with self._lock:
            return {
                name: now - last for name, last in self._last.items() if now - last > max_silence
            }

    def all_alive(self, now: float, max_silence: float) -> bool:
        """True if every registered worker beat within `max_silence` seconds
        (vacuously true when none is registered)."""
        return not self.silent(now, max_silence)


class Watchdog:
    """Pings systemd's watchdog from the main loop while every worker is alive.

    Call `tick()` often (the agent's loop wakes every 0.2 s); it sends `WATCHDOG=1`
    at most every `interval / 2` and only while no worker has been silent for
    more than `max_silence` (default: the whole interval). A wedged worker thus
    gets the service restarted within `max_silence + interval`. Without a
    watchdog (`WatchdogSec=` unset, or not under systemd) `tick()` does nothing.
    """

    def __init__(
        self,
        notifier: Notifier,
        heartbeats: Heartbeats,
        *,
        max_silence: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier
        self._heartbeats = heartbeats
        self._clock = clock
        interval = notifier.watchdog_interval()
        self.period = None if interval is None else interval / 2
        self.max_silence = max_silence if max_silence is not None else interval
        self._next = 0.0
        self._limited = RateLimitedLog(log, interval=60.0, clock=clock)

    def tick(self) -> bool:
        """Ping if one is due and every worker is alive; True if a ping was sent."""
        if self.period is None or self.max_silence is None:
            return False
        now = self._clock()
        if now < self._next:
            return False
        silent = self._heartbeats.silent(now, self.max_silence)
        if silent:
            described = ", ".join(f"{name} ({age:.0f} s)" for name, age in sorted(silent.items()))
            self._limited.error(
                "silent",
                "no progress from %s: withholding the watchdog ping, systemd will restart us",
                described,
            )
            return False
        self._next = now + self.period
        return self._notifier.watchdog()


def _socket_address(address: str) -> bytes:
    raw = os.fsencode(address)
    return b"\0" + raw[1:] if raw.startswith(b"@") else raw


def _one_line(value: object) -> str:
    return str(value).replace("\n", " ")


def _watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """WATCHDOG_USEC as a positive integer, if it is meant for process `pid`."""
    raw = environ.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != pid:
                return None  # for another process (we are a child of the main one)
        except ValueError:
            log.warning("WATCHDOG_PID=%r is not a pid; ignoring the watchdog", owner)
            return None
    try:
        usec = int(raw)
    except ValueError:
        usec = 0
    if usec <= 0:
        log.warning("WATCHDOG_USEC=%r is not a positive integer; ignoring the watchdog", raw)
        return None
    return usec

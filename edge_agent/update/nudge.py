"""The fleet-wide nudge: `{prefix}/fleet/cmd/update` asks every device to check
for updates now. Now, for 10,000 devices, would be 10,000 manifest requests in
the same second, so each device waits a random delay in [0, jitter] first.

The payload is informational (the operator tool sends `{"v": 1, "version": N}`)
and not trusted: anyone who may publish there can only make devices poll a
signed manifest sooner. Nudges that arrive while one is pending are merged.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

FLEET_UPDATE = "fleet/cmd/update"  # under the prefix: {prefix}/fleet/cmd/update


def fleet_update_topic(prefix: str) -> str:
    return f"{prefix}/{FLEET_UPDATE}"


def nudge_delay(jitter: float, rng: random.Random) -> float:
    """Seconds to wait before checking: uniform in [0, jitter]."""
    if jitter < 0:
        raise ValueError(f"nudge jitter {jitter} is negative")
    return rng.uniform(0.0, jitter) if jitter > 0 else 0.0


class FleetNudge:
    """`on_message` is the MQTT command handler (paho's thread: quick, never
    blocks); it calls `check_now` once, after the random delay, on a timer thread."""

    def __init__(
        self,
        jitter: float,
        check_now: Callable[[], None],
        rng: random.Random | None = None,
    ) -> None:
        self.jitter = jitter
        self._check_now = check_now
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - not crypto
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.received = 0  # nudges seen, merged ones included
        self.scheduled = 0  # checks scheduled

    def on_message(self, _payload: bytes) -> float | None:
        """Schedule a check; returns the delay, or None when one is already pending."""
        with self._lock:
            self.received += 1
            if self._timer is not None:
                return None
            delay = nudge_delay(self.jitter, self._rng)
            self._timer = threading.Timer(delay, self._fire)
            self._timer.daemon = True
            self._timer.name = "fleet-nudge"
            self.scheduled += 1
            self._timer.start()
        log.info("fleet nudge: checking for updates in %.1f s", delay)
        return delay

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self._check_now()
        except Exception:  # a timer thread that raises only prints; say what failed
            log.exception("fleet nudge: the update check could not be requested")

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

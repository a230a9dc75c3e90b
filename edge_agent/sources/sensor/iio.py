"""Samples polled from Linux IIO sysfs, e.g. `in_accel_x` of `iio:device0`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.errors import InputError
from edge_agent.sources.pacing import Pacer
from edge_agent.sources.sensor.common import DEFAULT_QUEUE_SIZE, SensorSource, check_channels
from edge_agent.sources.sensor.window import SlidingWindow

_CALIBRATION_TTL = 5.0  # IIO scale/offset change rarely (a range switch); re-read this often


@dataclass
class _Calibration:
    """A channel's (raw + offset) * scale, as the IIO sysfs ABI defines it."""

    scale: float
    offset: float
    loaded: float  # time.monotonic() when read


class IioSource(SensorSource):
    """Samples polled from Linux IIO sysfs, e.g. `in_accel_x` of `iio:device0`.

    Each tick reads `<channel>_raw` per channel and converts it with
    `<channel>_scale` / `<channel>_offset`, or the type-wide `in_accel_scale`
    form, defaulting to 1 and 0 when absent. Polling sysfs suits the tens to
    hundreds of Hz most boards' sensors are sampled at; a channel file that is
    missing or unreadable skips that tick's sample and is retried on the next.
    """

    def __init__(
        self,
        name: str,
        *,
        device: str,
        channels: list[str],
        window: SlidingWindow,
        rate: float,
        root: str = "/sys/bus/iio/devices",
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        check_channels(len(channels), window)
        if not rate > 0:
            raise ValueError(f"rate: must be > 0 Hz, got {rate}")
        directory = Path(root) / device
        super().__init__(name, window=window, origin=str(directory), queue_size=queue_size)
        self._directory = directory
        self._channels = list(channels)
        self._calibration: dict[str, _Calibration] = {}
        self._pacer = Pacer(rate)
        self._start()

    def _run(self) -> None:
        sample = np.empty(len(self._channels), dtype=np.float32)
        while self._pacer.wait(self._stop):
            try:
                for index, channel in enumerate(self._channels):
                    sample[index] = self._value(channel)
            except InputError as exc:
                self._reject("bad channel", str(exc))
                continue
            self._sample(sample)

    def _value(self, channel: str) -> float:
        raw = self._number(f"{channel}_raw")
        if raw is None:
            self._calibration.clear()  # the device may be re-probing: reread everything
            raise InputError(f"{self._directory / channel}_raw is missing")
        calibration = self._calibration.get(channel)
        if calibration is None or time.monotonic() - calibration.loaded > _CALIBRATION_TTL:
            calibration = self._calibrate(channel)
        return (raw + calibration.offset) * calibration.scale

    def _calibrate(self, channel: str) -> _Calibration:
        shared = _shared_prefix(channel)
        scale = self._number(f"{channel}_scale")
        if scale is None:
            scale = self._number(f"{shared}_scale")
        offset = self._number(f"{channel}_offset")
        if offset is None:
            offset = self._number(f"{shared}_offset")
        calibration = _Calibration(
            scale=1.0 if scale is None else scale,
            offset=0.0 if offset is None else offset,
            loaded=time.monotonic(),
        )
        self._calibration[channel] = calibration
        return calibration

    def _number(self, filename: str) -> float | None:
        """A sysfs attribute as a number; None if the attribute does not exist."""
        path = self._directory / filename
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._calibration.clear()  # the device may be re-probing: reread everything
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
        self.stats.add(bytes_in=len(data))
        try:
            value = float(data.strip())
        except ValueError:
            self._calibration.clear()
            raise InputError(f"{path} holds {data[:40]!r}, not a number") from None
        if not math.isfinite(value):
            raise InputError(f"{path} holds {value}")
        return value


def _shared_prefix(channel: str) -> str:
    """`in_accel_x` -> `in_accel`, `in_voltage0` -> `in_voltage`: the type-wide attribute name."""
    direction, _, rest = channel.partition("_")
    kind = rest.split("_", 1)[0].rstrip("0123456789")
    return f"{direction}_{kind}"

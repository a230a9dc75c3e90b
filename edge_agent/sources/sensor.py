"""Sensor sources: samples from lines (files, FIFOs, stdin, serial ports), Linux IIO
sysfs or MQTT, turned into normalised windows by a `SlidingWindow`.

Samples arrive on a background thread (ours, or paho's network thread) and windows
reach the pipeline through a bounded queue. Unlike camera frames, windows are not
latest-wins: each one is a distinct stretch of signal. But a stalled pipeline
must not grow memory, so a full queue drops its oldest window (counted in
`stats.dropped`). The exception is replaying a regular file without `follow`:
the data waits on disk, so the reader waits for the pipeline instead of dropping.
Unpaced lines arrive by the thousand (a replay at `rate = 0`, a fast port), so
each chunk's lines are parsed, windowed and queued together.
"""

from __future__ import annotations

import logging
import math
import os
import select
import stat
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import InputError
from edge_agent.sources.base import SourceExhausted, SourceStats, Window
from edge_agent.util.logs import RateLimitedLog
from edge_agent.util.tls import MqttTls
from edge_agent.util.tls import apply as apply_tls
from edge_agent.windowing import SlidingWindow, Vector, parse_csv_block, parse_line

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 64
_POLL_INTERVAL = 0.1  # seconds between checks for more data, rotation, or close()
_JOIN_TIMEOUT = 2.0
_CHUNK = 65536
_PULL_CHUNK = 16384  # a replay's windows per read stay few even with hop 1
_MAX_LINE = 65536  # a serial port at the wrong baud rate can send megabytes without a newline
_BACKOFF_MIN = 0.5
_BACKOFF_MAX = 10.0
_CALIBRATION_TTL = 5.0  # IIO scale/offset change rarely (a range switch); re-read this often


class _SensorSource:
    """What every sensor source shares: the window, the drop-oldest queue, error
    counting and the reader thread's life cycle. Subclasses produce samples by
    overriding `_run` (a thread is started for them) or by calling `_sample`
    from a thread of their own (paho's)."""

    def __init__(self, name: str, *, window: SlidingWindow, origin: str, queue_size: int) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size: must be >= 1, got {queue_size}")
        self.name = name
        self.stats = SourceStats()
        self._window = window
        self._origin = origin
        self._queue_size = queue_size
        self._queue: deque[Window] = deque()
        self._changed = threading.Condition()
        self._wake_at = -1  # wake a replay's reader thread, waiting for room, at this length
        self._done = False
        self._stop = threading.Event()
        self._errors = RateLimitedLog(logger)
        self._thread: threading.Thread | None = None

    def read(self, timeout: float) -> Window | None:
        """The oldest undelivered window, None on timeout, SourceExhausted once done."""
        with self._changed:
            if not self._queue and not self._done:
                self._changed.wait_for(lambda: self._queue or self._done, timeout)
            if self._queue:
                window = self._queue.popleft()
                if len(self._queue) <= self._wake_at:  # notifying nobody costs too
                    self._changed.notify_all()
                self.stats.add(read=1)
                return window
            if self._done:
                raise SourceExhausted
            return None

    def close(self) -> None:
        """Stop producing promptly; windows already queued can still be read."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        self._halt()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT)
            if self._thread.is_alive():
                logger.warning(
                    "%s: reader thread did not stop within %.0fs", self.name, _JOIN_TIMEOUT
                )
        self._finish()

    def _halt(self) -> None:
        """Hook: stop a producer that is not our thread (paho's loop)."""

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._guarded_run, name=self.name, daemon=True)
        self._thread.start()

    def _guarded_run(self) -> None:
        """An unexpected exception is a bug: say so loudly, then end the source."""
        try:
            self._run()
        except Exception:
            logger.exception("%s: reader failed", self.name)
            self.stats.add(errors=1)
        finally:
            self._finish()

    def _run(self) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        with self._changed:
            self._done = True
            self._changed.notify_all()

    def _sample(self, sample: np.ndarray, *, wait: bool = False) -> None:
        """Push one sample; queue the window it completes, if any."""
        values = self._window.push(sample)
        if values is not None:
            self._put([values], wait)

    def _samples(self, samples: np.ndarray, *, wait: bool) -> None:
        """Push samples [n, channels]; queue the windows they complete, all at once."""
        windows = self._window.push_many(samples)
        if windows:
            self._put(windows, wait)

    def _put(self, values: list[Vector], wait: bool) -> None:
        """Queue windows just made, under one lock acquisition however many there are.

        With `wait`, a full queue waits for the reader (or close()); otherwise it
        drops its oldest windows, counted.
        """
        captured = time.time()
        windows = [Window(values=array, origin=self._origin, captured=captured) for array in values]
        with self._changed:
            if wait:
                self._put_waiting(windows)
            else:
                self._queue.extend(windows)
            dropped = len(self._queue) - self._queue_size
            for _ in range(dropped):
                self._queue.popleft()
            self._changed.notify_all()
        if dropped > 0:
            self.stats.add(dropped=dropped)

    def _put_waiting(self, windows: list[Window]) -> None:
        """Queue the windows as room frees up; the lock is held. Stops at close().

        A full queue is refilled once the pipeline has taken half of it, not as
        each window goes: waking this thread for every window would cost more
        than the window itself.
        """
        done = 0
        while done < len(windows):
            room = self._queue_size - len(self._queue)
            if room > 0:
                self._queue.extend(windows[done : done + room])
                done += room
                continue
            self._changed.notify_all()  # the pipeline may be asleep: show it what is queued
            self._wake_at = self._queue_size // 2
            self._changed.wait_for(lambda: len(self._queue) <= self._wake_at or self._stop.is_set())
            self._wake_at = -1
            if self._stop.is_set():
                return  # closing: the rest would never be read

    def _reject(self, kind: str, reason: str) -> None:
        """Count one bad input or failed read; log it, rate-limited per kind."""
        self.stats.add(errors=1)
        self._errors.warning(f"{self.name}:{kind}", "%s: %s: %s", self.name, kind, reason)


class _Pacer:
    """Ticks at `rate` per second, without bursting to catch up after a stall."""

    def __init__(self, rate: float, stop: threading.Event) -> None:
        if math.isnan(rate) or rate < 0:
            raise ValueError(f"rate: must be >= 0, got {rate}")
        self._period = 1.0 / rate if rate else 0.0
        self._stop = stop
        self._due = time.monotonic()

    def wait(self) -> bool:
        """Sleep until the next tick; False if the source is closing."""
        if not self._period:
            return not self._stop.is_set()
        now = time.monotonic()
        if now - self._due > self._period:
            self._due = now  # fell behind (waiting for data): restart the schedule
        delay, self._due = self._due - now, self._due + self._period
        return not self._stop.wait(max(delay, 0.0))


@dataclass
class _Backoff:
    """Doubling delay between reopen attempts of a device that keeps failing."""

    delay: float = _BACKOFF_MIN

    def wait(self, stop: threading.Event) -> bool:
        """Sleep; False if the source is closing."""
        stopped = stop.wait(self.delay)
        self.delay = min(self.delay * 2, _BACKOFF_MAX)
        return not stopped

    def reset(self) -> None:
        self.delay = _BACKOFF_MIN


_Outcome = Literal["reopen", "retry", "end"]  # what to do once an opened input ends


@dataclass
class _Input:
    """One opened file descriptor and what is needed to notice it going stale."""

    fd: int
    regular: bool
    fifo: bool
    ident: tuple[int, int]  # (st_dev, st_ino): a rotated path points at another inode
    pending: bytearray = field(default_factory=bytearray)  # a line not yet ended


class LinesSource(_SensorSource):
    """Samples as text lines, CSV (`1.0,2.5,3`) or JSON, one sample per line.

    `path` is a regular file, a FIFO, a serial device (`/dev/ttyUSB0`) or "-" for
    stdin. Serial ports are read as they are: set the baud rate and raw mode
    beforehand, e.g. `stty -F /dev/ttyUSB0 115200 raw -echo`.

    Without `follow`, the source ends (SourceExhausted) at end of file, when a
    FIFO's writer closes, or when the device fails. With `follow`, a regular file
    is read to its end and then watched like `tail -F`: reopened when the path is
    rotated, reread from the start when it gets shorter than the read position
    (so, as with `tail`, a truncate-and-refill past that position between two
    polls goes unnoticed). A followed FIFO is reopened for the next writer, a
    failing device is reopened with backoff.

    `rate` paces lines per second, to replay a recording at its nominal rate;
    0 reads as fast as possible, each chunk's complete lines parsed, windowed and
    queued together (`parse_csv_block`, `SlidingWindow.push_many`): the same
    windows and errors as line by line, at a small fraction of the cost. A regular
    file at rate 0 without `follow` has no reader thread: `read` parses the next
    chunk on the caller's thread whenever the queue is empty.
    """

    def __init__(
        self,
        name: str,
        *,
        path: str,
        window: SlidingWindow,
        channels: int,
        fields: list[str] | None = None,
        follow: bool = False,
        rate: float = 0.0,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        _check_channels(channels, window)
        if fields is not None and len(fields) != channels:
            raise ValueError(f"fields: {len(fields)} names for {channels} channels")
        super().__init__(
            name, window=window, origin="stdin" if path == "-" else path, queue_size=queue_size
        )
        self._path = path
        self._channels = channels
        self._fields = fields
        self._follow = follow
        self._pacer = _Pacer(rate, self._stop)
        self._batched = rate == 0  # nothing to pace: a chunk's lines can go through together
        self._replay = False  # a regular file without follow: wait for the pipeline, never drop
        self._pull_lock = threading.Lock()
        self._pulled = self._open_for_pull()
        if self._pulled is None:
            self._start()
        else:  # read() fills the queue one chunk at a time, only when it is empty
            self._queue_size = sys.maxsize

    def read(self, timeout: float) -> Window | None:
        if self._pulled is not None and not self._queue:  # only this thread fills it
            self._pull()
        return super().read(timeout)

    def close(self) -> None:
        super().close()
        with self._pull_lock:
            self._end_pull()

    def _open_for_pull(self) -> _Input | None:
        """A regular file replayed at full speed (no `rate`, no `follow`) needs no
        thread of its own: the pipeline's thread reads the next chunk once it has
        used up the last. A hand-over between two threads per window, and their
        fight for the GIL, cost more than a small model's whole window."""
        if not self._batched or self._follow or self._path == "-":
            return None
        try:
            fd = self._open_path()
        except OSError:
            return None  # the reader thread tries again and reports why it cannot
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        return _Input(fd=fd, regular=True, fifo=False, ident=(info.st_dev, info.st_ino))

    def _pull(self) -> None:
        """Read and parse chunks until a window is queued or the file has ended."""
        with self._pull_lock:
            while self._pulled is not None and not self._queue and not self._stop.is_set():
                source = self._pulled
                try:
                    chunk = os.read(source.fd, _PULL_CHUNK)
                except OSError as exc:
                    self._reject("read failed", str(exc))
                    chunk = b""
                if chunk:
                    self._bytes(source, chunk)
                    continue
                self._flush(source)
                self._end_pull()

    def _end_pull(self) -> None:
        if self._pulled is not None:
            os.close(self._pulled.fd)
            self._pulled = None
            self._finish()

    def _run(self) -> None:
        backoff = _Backoff()
        while not self._stop.is_set():
            source = self._open()
            if source is None:
                outcome: _Outcome = "retry" if self._follow else "end"
            else:
                try:
                    outcome = self._consume(source)
                finally:
                    if source.fd != 0:
                        os.close(source.fd)
            if outcome == "end" or (outcome == "retry" and not backoff.wait(self._stop)):
                return
            if outcome == "reopen":
                backoff.reset()

    def _open(self) -> _Input | None:
        """O_NONBLOCK so a FIFO without a writer, or a tty without carrier, opens at once."""
        try:
            fd = 0 if self._path == "-" else self._open_path()
            info = os.fstat(fd)
        except OSError as exc:
            self._reject("open failed", str(exc))
            return None
        regular = stat.S_ISREG(info.st_mode)
        self._replay = regular and not self._follow
        return _Input(
            fd=fd,
            regular=regular,
            fifo=stat.S_ISFIFO(info.st_mode),
            ident=(info.st_dev, info.st_ino),
        )

    def _open_path(self) -> int:
        return os.open(self._path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)

    def _consume(self, source: _Input) -> _Outcome:
        """Read until the input ends, fails, or the source is closed."""
        poller = select.poll()
        poller.register(source.fd, select.POLLIN)
        while not self._stop.is_set():
            if not source.regular and not poller.poll(_POLL_INTERVAL * 1000):
                continue
            try:
                chunk = os.read(source.fd, _CHUNK)
            except BlockingIOError:
                continue
            except OSError as exc:
                self._reject("read failed", str(exc))
                return self._again("retry")
            if chunk:
                self._bytes(source, chunk)
            elif not self._at_end(source):
                # Linux reports a FIFO's end only after a writer came and went, so
                # reopening at once cannot spin; a device's end might repeat.
                return self._again("reopen" if source.regular or source.fifo else "retry")
        return "end"

    def _again(self, outcome: _Outcome) -> _Outcome:
        """Only a followed path is opened again; stdin cannot be."""
        return outcome if self._follow and self._path != "-" else "end"

    def _at_end(self, source: _Input) -> bool:
        """At end of input: True to keep reading this descriptor (a followed file)."""
        if not (source.regular and self._follow):
            self._flush(source)
            return False
        if self._rotated(source):
            self._flush(source)
            return False
        position = os.lseek(source.fd, 0, os.SEEK_CUR)
        if os.fstat(source.fd).st_size < position:
            logger.info("%s: %s was truncated, reading it from the start", self.name, self._path)
            self._flush(source)
            os.lseek(source.fd, 0, os.SEEK_SET)
            return True
        self._stop.wait(_POLL_INTERVAL)
        return True

    def _rotated(self, source: _Input) -> bool:
        """The path now names another file (logrotate, `mv` + recreate)."""
        if self._path == "-":
            return False
        try:
            info = os.stat(self._path)
        except OSError:
            return False  # renamed away, not recreated yet: keep the old one
        if (info.st_dev, info.st_ino) == source.ident:
            return False
        logger.info("%s: %s was replaced, reopening it", self.name, self._path)
        return True

    def _bytes(self, source: _Input, chunk: bytes) -> None:
        self.stats.add(bytes_in=len(chunk))
        source.pending += chunk
        if self._batched:
            self._block(source)
        else:
            self._each_line(source)
        if len(source.pending) > _MAX_LINE:
            self._reject("bad line", f"no newline within {_MAX_LINE} bytes, discarded")
            source.pending.clear()

    def _each_line(self, source: _Input) -> None:
        start = 0
        while (end := source.pending.find(b"\n", start)) >= 0 and not self._stop.is_set():
            self._line(source.pending[start:end])
            start = end + 1
        del source.pending[:start]

    def _block(self, source: _Input) -> None:
        """Every complete line pending at once: one parse, one push, one hand-over."""
        end = source.pending.rfind(b"\n") + 1
        if not end or self._stop.is_set():
            return
        block = bytes(source.pending[:end])
        del source.pending[:end]
        samples, errors = parse_csv_block(block, self._channels, self._fields)
        for _, reason in errors:
            self._reject("bad line", reason)
        self._samples(samples, wait=self._replay)

    def _flush(self, source: _Input) -> None:
        """A last line without a newline is still a line once its input has ended."""
        if source.pending.strip():
            self._line(source.pending)
        source.pending.clear()

    def _line(self, raw: bytes | bytearray) -> None:
        if not raw.strip() or not self._pacer.wait():
            return
        try:
            sample = parse_line(raw.decode("utf-8", "replace"), self._channels, self._fields)
        except InputError as exc:
            self._reject("bad line", str(exc))
            return
        self._sample(sample, wait=self._replay)


@dataclass
class _Calibration:
    """A channel's (raw + offset) * scale, as the IIO sysfs ABI defines it."""

    scale: float
    offset: float
    loaded: float  # time.monotonic() when read


class IioSource(_SensorSource):
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
        _check_channels(len(channels), window)
        if not rate > 0:
            raise ValueError(f"rate: must be > 0 Hz, got {rate}")
        directory = Path(root) / device
        super().__init__(name, window=window, origin=str(directory), queue_size=queue_size)
        self._directory = directory
        self._channels = list(channels)
        self._calibration: dict[str, _Calibration] = {}
        self._pacer = _Pacer(rate, self._stop)
        self._start()

    def _run(self) -> None:
        sample = np.empty(len(self._channels), dtype=np.float32)
        while self._pacer.wait():
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


class MqttSensorSource(_SensorSource):
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
        _check_channels(len(fields), window)
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


def _check_channels(channels: int, window: SlidingWindow) -> None:
    if channels != window.channels:
        raise ValueError(f"channels: {channels}, but the window has {window.channels}")

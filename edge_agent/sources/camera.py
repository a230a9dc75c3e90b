"""Camera sources: they hand encoded images to the pipeline, which decodes them.

Files are pull-based and lose nothing. Live cameras are read by a background
thread and handed over latest-wins, because a pipeline that falls behind should
see the newest image, not a growing backlog of stale ones.
"""

from __future__ import annotations

import base64
import fnmatch
import glob
import http.client
import logging
import os
import random
import shlex
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import IO

from edge_agent.errors import ConfigError, InputError, SourceError
from edge_agent.util.logs import RateLimitedLog

from .base import Frame, LatestSlot, SourceExhausted, SourceStats
from .mjpeg import JpegSplitter, MultipartReader, boundary_from

logger = logging.getLogger(__name__)

_BACKOFF_FIRST = 0.5  # seconds before the first retry; doubles up to the cap
_BACKOFF_CAP = 30.0
_JOIN_TIMEOUT = 1.0
_TERM_GRACE = 1.0  # seconds a command gets to exit on SIGTERM before SIGKILL
_CHUNK = 65536
_TEMP_SUFFIXES = (".tmp", ".part", ".partial", "~")
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"RIFF")


def _check_image(data: bytes) -> None:
    """Reject what cannot be an image before it costs a decode: empty files and
    truncated writes, HTML login pages, text."""
    if not data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] != b"WEBP"):
        raise InputError(f"not an image: {len(data)} bytes starting {data[:8]!r}")


def _load(path: str, stats: SourceStats) -> bytes:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}") from exc
    stats.add(bytes_in=len(data))
    _check_image(data)
    return data


def _log_skip(log: RateLimitedLog, source: str, what: str, reason: str) -> None:
    """Each source has its own RateLimitedLog. Reasons put their varying detail
    after a colon, so repeats group by what comes before it: one line per kind
    of trouble, not one per file name or byte count."""
    key = f"skip:{reason.partition(':')[0]}"
    log.warning(key, "%s: skipped %s: %s", source, what, reason)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Backoff:
    """Exponential delays with jitter, so boards that lost the same camera server
    do not all reconnect in the same instant."""

    def __init__(self) -> None:
        self._failures = 0

    def reset(self) -> None:
        self._failures = 0

    def next(self) -> float:
        ceiling = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2 ** min(self._failures, 16))
        self._failures += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not secrecy


class _Pacer:
    """Spaces hand-overs 1/fps apart on a fixed grid, so the steps at which frames
    happen to arrive do not lower the rate; after a stall the grid restarts rather
    than bursting to catch up. fps 0 means no limit."""

    def __init__(self, fps: float) -> None:
        if fps < 0:
            raise ConfigError(f"fps must be >= 0, not {fps}")
        self._period = 1.0 / fps if fps > 0 else 0.0
        self._due = 0.0

    def delay(self) -> float:
        return max(0.0, self._due - time.monotonic())

    def mark(self) -> None:
        now = time.monotonic()
        self._due = (self._due if now - self._due < self._period else now) + self._period


class FilesSource:
    """Images from the files a glob matches, in name order: demos, tests, replaying
    a capture. Pull-based, so a slow pipeline still sees every file."""

    def __init__(self, name: str, *, pattern: str, loop: bool = False, fps: float = 0) -> None:
        self.name = name
        self.stats = SourceStats()
        self._pattern = pattern
        self._loop = loop
        self._pacer = _Pacer(fps)
        self._queue: deque[str] = deque()
        self._bad: set[str] = set()  # skipped for good, so a loop does not spin on them
        self._passes = 0
        self._closed = threading.Event()
        self._log = RateLimitedLog(logger)

    def read(self, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            if not self._queue and not self._refill():
                if not self._loop:
                    raise SourceExhausted
                self._closed.wait(deadline - time.monotonic())
                return None
            delay = self._pacer.delay()
            if delay > max(0.0, deadline - time.monotonic()):
                self._closed.wait(deadline - time.monotonic())
                return None
            self._closed.wait(delay)
            if frame := self._read_next():
                return frame
        raise SourceExhausted

    def close(self) -> None:
        self._closed.set()

    def _refill(self) -> bool:
        """Start the next pass over the glob, which a loop re-evaluates each time."""
        if self._passes and not self._loop:
            return False
        self._passes += 1
        paths = sorted(glob.glob(self._pattern, recursive=True))
        self._queue.extend(path for path in paths if path not in self._bad)
        if not self._queue:
            self._log.warning("empty", "%s: no readable files match %r", self.name, self._pattern)
        return bool(self._queue)

    def _read_next(self) -> Frame | None:
        path = self._queue.popleft()
        try:
            data = _load(path, self.stats)
        except InputError as exc:
            self._bad.add(path)
            _log_skip(self._log, self.name, path, str(exc))
            self.stats.add(errors=1)
            return None
        self._pacer.mark()
        self.stats.add(read=1)
        return Frame(data=data, origin=path, captured=time.time())


class _LiveSource:
    """The reader thread that DirectorySource, HttpSnapshotSource, MjpegSource and
    CommandSource share: start and stop, retry with backoff, the fps cap, and the
    latest-wins hand-over. A subclass writes `_session`: one connection, one run of
    the command, one directory poll; it raises SourceError when that fails or ends."""

    def __init__(self, name: str, *, origin: str, fps: float) -> None:
        self.name = name
        self.stats = SourceStats()
        self._origin = origin
        self._gate = _Pacer(fps)
        self._slot = LatestSlot(self.stats)
        self._stop = threading.Event()
        self._progress = False  # a frame arrived during the current session
        self._log = RateLimitedLog(logger)
        self._thread = threading.Thread(target=self._run, name=f"source-{name}", daemon=True)

    def read(self, timeout: float) -> Frame | None:
        item = self._slot.take(timeout)
        if item is not None and not isinstance(item, Frame):
            raise TypeError(f"{self.name}: not a Frame: {item!r}")
        return item

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._interrupt()
        self._slot.finish()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT)
            if self._thread.is_alive():
                logger.warning("%s: reader thread still busy after close", self.name)

    def _session(self) -> None:
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Wake the reader thread from a blocking call; close() calls it."""

    def _run(self) -> None:
        backoff = _Backoff()
        while not self._stop.is_set():
            self._progress = False
            try:
                self._session()
                backoff.reset()
                continue
            except SourceError as exc:
                reason = str(exc)
            except Exception as exc:  # a bug must not silently kill the camera
                logger.debug("%s: session failed", self.name, exc_info=exc)
                reason = f"unexpected {_describe(exc)}"
            if self._stop.is_set():  # close() interrupted it: not a failure
                break
            if self._progress:
                backoff.reset()
            delay = backoff.next()
            key = f"failed:{reason.partition(':')[0]}"
            self._log.warning(key, "%s: %s; retrying in %.1f s", self.name, reason, delay)
            self.stats.add(errors=1)  # after the log line, so who sees the count finds it
            self._stop.wait(delay)

    def _offer(self, data: bytes, origin: str | None = None) -> None:
        """Hand a frame over, unless the fps cap says it is too soon after the last."""
        self._progress = True
        if self._stop.is_set():
            return
        if self._gate.delay() > 0:
            self.stats.add(dropped=1)
            return
        self._gate.mark()
        self._slot.put(Frame(data=data, origin=origin or self._origin, captured=time.time()))

    def _reject(self, what: str, reason: str) -> None:
        _log_skip(self._log, self.name, what, reason)
        self.stats.add(errors=1)


class DirectorySource(_LiveSource):
    """Images other programs drop into a directory (rpicam-still --timelapse, motion,
    an IP camera's FTP upload). Polls with os.scandir: no dependency, and unlike
    inotify it also works on network mounts. Files present at start are ignored; a
    file is read once its size and mtime held still across two polls, and of the
    files that settle in one poll only the newest is read, the rest are stale."""

    def __init__(
        self,
        name: str,
        *,
        path: str,
        pattern: str = "*.jpg",
        delete_after: bool = False,
        fps: float = 0,
        poll_interval: float = 0.5,
    ) -> None:
        super().__init__(name, origin=path, fps=fps)
        self._path = path
        self._pattern = pattern.lower()  # cameras write IMG_0001.JPG as often as .jpg
        self._delete_after = delete_after
        self._poll_interval = poll_interval
        self._pending: dict[str, tuple[int, int]] = {}  # name -> (mtime_ns, size) last poll
        try:
            self._known = self._scan()  # handled or pre-existing: not new
        except SourceError as exc:
            self._known = {}
            logger.warning("%s: %s; will keep polling", name, exc)
        self._thread.start()

    def _session(self) -> None:
        current = self._scan()
        fresh = {name: sig for name, sig in current.items() if self._known.get(name) != sig}
        settled = sorted(
            (name for name, sig in fresh.items() if self._pending.get(name) == sig),
            key=lambda name: (current[name][0], name),
        )
        self._pending = {name: sig for name, sig in fresh.items() if name not in settled}
        self._known = {name: sig for name, sig in current.items() if name not in self._pending}
        self._consume(settled)
        self._stop.wait(self._poll_interval)

    def _scan(self) -> dict[str, tuple[int, int]]:
        found = {}
        try:
            with os.scandir(self._path) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(".") or name.endswith(_TEMP_SUFFIXES):
                        continue  # writers that rename into place write these first
                    with suppress(OSError):  # vanished since listed
                        if fnmatch.fnmatchcase(name.lower(), self._pattern) and entry.is_file():
                            stat = entry.stat()
                            found[name] = (stat.st_mtime_ns, stat.st_size)
        except OSError as exc:
            raise SourceError(f"cannot list {self._path}: {_describe(exc)}") from exc
        return found

    def _consume(self, names: list[str]) -> None:
        if not names:
            return
        *stale, newest = names
        self.stats.add(dropped=len(stale))
        for name in stale:
            self._discard(name)
        path = os.path.join(self._path, newest)
        data = None
        if self._gate.delay() > 0:
            self.stats.add(dropped=1)
        else:
            data = self._read(path)
        self._discard(newest)
        if data is not None:
            self._offer(data, origin=path)

    def _read(self, path: str) -> bytes | None:
        try:
            return _load(path, self.stats)
        except InputError as exc:
            self._reject(path, str(exc))
            return None

    def _discard(self, name: str) -> None:
        """With delete_after every file seen goes, stale or bad ones too, so the
        directory cannot fill up."""
        if not self._delete_after:
            return
        try:
            os.remove(os.path.join(self._path, name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._log.warning("delete", "%s: cannot delete %s: %s", self.name, name, exc)
            self.stats.add(errors=1)


class _Http:
    """GETs whose socket close() can shut down from another thread: a camera that
    stops answering must not hold close() for the whole timeout, and closing a
    socket does not wake a thread blocked reading it, while shutdown() does. Built on
    http.client rather than urlopen, which does not expose the socket."""

    def __init__(
        self, url: str, *, timeout: float, username: str | None, password: str | None
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise ConfigError(f"bad port in URL {url!r}") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"not an http(s) URL: {url!r}")
        self._parts = parts
        self._timeout = timeout
        self._target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        self.origin = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        self._headers = {"User-Agent": "edge-agent"}
        if username is None and parts.username is not None:
            username = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._closed = False

    @contextmanager
    def get(self) -> Iterator[http.client.HTTPResponse]:
        """A 200 response; SourceError for any other status or any failure inside."""
        scheme = self._parts.scheme
        cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = cls(self._parts.hostname or "", self._parts.port, timeout=self._timeout)
        response = None
        try:
            conn.connect()
            self._track(conn.sock)
            conn.request("GET", self._target, headers=self._headers)
            response = conn.getresponse()
            if response.status != 200:
                raise SourceError(f"HTTP {response.status} {response.reason}")
            yield response
        except (OSError, http.client.HTTPException) as exc:
            raise SourceError(_describe(exc)) from exc
        finally:
            self._track(None)
            if response is not None:
                response.close()
            conn.close()

    def interrupt(self) -> None:
        with self._lock:
            self._closed, sock = True, self._sock
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _track(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock, closed = sock, self._closed
        if closed and sock is not None:
            raise SourceError("closed")


def _read_body(response: http.client.HTTPResponse, limit: int, stats: SourceStats) -> bytes:
    """At most `limit` bytes, read in chunks: never allocates the limit up front."""
    declared = response.getheader("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise SourceError(f"body over max_bytes ({limit}): Content-Length {declared}")
    body = bytearray()
    while chunk := response.read(min(_CHUNK, limit + 1 - len(body))):
        stats.add(bytes_in=len(chunk))
        body += chunk
        if len(body) > limit:
            raise SourceError(f"body over max_bytes ({limit})")
    return bytes(body)


class HttpSnapshotSource(_LiveSource):
    """Polls a still-image URL (/snapshot.jpg, ESP32-CAM /capture): the least any IP
    camera serves, and gentler on a weak camera than a stream it must keep up with."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        fps: float = 1.0,
        timeout: float = 5.0,
        username: str | None = None,
        password: str | None = None,
        max_bytes: int = 20_000_000,
    ) -> None:
        self._http = _Http(url, timeout=timeout, username=username, password=password)
        super().__init__(name, origin=self._http.origin, fps=fps)
        self._max_bytes = max_bytes
        self._thread.start()

    def _session(self) -> None:
        if self._stop.wait(self._gate.delay()):
            return
        with self._http.get() as response:
            data = _read_body(response, self._max_bytes, self.stats)
        try:
            _check_image(data)
        except InputError as exc:  # a login page every time: back off, do not skip
            raise SourceError(str(exc)) from exc
        self._offer(data)

    def _interrupt(self) -> None:
        self._http.interrupt()


class MjpegSource(_LiveSource):
    """A multipart/x-mixed-replace stream (mjpg-streamer, ustreamer, ESP32-CAM,
    most IP cameras' /video). Read as fast as the camera sends, so the frame handed
    over is the newest; fps only caps how many are handed over."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        timeout: float = 10.0,
        fps: float = 0,
        max_frame_bytes: int = 10_000_000,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._http = _Http(url, timeout=timeout, username=username, password=password)
        super().__init__(name, origin=self._http.origin, fps=fps)
        self._max_frame_bytes = max_frame_bytes
        self._thread.start()

    def _session(self) -> None:
        with self._http.get() as response:
            boundary = boundary_from(response.getheader("Content-Type", ""))
            reader = MultipartReader(response, boundary, max_part_bytes=self._max_frame_bytes)
            try:
                self._pump(reader)
            finally:
                self.stats.add(bytes_in=reader.pop_bytes_read())

    def _pump(self, reader: MultipartReader) -> None:
        while (part := reader.next_part()) is not None:
            self.stats.add(bytes_in=reader.pop_bytes_read())
            try:
                _check_image(part)
            except InputError as exc:
                self._reject("a part", str(exc))
            else:
                self._offer(part)
        raise SourceError("stream ended")

    def _interrupt(self) -> None:
        self._http.interrupt()


class _StderrTail:
    """Drains a command's stderr, so it never blocks on a full pipe, and keeps the
    end of it for the log line when the command exits."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._tail = b""
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        while chunk := stream.read(_CHUNK):
            self._tail = (self._tail + chunk)[-4096:]

    def last_line(self, timeout: float) -> str:
        self._thread.join(timeout)
        lines = self._tail.decode(errors="replace").splitlines()
        return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the command's whole process group: a shell wrapper's children would
    otherwise survive it and keep the pipe open."""
    if proc.returncode is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def _stop_process(proc: subprocess.Popen[bytes], *, terminate: bool) -> int:
    """The exit code, escalating to SIGTERM, then to SIGKILL, a grace period apart."""
    steps = (signal.SIGTERM, signal.SIGKILL) if terminate else (0, signal.SIGTERM, signal.SIGKILL)
    for sig in steps:
        if sig:
            _signal_group(proc, sig)
        with suppress(subprocess.TimeoutExpired):
            return proc.wait(_TERM_GRACE)
    return proc.wait()


class CommandSource(_LiveSource):
    """JPEGs a command writes to stdout back to back: `rpicam-vid --codec mjpeg -o -`,
    `ffmpeg ... -f image2pipe -`, `libcamera-vid`, gstreamer's fdsink. A command
    that exits is restarted with backoff."""

    def __init__(
        self, name: str, *, command: list[str], fps: float = 0, max_frame_bytes: int = 10_000_000
    ) -> None:
        if not command:
            raise ConfigError(f"{name}: empty command")
        super().__init__(name, origin=shlex.join(command), fps=fps)
        self._command = list(command)
        self._max_frame_bytes = max_frame_bytes
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread.start()

    def _session(self) -> None:
        proc = self._spawn()
        assert proc.stdout is not None
        assert proc.stderr is not None
        stderr = _StderrTail(proc.stderr)
        try:
            self._pump(proc.stdout)
        finally:
            code = _stop_process(proc, terminate=False)
            with self._lock:
                self._proc = None
            last = stderr.last_line(_JOIN_TIMEOUT)
            proc.stdout.close()
            proc.stderr.close()
        raise SourceError(f"{self._command[0]} exited with {code}: last stderr line {last!r}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        try:
            proc = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                start_new_session=True,
            )
        except OSError as exc:
            raise SourceError(f"cannot start {self._command[0]}: {_describe(exc)}") from exc
        with self._lock:
            self._proc = proc
        if self._stop.is_set():  # close() ran while it started
            _signal_group(proc, signal.SIGKILL)
        return proc

    def _pump(self, stdout: IO[bytes]) -> None:
        splitter = JpegSplitter(self._max_frame_bytes)
        while chunk := stdout.read(_CHUNK):
            self.stats.add(bytes_in=len(chunk))
            for frame in splitter.feed(chunk):
                self._offer(frame)
            for reason in splitter.pop_errors():
                self._reject("stdout bytes", reason)

    def _interrupt(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None:
            _stop_process(proc, terminate=True)

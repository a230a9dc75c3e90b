"""Still images polled from a URL (/snapshot.jpg, ESP32-CAM /capture), and the
HTTP GET the MJPEG source shares."""

from __future__ import annotations

import base64
import http.client
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from edge_agent.errors import ConfigError, InputError, SourceError
from edge_agent.sources.base import SourceStats
from edge_agent.sources.camera.common import CHUNK, check_image, describe
from edge_agent.sources.camera.live import LiveSource


class HttpGet:
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
        self._expired = False  # the current GET ran past its deadline

    @contextmanager
    def get(self, deadline: float | None = None) -> Iterator[http.client.HTTPResponse]:
        """A 200 response; SourceError for any other status or any failure inside.

        `timeout` bounds each socket operation; `deadline`, if given, the whole GET
        from connect to the end of the with block: a server that drips its bytes,
        each within the timeout, would otherwise hold the reader for ever.
        """
        timer = self._arm(deadline)
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
        except (OSError, http.client.HTTPException, SourceError) as exc:
            # A cut-off socket fails in whatever way; a read that timed out ends past
            # the deadline too (each starts after the GET did): one message for both.
            if self._expired or (deadline is not None and isinstance(exc, TimeoutError)):
                raise SourceError(_late(deadline)) from exc
            if isinstance(exc, SourceError):
                raise
            raise SourceError(describe(exc)) from exc
        finally:
            if timer is not None:
                timer.cancel()
            self._track(None)
            if response is not None:
                response.close()
            conn.close()
        if self._expired:  # a body cut off without an error would look whole
            raise SourceError(_late(deadline))

    def interrupt(self) -> None:
        with self._lock:
            self._closed, sock = True, self._sock
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _arm(self, deadline: float | None) -> threading.Timer | None:
        """A timer that cuts the GET off at its deadline, from another thread, since
        only shutdown() wakes a thread blocked on the socket."""
        with self._lock:
            self._expired = False
        if deadline is None:
            return None
        timer = threading.Timer(deadline, self._expire)
        timer.daemon = True
        timer.start()
        return timer

    def _expire(self) -> None:
        with self._lock:
            self._expired, sock = True, self._sock
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _track(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock, stop = sock, self._closed or self._expired
        if stop and sock is not None:
            raise SourceError("closed")


def _late(deadline: float | None) -> str:
    return f"no whole response within {deadline:.1f} s (a stalled or dripping server)"


def _read_body(response: http.client.HTTPResponse, limit: int, stats: SourceStats) -> bytes:
    """At most `limit` bytes, read in chunks: never allocates the limit up front."""
    declared = response.getheader("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise SourceError(f"body over max_bytes ({limit}): Content-Length {declared}")
    body = bytearray()
    while chunk := response.read(min(CHUNK, limit + 1 - len(body))):
        stats.add(bytes_in=len(chunk))
        body += chunk
        if len(body) > limit:
            raise SourceError(f"body over max_bytes ({limit})")
    return bytes(body)


class HttpSnapshotSource(LiveSource):
    """Polls a still-image URL (/snapshot.jpg, ESP32-CAM /capture): the least any IP
    camera serves, and gentler on a weak camera than a stream it must keep up with.
    `timeout` bounds each snapshot as a whole: one that takes longer is cut off,
    logged and counted, and the next is tried after a backoff."""

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
        self._http = HttpGet(url, timeout=timeout, username=username, password=password)
        super().__init__(name, origin=self._http.origin, fps=fps)
        self._max_bytes = max_bytes
        self._timeout = timeout  # for the whole snapshot, not only for each read
        self._thread.start()

    def _session(self) -> None:
        if self._stop.wait(self._gate.delay()):
            return
        with self._http.get(deadline=self._timeout) as response:
            data = _read_body(response, self._max_bytes, self.stats)
        try:
            check_image(data)
        except InputError as exc:  # a login page every time: back off, do not skip
            raise SourceError(str(exc)) from exc
        self._offer(data)

    def _interrupt(self) -> None:
        self._http.interrupt()

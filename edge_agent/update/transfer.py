"""How a body comes off an update server's socket: in bounded chunks, hashed as it
streams (a 2 GB model on a 1 GB board is never held in memory), resumable, and
within an overall deadline and a minimum rate that a `Guard` enforces from outside
the blocked read. fetch.py opens the connections; this module moves the bytes."""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from edge_agent.errors import FetchError, LengthError
from edge_agent.update.manifest import FileCheck, FileRef
from edge_agent.util.fs import atomic_write

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
_HASH_CHUNK = 1 << 20
_POLL = 0.25  # how often a guard looks at the clock and the cancel event
# ssl.SSLError and socket.timeout are OSErrors; ValueError: a URL http.client cannot encode.
NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)


@dataclass(frozen=True)
class Limits:
    """Time bounds of one fetch (redirects and all): `read_timeout` bounds each
    socket read, `deadline` the whole transfer, and a body must keep arriving at
    `min_rate` bytes/s or more, measured over each `rate_window` seconds."""

    read_timeout: float
    deadline: float
    min_rate: float
    rate_window: float


class Guard:
    """Ends one fetch from outside its blocked read, when the deadline passes, the
    body arrives slower than the minimum rate, or `cancel` is set: shutting the
    socket down wakes a waiting recv at once, plain or TLS. A daemon thread that
    lives only as long as the fetch."""

    def __init__(self, where: str, limits: Limits, cancel: threading.Event | None) -> None:
        self.where = where
        self.reason: str | None = None
        self.received = 0  # body bytes, counted by the reader
        self._limits = limits
        self._cancel = cancel
        # The clocks start with the first connection: hashing a partial file on a
        # slow SD card is not the server's time. (when, received) at a window's start:
        self._start: float | None = None
        self._window = (0.0, 0)
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="update-fetch-guard", daemon=True)

    def __enter__(self) -> Guard:
        if self._cancel is not None and self._cancel.is_set():
            raise FetchError(f"{self.where}: cancelled")
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join()

    def attach(self, sock: socket.socket | None) -> None:
        """Watch this connection's socket (one per redirect)."""
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            tripped = self.reason is not None
            if self._start is None:
                self._start = time.monotonic()
                self._window = (self._start, 0)
        if tripped:
            _shut(sock)

    def add(self, count: int) -> None:
        """Body bytes arrived; raises at once if the guard has tripped meanwhile."""
        self.received += count
        self.check()

    def check(self) -> None:
        if self.reason is not None:
            raise FetchError(f"{self.where}: {self.reason}")

    def explain(self, exc: BaseException) -> None:
        """A transfer the guard cut fails with the guard's reason, not the
        short read or reset the cut caused."""
        if self.reason is not None:
            raise FetchError(f"{self.where}: {self.reason}") from exc

    def _watch(self) -> None:
        while not self._done.wait(_POLL):
            reason = self._verdict(time.monotonic())
            if reason is not None:
                with self._lock:
                    self.reason = reason
                    sockets = list(self._sockets)
                for sock in sockets:
                    _shut(sock)
                return

    def _verdict(self, now: float) -> str | None:
        limits = self._limits
        if self._cancel is not None and self._cancel.is_set():
            return "cancelled"
        with self._lock:
            start = self._start
        if start is None:
            return None
        if now - start >= limits.deadline:
            return f"gave up after the {limits.deadline:g} s deadline ({self.received} bytes in)"
        since, base = self._window
        if now - since >= limits.rate_window:
            arrived = self.received - base
            if arrived < limits.min_rate * (now - since):
                return (
                    f"too slow: {arrived} bytes in {now - since:.0f} s, under the minimum "
                    f"of {limits.min_rate:g} bytes/s"
                )
            self._window = (now, self.received)
        return None


def _shut(sock: socket.socket) -> None:
    """The socket layer's shutdown, even for a TLS socket: SSLSocket.shutdown would
    also drop its TLS state under the reading thread's feet."""
    with suppress(OSError):  # already closed: nothing left to wake
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


@dataclass(frozen=True)
class Reply:
    """A response, the url (and where it redirected) for messages, its guard."""

    response: http.client.HTTPResponse
    where: str
    guard: Guard
    timeout: float

    def read(self, amount: int) -> bytes:
        """What has arrived, up to `amount`: one socket read, so a dripping body
        returns byte by byte instead of blocking until `amount` have come."""
        with network(self.where, self.timeout):
            chunk = self.response.read1(amount)
        self.guard.add(len(chunk))
        return chunk

    def header(self, name: str) -> str | None:
        return self.response.getheader(name)


@contextmanager
def network(url: str, timeout: float, phase: str = "") -> Iterator[None]:
    """The one place network exceptions become FetchError."""
    try:
        yield
    except NETWORK_ERRORS as exc:
        raise FetchError(f"{url}: {phase}{reason(exc, timeout)}") from exc


# First match wins: subclasses before bases (RemoteDisconnected is a ConnectionResetError).
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (ssl.SSLCertVerificationError, "certificate verify failed: {exc.verify_message}"),
    (TimeoutError, "timed out after {timeout:g} s"),
    (ssl.SSLError, "TLS error: {tls}"),
    (ConnectionRefusedError, "connection refused"),
    (http.client.RemoteDisconnected, "the server closed the connection without answering"),
    (ConnectionResetError, "connection reset by the server"),
    (http.client.IncompleteRead, "short read: the server closed with {exc.expected} bytes owed"),
    (http.client.HTTPException, "bad HTTP response ({exc!r})"),
)


def reason(exc: BaseException, timeout: float) -> str:
    """A short, operator-readable reason instead of an exception type."""
    for kind, text in _REASONS:
        if isinstance(exc, kind):
            return text.format(exc=exc, timeout=timeout, tls=getattr(exc, "reason", None) or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def check_declared(declared: int | None, where: str, length: int, *, exact: bool = True) -> None:
    """Fail before reading when the server itself announces the wrong size."""
    if declared is not None and (declared > length or (exact and declared != length)):
        raise LengthError(f"{where}: the server announces {declared} bytes, expected {length}")


def read_body(reply: Reply, cap: int, sha256: str | None) -> bytes:
    """The body in memory: at most `cap` bytes, or with `sha256` exactly `cap`
    bytes of that digest. Never more than cap + 1 bytes are read."""
    check_declared(reply.response.length, reply.where, cap, exact=sha256 is not None)
    chunks: list[bytes] = []
    total = 0
    while total <= cap and (chunk := reply.read(min(CHUNK, cap + 1 - total))):
        chunks.append(chunk)
        total += len(chunk)
    if total > cap:
        raise LengthError(f"{reply.where}: body is over the {cap}-byte limit")
    if reply.response.length:  # http.client returns b"" when the server closes early
        raise FetchError(f"{reply.where}: short read: {reply.response.length} bytes missing")
    body = b"".join(chunks)
    if sha256 is not None:
        check = FileCheck(FileRef(reply.where, cap, sha256))
        check.update(body)
        check.done()
    return body


def check_range(reply: Reply, offset: int, length: int) -> None:
    """A 206 must continue exactly where the partial file ends, or appending corrupts it."""
    value = reply.header("Content-Range") or ""
    unit, _, spec = value.partition(" ")
    first, _, total = spec.partition("/")
    start = first.partition("-")[0]
    if unit != "bytes" or not start.isdigit() or int(start) != offset:
        raise FetchError(f"{reply.where}: bad Content-Range {value!r} to resume at {offset}")
    if total.isdigit():
        check_declared(int(total), reply.where, length)


def resume_point(dest: Path, meta: Path, url: str, length: int) -> tuple[int, str | None]:
    """(offset, If-Range validator), or (0, None) to start over: a partial file is
    only trusted with a strong validator recorded for this very url and length."""
    size = dest.stat().st_size if dest.exists() else 0
    if not size:
        return 0, None
    if size > length:
        log.info("update: discarding %s: %d bytes, more than the %d expected", dest, size, length)
        dest.unlink()
        return 0, None
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0, None
    if not isinstance(recorded, dict) or recorded.get("url") != url:
        return 0, None
    if recorded.get("length") != length:
        return 0, None
    etag, modified = recorded.get("etag"), recorded.get("last_modified")
    validator = etag if isinstance(etag, str) and not etag.startswith("W/") else modified
    return (size, validator) if isinstance(validator, str) and validator else (0, None)


def write_meta(meta: Path, url: str, length: int, reply: Reply) -> None:
    """Remember what this partial file is a prefix of, for a later If-Range."""
    etag, modified = reply.header("ETag"), reply.header("Last-Modified")
    record = {"url": url, "length": length, "etag": etag, "last_modified": modified}
    atomic_write(meta, json.dumps(record).encode())


def hash_prefix(check: FileCheck, path: Path, size: int, guard: Guard) -> None:
    """Feed the first `size` bytes of a file to `check`, a chunk at a time; a
    cancel stops it between chunks (gigabytes on an SD card take a while)."""
    with path.open("rb") as handle:
        while size > 0 and (chunk := handle.read(min(_HASH_CHUNK, size))):
            check.update(chunk)
            size -= len(chunk)
            guard.check()


def stream_to(reply: Reply, dest: Path, offset: int, length: int, check: FileCheck) -> int:
    """Append from `offset` (0 truncates), hashing on the way and stopping at
    length + 1 bytes, already one too many; fsync whatever arrived, so a resume
    after a power cut or a cut transfer starts from it."""
    total = offset
    with dest.open("ab" if offset else "wb") as handle:
        try:
            while total <= length and (chunk := reply.read(min(CHUNK, length + 1 - total))):
                handle.write(chunk)
                check.update(chunk)
                total += len(chunk)
        finally:
            handle.flush()
            os.fsync(handle.fileno())
    if total > length:
        raise LengthError(f"{reply.where}: body is longer than the {length} bytes expected")
    return total

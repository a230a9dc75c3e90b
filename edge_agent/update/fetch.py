"""The only module that speaks HTTP for updates: an I/O shell around http.client.

Deliberately dumb about *what* the bytes are (manifest.py verifies them) and strict
about *how* they arrive: https unless explicitly allowed, bounded reads (a hostile
or broken server cannot fill RAM or the SD card), resumable downloads (a flaky link
re-sends only what is missing), and every network exception turned, here and only
here, into one FetchError with a short reason. Stdlib only: it runs on 1 GB boards.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit

from edge_agent import __version__
from edge_agent.errors import ConfigError, FetchError, LengthError
from edge_agent.util.fs import atomic_write

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
# ssl.SSLError and socket.timeout are OSErrors; ValueError: a URL http.client cannot encode.
_NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)


@dataclass(frozen=True)
class FetchOptions:
    """How to reach the update server. `read_timeout` bounds each socket read,
    not the whole transfer: a stalled body fails after it, a slow one does not."""

    connect_timeout: float = 10.0  # TCP connect and TLS handshake
    read_timeout: float = 30.0
    allow_http: bool = False
    ca_file: str | None = None  # replaces (does not extend) the system CAs
    client_cert: str | None = None
    client_key: str | None = None  # None: the key is in client_cert
    max_manifest_bytes: int = 1_000_000
    user_agent: str = f"edge-agent/{__version__}"


@dataclass(frozen=True)
class Fetched:
    """A manifest body and the validators to send back on the next poll."""

    body: bytes
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True)
class _Reply:
    """A response, the url (and where it redirected) for messages, the read timeout."""

    response: http.client.HTTPResponse
    where: str
    timeout: float

    def read(self, amount: int) -> bytes:
        with _network(self.where, self.timeout):
            return self.response.read(amount)


class Fetcher:
    """Conditional, capped and resumable GETs; one connection per request, never reused."""

    def __init__(self, options: FetchOptions) -> None:
        self._options = options
        self._ssl = _ssl_context(options)  # built now: bad TLS files fail at start-up

    def get_manifest(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched | None:
        """The manifest, or None when unchanged (304): a poll costs one round trip."""
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        with self._open(url, headers) as reply:
            if reply.response.status == 304:
                return None
            _expect(reply, 200)
            body = _read_capped(reply, self._options.max_manifest_bytes)
            header = reply.response.getheader
            return Fetched(body, header("ETag"), header("Last-Modified"))

    def get_small(self, url: str, max_bytes: int) -> bytes:
        """A small file (a .sig, labels) held in memory, hence capped at `max_bytes`."""
        with self._open(url, {}) as reply:
            _expect(reply, 200)
            return _read_capped(reply, max_bytes)

    def download(self, url: str, dest: Path, length: int) -> None:
        """Stream `url` into `dest`, resuming a partial file when the validator
        remembered in the `.meta` sidecar says the server still has the same file.
        Writes at most length + 1 bytes; a short read keeps the partial for later."""
        meta = dest.with_suffix(dest.suffix + ".meta")
        size = dest.stat().st_size if dest.exists() else None
        if size == length:
            return
        offset, validator = _resume_point(dest, meta, size, url, length)
        headers = {"Range": f"bytes={offset}-", "If-Range": validator} if validator else {}
        with self._open(url, headers) as reply:
            if reply.response.status == 206 and validator:
                _check_range(reply, offset, length)
                log.info("update: resuming %s at byte %d", reply.where, offset)
            else:
                if reply.response.status == 416:  # the partial outgrew the server's file
                    dest.unlink(missing_ok=True)
                _expect(reply, 200)  # a 200 to a Range: ignored, or the file changed
                _check_declared(reply.response.length, reply.where, length)
                offset = 0
                _write_meta(meta, url, length, reply.response)
            total = _stream_to(reply, dest, offset, length)
        if total < length:
            raise FetchError(f"{reply.where}: short read: got {total} of {length} bytes (kept)")
        meta.unlink(missing_ok=True)

    @contextmanager
    def _open(self, url: str, headers: dict[str, str]) -> Iterator[_Reply]:
        """The final response after at most 5 redirects (never https -> http);
        its connection is closed on exit."""
        current = url
        for _ in range(_MAX_REDIRECTS + 1):
            connection, response = self._send(current, headers)
            if response.status not in _REDIRECTS:
                break
            _close(connection, response)
            current = _redirect(current, response.getheader("Location"))
        else:
            raise FetchError(f"{url}: more than {_MAX_REDIRECTS} redirects")
        try:
            where = url if current == url else f"{url} (redirected to {current})"
            yield _Reply(response, where, self._options.read_timeout)
        finally:
            _close(connection, response)

    def _send(
        self, url: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Connect under connect_timeout, then send and await headers under read_timeout."""
        parts = self._parse(url)
        opts = self._options
        host, port, timeout = parts.hostname or "", parts.port, opts.connect_timeout
        connection = (
            http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
            if parts.scheme == "https"
            else http.client.HTTPConnection(host, port, timeout=timeout)
        )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            with _network(url, opts.connect_timeout, "connecting: "):
                connection.connect()
            with _network(url, opts.read_timeout):
                if connection.sock is not None:
                    connection.sock.settimeout(opts.read_timeout)
                headers = {**headers, "User-Agent": opts.user_agent}
                connection.request("GET", target, headers=headers)
                return connection, connection.getresponse()
        except BaseException:
            connection.close()
            raise

    def _parse(self, url: str) -> SplitResult:
        """https always; plain http only when the operator opted in."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise FetchError(f"{url}: not a valid URL ({exc})") from exc
        if parts.scheme == "http" and not self._options.allow_http:
            raise FetchError(
                f"{url}: plain http refused; use https, or set allow_http to accept "
                "unencrypted transport (signatures are still checked)"
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"{url}: not an http(s) URL with a host")
        return parts


def _close(connection: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
    """Both: after a `Connection: close` answer, the response alone owns the socket."""
    response.close()
    connection.close()


def _redirect(current: str, location: str | None) -> str:
    if not location:
        raise FetchError(f"{current}: redirect without a Location header")
    target = urljoin(current, location)
    if urlsplit(current).scheme == "https" and urlsplit(target).scheme != "https":
        raise FetchError(f"{current}: refusing a redirect from https to {target}")
    return target


def _ssl_context(options: FetchOptions) -> ssl.SSLContext:
    """Verified TLS >= 1.2 with hostname checks; bad files are a ConfigError naming them."""
    try:
        context = ssl.create_default_context(cafile=options.ca_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"ca_file {options.ca_file}: {_reason(exc, 0)}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if options.client_key and not options.client_cert:
        raise ConfigError(f"client_key {options.client_key} is set without client_cert")
    if options.client_cert:
        _load_client_cert(context, options.client_cert, options.client_key)
    return context


def _load_client_cert(context: ssl.SSLContext, cert: str, key: str | None) -> None:
    """The mTLS identity. Each file is checked on its own so the error can name it,
    and an encrypted key fails instead of OpenSSL prompting on a terminal."""
    checks = (("client_cert", cert, "CERTIFICATE"), ("client_key", key or cert, "PRIVATE KEY"))
    for name, path, label in checks:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{name} {path}: {_reason(exc, 0)}") from exc
        if f"{label}-----".encode() not in pem:
            raise ConfigError(f"{name} {path}: no PEM {label} in it")

    def no_password() -> bytes:
        raise ConfigError(f"client_key {key or cert}: encrypted keys are not supported")

    try:
        context.load_cert_chain(cert, key, password=no_password)
    except ssl.SSLError as exc:
        raise ConfigError(f"client_cert {cert} / client_key {key}: {_reason(exc, 0)}") from exc


@contextmanager
def _network(url: str, timeout: float, phase: str = "") -> Iterator[None]:
    """The one place network exceptions become FetchError."""
    try:
        yield
    except _NETWORK_ERRORS as exc:
        raise FetchError(f"{url}: {phase}{_reason(exc, timeout)}") from exc


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


def _reason(exc: BaseException, timeout: float) -> str:
    """A short, operator-readable reason instead of an exception type."""
    for kind, text in _REASONS:
        if isinstance(exc, kind):
            return text.format(exc=exc, timeout=timeout, tls=getattr(exc, "reason", None) or exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _expect(reply: _Reply, status: int) -> None:
    if reply.response.status != status:
        raise FetchError(f"{reply.where}: HTTP {reply.response.status} {reply.response.reason}")


def _read_capped(reply: _Reply, cap: int) -> bytes:
    """At most cap + 1 bytes in memory; more is a LengthError."""
    _check_declared(reply.response.length, reply.where, cap, exact=False)
    chunks: list[bytes] = []
    total = 0
    while total <= cap and (chunk := reply.read(min(_CHUNK, cap + 1 - total))):
        chunks.append(chunk)
        total += len(chunk)
    if total > cap:
        raise LengthError(f"{reply.where}: body is over the {cap}-byte limit")
    if reply.response.length:  # http.client returns b"" when the server closes early
        raise FetchError(f"{reply.where}: short read: {reply.response.length} bytes missing")
    return b"".join(chunks)


def _check_declared(declared: int | None, where: str, length: int, *, exact: bool = True) -> None:
    """Fail before reading when the server itself announces the wrong size."""
    if declared is not None and (declared > length or (exact and declared != length)):
        raise LengthError(f"{where}: the server announces {declared} bytes, expected {length}")


def _check_range(reply: _Reply, offset: int, length: int) -> None:
    """A 206 must continue exactly where the partial file ends, or appending corrupts it."""
    value = reply.response.getheader("Content-Range") or ""
    unit, _, spec = value.partition(" ")
    first, _, total = spec.partition("/")
    start = first.partition("-")[0]
    if unit != "bytes" or not start.isdigit() or int(start) != offset:
        raise FetchError(f"{reply.where}: bad Content-Range {value!r} to resume at {offset}")
    if total.isdigit():
        _check_declared(int(total), reply.where, length)


def _resume_point(
    dest: Path, meta: Path, size: int | None, url: str, length: int
) -> tuple[int, str | None]:
    """(offset, If-Range validator), or (0, None) to start over: a partial file is
    only trusted with a strong validator recorded for this very url and length."""
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


def _write_meta(meta: Path, url: str, length: int, response: http.client.HTTPResponse) -> None:
    """Remember what this partial file is a prefix of, for a later If-Range."""
    etag, modified = response.getheader("ETag"), response.getheader("Last-Modified")
    record = {"url": url, "length": length, "etag": etag, "last_modified": modified}
    atomic_write(meta, json.dumps(record).encode())


def _stream_to(reply: _Reply, dest: Path, offset: int, length: int) -> int:
    """Append from `offset` (0 truncates), stopping at length + 1 bytes, already one
    too many; fsync whatever arrived, so a resume after a power cut starts from it."""
    total = offset
    with dest.open("ab" if offset else "wb") as handle:
        try:
            while total <= length and (chunk := reply.read(min(_CHUNK, length + 1 - total))):
                handle.write(chunk)
                total += len(chunk)
        finally:
            handle.flush()
            os.fsync(handle.fileno())
    if total > length:
        raise LengthError(f"{reply.where}: body is longer than the {length} bytes expected")
    return total

"""The only module that speaks HTTP for updates: an I/O shell around http.client.

Deliberately dumb about *what* the bytes are (manifest.py verifies them) and strict
about *how* they arrive: https unless explicitly allowed, bounded reads (a hostile
or broken server cannot fill RAM or the SD card), hashes computed while a body
streams, resumable downloads (a flaky link re-sends only what is missing), an
overall deadline and a minimum rate (a server that drips a byte a second cannot
pin the update thread), and every network exception turned, here and in
transfer.py only, into one FetchError with a short reason. Stdlib only: it runs
on 1 GB boards.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit

from edge_agent import __version__
from edge_agent.errors import ConfigError, FetchError, UpdateError
from edge_agent.update import transfer
from edge_agent.update.manifest import FileCheck, FileRef
from edge_agent.update.protocols import Fetched, Validators
from edge_agent.update.transfer import Guard, Limits, Reply, network
from edge_agent.util.tls import load_identity

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5


@dataclass(frozen=True)
class FetchOptions:
    """How to reach the update server. `read_timeout` bounds each socket read;
    `deadline` bounds a whole fetch (a model download is resumed at the next
    check); a body slower than `min_rate` bytes/s over any `rate_window` seconds
    is given up (its partial kept), as is one `cancel`led by the caller."""

    connect_timeout: float = 10.0  # TCP connect and TLS handshake
    read_timeout: float = 30.0
    deadline: float = 3600.0
    min_rate: float = 1024.0
    rate_window: float = 60.0
    allow_http: bool = False
    ca_file: str | None = None  # replaces (does not extend) the system CAs
    client_cert: str | None = None
    client_key: str | None = None  # None: the key is in client_cert
    user_agent: str = f"edge-agent/{__version__}"

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "deadline", "rate_window"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be more than 0, got {getattr(self, name)!r}")
        if not self.min_rate >= 0:
            raise ConfigError(f"min_rate: must be 0 or more, got {self.min_rate!r}")


class Fetcher:
    """The `Fetch` protocol over HTTP(S): conditional, capped, hashed, resumable,
    guarded GETs; one connection per request, never reused."""

    def __init__(self, options: FetchOptions) -> None:
        self._options = options
        self._ssl = _ssl_context(options)  # built now: bad TLS files fail at start-up
        o = options
        self._limits = Limits(o.read_timeout, o.deadline, o.min_rate, o.rate_window)

    def fetch(
        self,
        url: str,
        *,
        max_length: int,
        sha256: str | None = None,
        into: Path | None = None,
        since: Validators | None = None,
        cancel: threading.Event | None = None,
    ) -> Fetched | None:
        """See `protocols.Fetch`. A 304 answers None (a poll costs one round trip)."""
        with Guard(url, self._limits, cancel) as guard:
            try:
                if into is None:
                    return self._get(url, max_length, sha256, since, guard)
                if sha256 is None:
                    raise ValueError("a download into a file needs its sha256")
                self._download(url, into, FileRef(url, max_length, sha256), guard)
                return Fetched(b"", into)
            except UpdateError as exc:
                guard.explain(exc)
                raise

    def _get(
        self, url: str, cap: int, sha256: str | None, since: Validators | None, guard: Guard
    ) -> Fetched | None:
        headers = {}
        if since is not None and since.etag:
            headers["If-None-Match"] = since.etag
        if since is not None and since.last_modified:
            headers["If-Modified-Since"] = since.last_modified
        with self._open(url, headers, guard) as reply:
            if reply.response.status == 304 and since is not None:
                return None
            _expect(reply, 200)
            body = transfer.read_body(reply, cap, sha256)
            return Fetched(body, None, reply.header("ETag"), reply.header("Last-Modified"))

    def _download(self, url: str, dest: Path, ref: FileRef, guard: Guard) -> None:
        """Stream `url` into `dest`, hashing it, resuming a partial file when the
        validator remembered in the `.meta` sidecar says the server still has the
        same file. Writes at most length + 1 bytes; a short read keeps the partial
        for later; a complete file of the wrong digest is deleted (never resumed)."""
        meta = dest.with_suffix(dest.suffix + ".meta")
        if _complete(dest, meta, ref, guard):
            return
        check = FileCheck(ref)
        offset, validator = transfer.resume_point(dest, meta, url, ref.length)
        if validator:  # hashed before the request: the server is not kept waiting
            transfer.hash_prefix(check, dest, offset, guard)
        headers = {"Range": f"bytes={offset}-", "If-Range": validator} if validator else {}
        with self._open(url, headers, guard) as reply:
            if reply.response.status == 206 and validator:
                transfer.check_range(reply, offset, ref.length)
                log.info("update: resuming %s at byte %d", reply.where, offset)
            else:
                if reply.response.status == 416:  # the partial outgrew the server's file
                    dest.unlink(missing_ok=True)
                _expect(reply, 200)  # a 200 to a Range: ignored, or the file changed
                transfer.check_declared(reply.response.length, reply.where, ref.length)
                offset, check = 0, FileCheck(ref)
                transfer.write_meta(meta, url, ref.length, reply)
            total = transfer.stream_to(reply, dest, offset, ref.length, check)
        if total < ref.length:
            raise FetchError(f"{reply.where}: short read: got {total} of {ref.length} bytes (kept)")
        meta.unlink(missing_ok=True)
        try:
            check.done()
        except UpdateError:
            dest.unlink(missing_ok=True)
            raise

    @contextmanager
    def _open(self, url: str, headers: dict[str, str], guard: Guard) -> Iterator[Reply]:
        """The final response after at most 5 redirects (never https -> http);
        its connection is closed on exit."""
        current = url
        for _ in range(_MAX_REDIRECTS + 1):
            connection, response = self._send(current, headers, guard)
            if response.status not in _REDIRECTS:
                break
            _close(connection, response)
            current = _redirect(current, response.getheader("Location"))
        else:
            raise FetchError(f"{url}: more than {_MAX_REDIRECTS} redirects")
        try:
            where = url if current == url else f"{url} (redirected to {current})"
            guard.where = where
            yield Reply(response, where, guard, self._options.read_timeout)
        finally:
            _close(connection, response)

    def _send(
        self, url: str, headers: dict[str, str], guard: Guard
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Connect under connect_timeout, then send and await headers under
        read_timeout, the guard watching the socket from then on."""
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
            with network(url, opts.connect_timeout, "connecting: "):
                connection.connect()
            guard.attach(connection.sock)
            with network(url, opts.read_timeout):
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
        raise ConfigError(f"ca_file {options.ca_file}: {transfer.reason(exc, 0)}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if options.client_key and not options.client_cert:
        raise ConfigError(f"client_key {options.client_key} is set without client_cert")
    if options.client_cert:
        load_identity(
            context,
            options.client_cert,
            options.client_key,
            cert_key="update.client_cert",
            key_key="update.client_key" if options.client_key else "update.client_cert",
        )
    return context


def _complete(dest: Path, meta: Path, ref: FileRef, guard: Guard) -> bool:
    """A whole file left by an earlier check (killed before it installed): no
    request if it hashes right; deleted, to start over, if not."""
    if not dest.exists() or dest.stat().st_size != ref.length:
        return False
    check = FileCheck(ref)
    transfer.hash_prefix(check, dest, ref.length, guard)
    try:
        check.done()
    except UpdateError as exc:
        log.warning("update: discarding %s: %s", dest, exc)
        dest.unlink()
        return False
    meta.unlink(missing_ok=True)
    return True


def _expect(reply: Reply, status: int) -> None:
    if reply.response.status != status:
        status = reply.response.status
        raise FetchError(f"{reply.where}: HTTP {status} {reply.response.reason}", status=status)

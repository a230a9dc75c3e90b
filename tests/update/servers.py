"""Real local HTTP(S) servers and a throwaway CA, for tests of the update fetcher.

Everything listens on 127.0.0.1 on a free port and runs in daemon threads, so a
test talks to a real socket, a real TLS stack and real HTTP framing.

    ca = make_ca(tmp_path)                          # CA.cert_file: PEM to trust
    with StaticServer(root, https=ca.server_cert()) as server:  # client_ca=ca: mTLS
        server.behave("/model.tflite", "close-early", times=1)
        url = server.url("/model.tflite")           # https://127.0.0.1:PORT/model.tflite
        ...
        server.count(path), server.last_headers(path)["range"], server.last_status(path)
        server.dripped(path)                        # body bytes a "drip" has sent so far

Files under `root` are served with a strong ETag (content hash), Last-Modified,
304 for If-None-Match / If-Modified-Since, and single Range requests (206, 416),
honouring If-Range. Behaviours (`StaticServer.behave`):

    "forever"        200 without Content-Length, endless bytes until the client hangs up
    "stall"          headers and half the file, then silence (until the server stops)
    "close-early"    headers and half the file, then the connection is closed
    "ignore-range"   the whole file with 200, whatever Range / If-Range say
    "silent"         read the request, never answer
    "drip"           headers (with the file's Content-Length), then one byte a second
    "drip-headers"   the status line, then header bytes one a second, never a body
    "status:NNN"     answer with status NNN and a short body
    "redirect:URL"   302 to URL (absolute, or relative to the request)

Also: `closed_port()` (connection refused) and `unresponsive_port()` (a listener
that never accepts: the kernel completes TCP, nobody speaks TLS or HTTP).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import ipaddress
import itertools
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CA", "CertPair", "StaticServer", "closed_port", "make_ca", "unresponsive_port"]

_FOREVER_CHUNK = b"\0" * 65536


# --- throwaway CA -----------------------------------------------------------------


@dataclass(frozen=True)
class CertPair:
    """PEM files of a certificate (leaf only) and its unencrypted private key."""

    cert: Path
    key: Path


@dataclass
class CA:
    """A self-signed CA whose certificate is `cert_file`; issues leaf certificates
    into `directory`. Made by `make_ca`."""

    directory: Path
    cert_file: Path
    _key: ec.EllipticCurvePrivateKey
    _cert: x509.Certificate
    _serials: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def server_cert(
        self, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), *, expired: bool = False
    ) -> CertPair:
        """A server certificate valid for `hosts` (IPs or DNS names); `expired` makes
        one that ended yesterday."""
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return self._issue(hosts[0], names, ExtendedKeyUsageOID.SERVER_AUTH, expired)

    def client_cert(self, name: str = "edge-agent-test-device") -> CertPair:
        """A client certificate for mTLS."""
        return self._issue(name, [], ExtendedKeyUsageOID.CLIENT_AUTH, expired=False)

    def _issue(
        self, name: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier, expired: bool
    ) -> CertPair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        day = dt.timedelta(days=1)
        start, end = (now - 10 * day, now - day) if expired else (now - day, now + day)
        builder = (
            _builder(name, self._cert.subject, key, start, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        role = "server" if usage == ExtendedKeyUsageOID.SERVER_AUTH else "client"
        stem = self.directory / f"{role}-{next(self._serials)}"
        return CertPair(_write_cert(stem, cert), _write_key(stem, key))


def make_ca(directory: Path) -> CA:
    """A fresh CA (EC P-256, valid a day) with its certificate in `directory`/ca.pem."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-agent test CA")])
    cert = (
        _builder(
            "edge-agent test CA", name, key, now - dt.timedelta(hours=1), now + dt.timedelta(days=1)
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return CA(directory, _write_cert(directory / "ca", cert), key, cert)


def _builder(
    common_name: str,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    start: dt.datetime,
    end: dt.datetime,
) -> x509.CertificateBuilder:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _write_cert(stem: Path, cert: x509.Certificate) -> Path:
    path = stem.with_suffix(".pem")
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(stem: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path = stem.with_suffix(".key")
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


# --- ports that misbehave below HTTP ----------------------------------------------


def closed_port() -> int:
    """A port nothing listens on (it was free a moment ago): connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def unresponsive_port() -> Iterator[int]:
    """A listening port whose owner never calls accept(): TCP connects (the kernel
    does that), then nothing is ever said, so TLS handshakes and HTTP reads hang."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


# --- the static server ------------------------------------------------------------


@dataclass
class _Seen:
    count: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0
    dripped: int = 0


class _State:
    """What the handler threads share with the test: behaviours and a request log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.behaviours: dict[str, tuple[str, int | None]] = {}
        self.seen: dict[str, _Seen] = {}

    def arrived(self, path: str, headers: dict[str, str]) -> str | None:
        """Log a request; its behaviour (None: serve normally), used up if counted."""
        with self.lock:
            seen = self.seen.setdefault(path, _Seen())
            seen.count += 1
            seen.headers = headers
            seen.status = 0
            behaviour, left = self.behaviours.get(path, (None, None))
            if behaviour is not None and left is not None:
                if left <= 1:
                    del self.behaviours[path]
                else:
                    self.behaviours[path] = (behaviour, left - 1)
            return behaviour


class StaticServer:
    """Files under `root` over HTTP on 127.0.0.1, or HTTPS with `https=` a server
    certificate; `client_ca` additionally requires client certificates it issued."""

    def __init__(
        self, root: Path, *, https: CertPair | None = None, client_ca: CA | None = None
    ) -> None:
        self._state = _State(root)
        self._context: ssl.SSLContext | None = None
        if https is not None:
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(https.cert, https.key)
            if client_ca is not None:
                self._context.verify_mode = ssl.CERT_REQUIRED
                self._context.load_verify_locations(client_ca.cert_file)
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self._state, self._context)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        """The URL of `path` on this server; `host="localhost"` to test names."""
        scheme = "https" if self._context is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def behave(self, path: str, behaviour: str | None, *, times: int | None = None) -> None:
        """Misbehave on `path` (see the module docstring) for the next `times`
        requests, or until changed; None serves the file normally again."""
        if behaviour is not None and behaviour.split(":")[0] not in _BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}")
        with self._state.lock:
            if behaviour is None:
                self._state.behaviours.pop(path, None)
            else:
                self._state.behaviours[path] = (behaviour, times)

    def count(self, path: str) -> int:
        """How many requests for `path` arrived (any status, any outcome)."""
        with self._state.lock:
            return self._state.seen.get(path, _Seen()).count

    def last_headers(self, path: str) -> dict[str, str]:
        """The headers of the last request for `path`, names lowercased."""
        with self._state.lock:
            return dict(self._state.seen.get(path, _Seen()).headers)

    def last_status(self, path: str) -> int:
        """The status answered to the last request for `path` (0: none sent)."""
        with self._state.lock:
            return self._state.seen.get(path, _Seen()).status

    def dripped(self, path: str) -> int:
        """How many body bytes "drip" answers for `path` have sent, in all."""
        with self._state.lock:
            return self._state.seen.get(path, _Seen()).dripped

    def __enter__(self) -> StaticServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state.stopping.set()  # releases "stall" and "silent" handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        state: _State,
        context: ssl.SSLContext | None,
    ) -> None:
        self.state = state
        self.context = context
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept, deferring the TLS handshake to the handler thread so a client
        that never completes it cannot block the accept loop."""
        sock, address = self.socket.accept()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # a forgotten client cannot pin a thread forever
    server: _Server

    def handle(self) -> None:
        try:
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()
            super().handle()
        except OSError:  # failed handshakes, clients that hung up: part of the game
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        with self.server.state.lock:
            self.server.state.seen.setdefault(self._path(), _Seen()).status = code
        super().send_response(code, message)

    def _path(self) -> str:
        return unquote(urlsplit(self.path).path)

    def do_GET(self) -> None:
        state = self.server.state
        headers = {name.lower(): value for name, value in self.headers.items()}
        behaviour = state.arrived(self._path(), headers)
        kind, _, argument = (behaviour or "").partition(":")
        if kind in ("forever", "silent", "status", "redirect", "drip-headers"):
            _BEHAVIOURS[kind](self, argument)
            return
        file = self._file()
        if file is None:
            self.send_error(404)
            return
        _serve(self, headers, file, kind)

    def _file(self) -> Path | None:
        root = self.server.state.root.resolve()
        path = (root / self._path().lstrip("/")).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None


def _serve(handler: _Handler, headers: dict[str, str], file: Path, kind: str) -> None:
    """A file with validators, conditional GET and Range; `kind` may cut it short."""
    data, mtime = file.read_bytes(), int(file.stat().st_mtime)
    etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
    modified = email.utils.formatdate(mtime, usegmt=True)
    if _not_modified(headers, etag, mtime):
        handler.send_response(304)
        _validators(handler, etag, modified)
        handler.end_headers()
        return
    start = None
    if kind != "ignore-range" and headers.get("if-range", etag) in (etag, modified):
        start = _range_start(headers.get("range", ""))
    if start is not None and start >= len(data):
        handler.send_response(416)
        handler.send_header("Content-Range", f"bytes */{len(data)}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return
    status = 200 if start is None else 206
    body = data[start or 0 :]
    handler.send_response(status)
    _validators(handler, etag, modified)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Accept-Ranges", "bytes")
    handler.send_header("Content-Length", str(len(body)))
    if status == 206:
        handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    handler.end_headers()
    if kind == "drip":
        _drip(handler, body)
        return
    if kind in ("stall", "close-early"):
        handler.wfile.write(body[: len(body) // 2])
        handler.wfile.flush()
        if kind == "stall":
            handler.server.state.stopping.wait()
        handler.close_connection = True
        return
    handler.wfile.write(body)


def _validators(handler: _Handler, etag: str, modified: str) -> None:
    handler.send_header("ETag", etag)
    handler.send_header("Last-Modified", modified)


def _not_modified(headers: dict[str, str], etag: str, mtime: int) -> bool:
    if "if-none-match" in headers:
        tags = [tag.strip() for tag in headers["if-none-match"].split(",")]
        return "*" in tags or etag in tags or f"W/{etag}" in tags
    since = headers.get("if-modified-since")
    if since is None:
        return False
    try:
        return mtime <= email.utils.parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False


def _range_start(value: str) -> int | None:
    """The first byte of a single `bytes=N-` or `bytes=N-M` range; None: ignore it."""
    unit, _, spec = value.partition("=")
    first = spec.partition("-")[0].strip()
    return int(first) if unit.strip() == "bytes" and "," not in spec and first.isdigit() else None


def _forever(handler: _Handler, _: str) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.close_connection = True
    while not handler.server.state.stopping.is_set():
        handler.wfile.write(_FOREVER_CHUNK)


def _drip(handler: _Handler, body: bytes) -> None:
    """One byte a second, until the body is sent, the client hangs up (the write
    fails) or the server stops."""
    state = handler.server.state
    handler.close_connection = True
    for byte in body:
        if state.stopping.wait(1.0):
            return
        handler.wfile.write(bytes([byte]))
        with state.lock:
            state.seen[handler._path()].dripped += 1


def _drip_headers(handler: _Handler, _: str) -> None:
    handler.close_connection = True
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not handler.server.state.stopping.wait(1.0):
        handler.wfile.write(b"a")


def _silent(handler: _Handler, _: str) -> None:
    handler.server.state.stopping.wait()
    handler.close_connection = True


def _status(handler: _Handler, code: str) -> None:
    body = f"status {code}\n".encode()
    handler.send_response(int(code))
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _redirect(handler: _Handler, location: str) -> None:
    handler.send_response(302)
    handler.send_header("Location", location)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def _noop(handler: _Handler, _: str) -> None:
    """For behaviours handled while serving a file (see `_serve`)."""


_BEHAVIOURS = {
    "forever": _forever,
    "silent": _silent,
    "status": _status,
    "redirect": _redirect,
    "drip-headers": _drip_headers,
    "stall": _noop,
    "drip": _noop,
    "close-early": _noop,
    "ignore-range": _noop,
}

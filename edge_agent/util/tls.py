"""TLS to the MQTT broker: one verified `ssl.SSLContext`, built once at start-up,
and secrets read from files.

What `MqttTls` means on the wire:

- The broker's certificate chain is always verified, against `ca_file` (which
  *replaces* the system CAs: a private CA pins the broker) or, without it, the
  system CAs. TLS 1.2 at least (`min_version = "1.3"` to refuse 1.2).
- The hostname the agent connects to must be in the broker's certificate,
  unless `insecure`: then only the hostname check is off, the chain is still
  verified. That is `mosquitto_pub --insecure`'s and paho's `tls_insecure_set`
  meaning, not curl's `-k` (which also accepts any certificate). Because the
  public CAs sign certificates for anyone, `insecure` is refused without a
  `ca_file`; and every connection attempt logs a warning while it is on.
- `cert_file` + `key_file` are the device's identity for mutual TLS
  (`key_file` may be omitted when the key is in `cert_file`). Encrypted keys
  are refused rather than prompting for a passphrase on a headless board.
- `alpn`: protocols offered in the handshake, e.g. `("x-amzn-mqtt-ca",)` for
  AWS IoT Core on port 443.

Every file problem is a `ConfigError` naming the setting and the file, found
when the context is built (start-up), not at the first connection. Handshake
failures, and the TLS alerts a broker sends when it refuses the device's
certificate, are logged here with a readable reason (rate-limited), since paho
reports only "connection failed" for them.
"""

from __future__ import annotations

import logging
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import ConfigError
from edge_agent.util.logs import RateLimitedLog

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

__all__ = ["MqttTls", "apply", "describe_tls_error", "mqtt_tls_context", "read_secret"]

log = logging.getLogger(__name__)

KEY = "mqtt.tls"  # where these settings live in the configuration, for messages
PASSWORD_FILE_KEY = "mqtt.password_file"  # noqa: S105 - a settings key, not a secret
MAX_SECRET_BYTES = 64 * 1024
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class MqttTls:
    """TLS options for the broker connection (the `mqtt.tls` table)."""

    ca_file: str | None = None  # PEM; replaces the system CAs; None: the system CAs
    cert_file: str | None = None  # PEM client certificate (chain), for mTLS
    key_file: str | None = None  # PEM unencrypted private key; None: it is in cert_file
    insecure: bool = False  # skip the hostname check only; the chain is still verified
    alpn: tuple[str, ...] = ()
    min_version: str = "1.2"  # "1.2" or "1.3"


class _Context(ssl.SSLContext):
    """An SSLContext whose sockets log why a handshake failed (see `_Socket`)."""

    limited: RateLimitedLog


class _Socket(ssl.SSLSocket):
    """Says, once per reason a minute, what went wrong in TLS, and warns on every
    connection attempt made without the hostname check. Then re-raises: paho
    handles the error as before (connect-fail callback, backoff, retry)."""

    def do_handshake(self, block: bool = False) -> None:
        host = self.server_hostname or "?"
        if not self.context.check_hostname:
            log.warning(
                "%s.insecure is on: not checking that the certificate %s presents is for "
                "that name (any certificate from the trusted CA is accepted)",
                KEY,
                host,
            )
        try:
            super().do_handshake(block)
        except (ssl.SSLError, OSError) as exc:
            self._report(exc, "TLS handshake failed")
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        # In TLS 1.3 the server checks the client certificate after the client's
        # handshake is done: its refusal arrives as an alert on the first read.
        try:
            return super().recv(buflen, flags)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, ssl.SSLZeroReturnError):
            raise
        except ssl.SSLError as exc:
            self._report(exc, "TLS connection closed by an error")
            raise

    def _report(self, exc: BaseException, what: str) -> None:
        if isinstance(exc, ssl.SSLWantReadError | ssl.SSLWantWriteError | BlockingIOError):
            return  # not errors: the non-blocking socket has nothing yet
        reason = describe_tls_error(exc)
        context = self.context
        limited = context.limited if isinstance(context, _Context) else RateLimitedLog(log)
        host = self.server_hostname or "?"
        limited.error(f"{host}:{reason}", "%s with %s: %s", what, host, reason)


_Context.sslsocket_class = _Socket


def mqtt_tls_context(tls: MqttTls, *, key: str = KEY) -> ssl.SSLContext:
    """A client context for the broker; ConfigError naming `key`.<field> and the
    file for any unusable setting. `key` is the settings path for messages."""
    if tls.insecure and not tls.ca_file:
        raise ConfigError(
            f"{key}.insecure: needs {key}.ca_file (a private CA): with the public CAs, "
            "anyone with a certificate for any name could pose as the broker"
        )
    if tls.key_file and not tls.cert_file:
        raise ConfigError(f"{key}.key_file: is set without {key}.cert_file")
    if tls.min_version not in _VERSIONS:
        raise ConfigError(f"{key}.min_version: {tls.min_version!r} is not one of 1.2, 1.3")
    context = _Context(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    context.limited = RateLimitedLog(log)
    context.minimum_version = _VERSIONS[tls.min_version]
    if tls.ca_file:
        _load_ca(context, tls.ca_file, f"{key}.ca_file")
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.cert_file:
        _load_identity(context, tls.cert_file, tls.key_file, key)
    if tls.alpn:
        _set_alpn(context, tls.alpn, f"{key}.alpn")
    if tls.insecure:
        context.check_hostname = False  # verify_mode stays CERT_REQUIRED
    return context


def apply(client: mqtt.Client, tls: MqttTls | None) -> None:
    """Make `client` connect over TLS as `tls` says (nothing when None). Call
    before connect/connect_async; raises ConfigError for unusable settings."""
    if tls is None:
        return
    context = mqtt_tls_context(tls)
    client.tls_set_context(context)
    # paho keeps its own hostname flag beside the context's; keep them equal.
    client.tls_insecure_set(tls.insecure)
    if tls.insecure:
        log.warning(
            "%s.insecure is on: the broker's certificate is verified against %s but "
            "not matched to the broker's name",
            KEY,
            tls.ca_file,
        )


def read_secret(path: str | Path, *, key: str = PASSWORD_FILE_KEY) -> str:
    """A secret kept in a file (a password, a token), without one trailing newline
    (`echo` adds one). Works with systemd credentials: `LoadCredential=` puts the
    file at `$CREDENTIALS_DIRECTORY/<name>` (`%d/<name>` in the unit). ConfigError
    naming `key`; the secret itself never appears in a message."""
    file = Path(path)
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
            mode = os.fstat(handle.fileno()).st_mode
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {file}: {_os_reason(exc)}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{key}: {file} is over {MAX_SECRET_BYTES} bytes; not a password file")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    try:
        secret = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {file} is not UTF-8 text") from None
    if not secret:
        raise ConfigError(f"{key}: {file} is empty")
    if "\n" in secret or "\r" in secret:
        raise ConfigError(f"{key}: {file} has more than one line")
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        log.warning("%s: %s is readable by other users; chmod o-rwx it", key, file)
    return secret


def describe_tls_error(exc: BaseException) -> str:
    """A short reason an operator can act on, from an ssl or socket error."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = str(exc.verify_message or exc.reason or exc)
        return f"the broker's certificate is not trusted: {message} ({_hint(message)})"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        for marker, text in _ALERTS:
            if marker in reason:
                return f"{text} ({exc.reason})"
    for kind, text in _CLOSED:
        if isinstance(exc, kind):
            return text
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return _os_reason(exc)
    return str(exc) or type(exc).__name__


def _hint(message: str) -> str:
    lowered = message.lower()
    if "mismatch" in lowered:
        return "mqtt.host must be a name the certificate is for"
    if "expired" in lowered or "not yet valid" in lowered:
        return "the certificate's dates or this device's clock are wrong"
    return f"is {KEY}.ca_file the CA that issued it?"


_CLOSED: tuple[tuple[type[BaseException], str], ...] = (
    (ssl.SSLEOFError, "the broker closed the connection during the TLS handshake"),
    (ConnectionResetError, "the broker closed the connection during the TLS handshake"),
    (BrokenPipeError, "the broker closed the connection during the TLS handshake"),
    (TimeoutError, "no TLS answer in time (is the port a TLS listener?)"),
)


# OpenSSL reason codes of the alerts a broker sends when it refuses a client, and
# of what the client sees when the port is not a TLS port. First match wins.
_ALERTS: tuple[tuple[str, str], ...] = (
    ("CERTIFICATE_REQUIRED", "the broker requires a client certificate (set cert_file, key_file)"),
    ("CERTIFICATE_EXPIRED", "the broker refused our client certificate: it has expired"),
    ("CERTIFICATE_REVOKED", "the broker refused our client certificate: it is revoked"),
    ("UNKNOWN_CA", "the broker does not trust the CA that issued our client certificate"),
    ("BAD_CERTIFICATE", "the broker refused our client certificate"),
    ("CERTIFICATE_UNKNOWN", "the broker refused our client certificate"),
    ("UNSUPPORTED_CERTIFICATE", "the broker refused our client certificate"),
    ("NO_APPLICATION_PROTOCOL", "the broker accepts none of the ALPN protocols offered"),
    ("PROTOCOL_VERSION", "the broker does not accept our TLS versions (min_version?)"),
    ("UNSUPPORTED_PROTOCOL", "the broker does not accept our TLS versions (min_version?)"),
    ("WRONG_VERSION_NUMBER", "the broker's port does not speak TLS (a plain MQTT port?)"),
    ("RECORD_LAYER_FAILURE", "the broker's port does not speak TLS (a plain MQTT port?)"),
    ("HANDSHAKE_FAILURE", "the broker refused the handshake (client certificate or ciphers)"),
)


def _load_ca(context: ssl.SSLContext, path: str, key: str) -> None:
    _read_pem(path, key, "CERTIFICATE")
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        reason = exc.reason or exc
        raise ConfigError(f"{key}: {path}: not usable as CA certificates: {reason}") from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {_os_reason(exc)}") from None


def _load_identity(context: ssl.SSLContext, cert: str, key_file: str | None, key: str) -> None:
    load_identity(
        context,
        cert,
        key_file,
        cert_key=f"{key}.cert_file",
        key_key=f"{key}.key_file" if key_file else f"{key}.cert_file",
    )


def load_identity(
    context: ssl.SSLContext, cert: str, key_file: str | None, *, cert_key: str, key_key: str
) -> None:
    """A client certificate and its key (mutual TLS), for the broker and for the
    update server alike. Each file is checked on its own so the message names it
    (by `cert_key` / `key_key`, the settings that gave it), and an encrypted key
    fails instead of OpenSSL prompting on a terminal; then the pair."""
    _read_pem(cert, cert_key, "CERTIFICATE")
    key_pem = _read_pem(key_file or cert, key_key, "PRIVATE KEY")
    if b"ENCRYPTED" in key_pem:
        raise ConfigError(f"{key_key}: {key_file or cert}: encrypted keys are not supported")

    def no_password() -> bytes:
        raise ConfigError(f"{key_key}: {key_file or cert}: encrypted keys are not supported")

    try:
        context.load_cert_chain(cert, key_file, password=no_password)
    except ssl.SSLError as exc:
        what = f"{cert_key} {cert}" + (f" / {key_key} {key_file}" if key_file else "")
        if "KEY_VALUES_MISMATCH" in (exc.reason or "").upper():
            raise ConfigError(f"{what}: the key does not belong to the certificate") from None
        raise ConfigError(f"{what}: {exc.reason or exc}") from None
    except OSError as exc:  # the file changed under us
        raise ConfigError(f"{cert_key}: {cert}: {_os_reason(exc)}") from None


def _read_pem(path: str, key: str, label: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {_os_reason(exc)}") from None
    if f"{label}-----".encode() not in data:
        raise ConfigError(f"{key}: {path}: no PEM {label} in it")
    return data


def _set_alpn(context: ssl.SSLContext, protocols: tuple[str, ...], key: str) -> None:
    if not ssl.HAS_ALPN:  # pragma: no cover - every supported OpenSSL has it
        raise ConfigError(f"{key}: this Python's OpenSSL has no ALPN support")
    for name in protocols:
        if not name or not name.isascii() or len(name) > 255:
            raise ConfigError(f"{key}: {name!r} is not an ALPN protocol name (1-255 ASCII bytes)")
    context.set_alpn_protocols(list(protocols))


def _os_reason(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else str(exc) or type(exc).__name__

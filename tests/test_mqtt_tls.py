"""TLS to the broker: `edge_agent.util.tls` against a real mosquitto with TLS listeners,
certificates from a throwaway CA made at test time, and real paho clients.

Each refusal is asserted the way an operator meets it: the client never
connects, paho keeps retrying (nothing crashed), and the log says why, once.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.app.agent import Agent
from edge_agent.config.settings import load_settings
from edge_agent.errors import ConfigError
from edge_agent.mqtt.publisher import MqttOptions
from edge_agent.sources.sensor.mqtt import MqttSensorSource
from edge_agent.sources.sensor.window import SlidingWindow
from edge_agent.util.tls import MqttTls, apply, describe_tls_error, mqtt_tls_context, read_secret

from .broker import Mosquitto, free_port
from .conftest import DEMO_MODELS
from .subscriber import Subscriber
from .update.servers import CA, CertPair, make_ca

pytestmark = pytest.mark.integration

TOPIC = "edge/tls-test/echo"
DEVICE = "edge-dev-1"  # the client certificate's CN: the broker's username for it


# --- certificates and brokers -----------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: CA  # the broker trusts it for clients; devices trust it for the broker
    other: CA  # a CA nobody here trusts
    device: CertPair  # client certificate issued by `ca`
    expired: CertPair  # client certificate issued by `ca`, ended yesterday
    stranger: CertPair  # client certificate issued by `other`
    server: CertPair  # for 127.0.0.1 and localhost
    elsewhere: CertPair  # a good server certificate, for another name

    def mtls(self, **overrides: Any) -> MqttTls:
        """The options of a correctly configured device."""
        options: dict[str, Any] = {
            "ca_file": str(self.ca.cert_file),
            "cert_file": str(self.device.cert),
            "key_file": str(self.device.key),
        }
        return MqttTls(**{**options, **overrides})


def expired_client_cert(ca: CA) -> CertPair:
    """servers.py makes expired server certificates only; its issuer does the rest."""
    return ca._issue("expired-device", [], ExtendedKeyUsageOID.CLIENT_AUTH, expired=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca, other = make_ca(root / "ca"), make_ca(root / "other")
    return Pki(
        ca=ca,
        other=other,
        device=ca.client_cert(DEVICE),
        expired=expired_client_cert(ca),
        stranger=other.client_cert(DEVICE),
        server=ca.server_cert(),
        elsewhere=ca.server_cert(("mqtt.example.invalid",)),
    )


def tls_listener(port: int, pki: Pki, server: CertPair, *, client_certs: bool) -> str:
    """A listener block: in mosquitto 2.0 the TLS options after a `listener` line
    belong to that listener (security options like password_file stay global
    while per_listener_settings is false)."""
    lines = [
        f"listener {port} 127.0.0.1",
        f"cafile {pki.ca.cert_file}",
        f"certfile {server.cert}",
        f"keyfile {server.key}",
    ]
    if client_certs:
        lines += ["require_certificate true", "use_identity_as_username true"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TlsBroker:
    server: Mosquitto  # server.port: its plain listener
    mtls: int  # client certificates required, their CN is the username
    mismatch: int  # the same, but the server certificate names another host


@pytest.fixture(scope="module")
def mtls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    mtls, mismatch = free_port(), free_port()
    config = tls_listener(mtls, pki, pki.server, client_certs=True)
    config += tls_listener(mismatch, pki, pki.elsewhere, client_certs=True)
    server = Mosquitto(tmp_path_factory.mktemp("mtls-broker"), config, persistence=False)
    server.start()
    wait_listening(mtls, mismatch)
    yield TlsBroker(server, mtls, mismatch)
    server.stop()


@dataclass(frozen=True)
class PasswordBroker:
    server: Mosquitto
    tls: int  # server certificate only; clients log in with a password


@pytest.fixture(scope="module")
def password_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordBroker]:
    folder = tmp_path_factory.mktemp("password-broker")
    passwords = folder / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "cam", "s3cret"], check=True)
    passwords.chmod(0o644)
    port = free_port()
    config = f"password_file {passwords}\n" + tls_listener(
        port, pki, pki.server, client_certs=False
    )
    server = Mosquitto(folder, config, persistence=False)
    server.config.write_text(
        server.config.read_text().replace("allow_anonymous true", "allow_anonymous false")
    )
    server.start()
    wait_listening(port)
    yield PasswordBroker(server, port)
    server.stop()


def wait_listening(*ports: int, timeout: float = 5.0) -> None:
    """Mosquitto.start waits for its first listener; the others open with it."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


# --- a paho client made like MqttPublisher's --------------------------------------


class Probe:
    """An MQTT 5 client that reconnects every second, made TLS by `tls.apply`,
    counting failed attempts and echoing a message through the broker."""

    def __init__(
        self,
        port: int,
        options: MqttTls | None,
        *,
        name: str,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.refusals: list[str] = []
        self.received: list[bytes] = []
        self._failures = 0
        self._lock = threading.Lock()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        if username:
            client.username_pw_set(username, password)
        apply(client, options)
        client.reconnect_delay_set(1, 1)
        client.on_connect = self._on_connect
        client.on_connect_fail = lambda _c, _u: self._failed()
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = lambda _c, _u, msg: self.received.append(bytes(msg.payload))
        client.connect_async("127.0.0.1", port, keepalive=10)
        client.loop_start()
        self.client = client

    @property
    def failures(self) -> int:
        with self._lock:
            return self._failures

    def _failed(self) -> None:
        with self._lock:
            self._failures += 1

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            self.refusals.append(str(rc))
            self._failed()
            return
        self.connected.set()
        c.subscribe(TOPIC, qos=1)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        if not self.connected.is_set():
            self._failed()  # TLS 1.3: refused after the client's handshake, at the first read

    def echo(self, payload: bytes, timeout: float = 10.0) -> None:
        """Publish to TOPIC and see it come back through the broker."""
        assert self.connected.wait(timeout), "not connected"
        assert self.subscribed.wait(timeout), "subscription not acknowledged"
        info = self.client.publish(TOPIC, payload, qos=1)
        info.wait_for_publish(timeout)
        wait_until(lambda: payload in self.received, timeout, f"{payload!r} not echoed")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def probe(port: int, options: MqttTls | None, **kwargs: Any) -> Iterator[Probe]:
    client = Probe(port, options, **kwargs)
    try:
        yield client
    finally:
        client.close()


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


def assert_refused(client: Probe, caplog: pytest.LogCaptureFixture, reason: str) -> None:
    """The reason is logged, the client is not connected a moment later, and
    paho's thread is alive to retry (test_insecure_warns_on_every_connection_attempt
    watches the retries themselves)."""
    wait_until(
        lambda: reason in caplog.text and client.failures >= 1,
        8.0,
        f"expected {reason!r} and a failed attempt; failures={client.failures}, "
        f"log:\n{caplog.text}",
    )
    assert not client.connected.wait(0.5)
    thread = client.client._thread  # paho's network thread: an exception would end it
    assert thread is not None
    assert thread.is_alive()


# --- mutual TLS -------------------------------------------------------------------


def test_mutual_tls_connects_and_messages_flow(pki: Pki, mtls_broker: TlsBroker) -> None:
    with probe(mtls_broker.mtls, pki.mtls(), name="mtls-ok") as client:
        client.echo(b"hello over mTLS")
    log = mtls_broker.server.log.read_text()
    assert f"as mtls-ok (p5, c1, k10, u'{DEVICE}')" in log  # the certificate is the login


REFUSALS: dict[str, tuple[Callable[[Pki], MqttTls], str]] = {
    "client trusts another CA": (
        lambda pki: pki.mtls(ca_file=str(pki.other.cert_file)),
        "the broker's certificate is not trusted",
    ),
    "client certificate from another CA": (
        lambda pki: pki.mtls(cert_file=str(pki.stranger.cert), key_file=str(pki.stranger.key)),
        "the broker does not trust the CA that issued our client certificate",
    ),
    "expired client certificate": (
        lambda pki: pki.mtls(cert_file=str(pki.expired.cert), key_file=str(pki.expired.key)),
        "the broker refused our client certificate: it has expired",
    ),
    "no client certificate": (
        lambda pki: MqttTls(ca_file=str(pki.ca.cert_file)),
        "the broker requires a client certificate",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_never_connect_and_say_why(
    pki: Pki, mtls_broker: TlsBroker, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    make, reason = REFUSALS[case]
    with probe(mtls_broker.mtls, make(pki), name=f"refused-{len(case)}") as client:
        assert_refused(client, caplog, reason)


def test_a_server_certificate_for_another_name_is_refused(
    pki: Pki, mtls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    with probe(mtls_broker.mismatch, pki.mtls(), name="mismatch") as client:
        assert_refused(client, caplog, "IP address mismatch, certificate is not valid for")


def test_a_plain_port_is_not_mistaken_for_tls(
    pki: Pki, mtls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    with probe(mtls_broker.server.port, pki.mtls(), name="plain-port") as client:
        assert_refused(client, caplog, "closed the connection during the TLS handshake")


# --- insecure: no hostname check, the chain still checked ------------------------


def test_insecure_accepts_another_name_and_warns(
    pki: Pki, mtls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    with probe(mtls_broker.mismatch, pki.mtls(insecure=True), name="insecure") as client:
        client.echo(b"hello without a hostname check")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("mqtt.tls.insecure is on" in r.getMessage() for r in warnings)


def test_insecure_warns_on_every_connection_attempt(
    pki: Pki, mtls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    options = MqttTls(ca_file=str(pki.ca.cert_file), insecure=True)  # no client certificate
    refused = "the broker requires a client certificate"
    with probe(mtls_broker.mismatch, options, name="insecure-retrying") as client:
        assert_refused(client, caplog, refused)
        wait_until(lambda: client.failures >= 2, 8.0, "paho did not try again")
        assert not client.connected.is_set()
    attempts = caplog.text.count("not checking that the certificate 127.0.0.1 presents")
    assert attempts >= 2
    assert caplog.text.count(refused) == 1  # the error is rate-limited, the warning is not


def test_insecure_still_verifies_the_certificate_chain(
    pki: Pki, mtls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    options = pki.mtls(ca_file=str(pki.other.cert_file), insecure=True)
    with probe(mtls_broker.mismatch, options, name="insecure-other-ca") as client:
        assert_refused(client, caplog, "the broker's certificate is not trusted")


# --- username and password over TLS -----------------------------------------------


@pytest.mark.parametrize(("secret", "accepted"), [("s3cret\n", True), ("n0t-it\n", False)])
def test_password_from_a_file_over_tls(
    pki: Pki,
    password_broker: PasswordBroker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    secret: str,
    accepted: bool,
) -> None:
    password_file = tmp_path / "mqtt-password"
    password_file.write_text(secret, encoding="utf-8")  # as `echo s3cret > file` writes it
    password_file.chmod(0o600)
    options = MqttTls(ca_file=str(pki.ca.cert_file))
    password = read_secret(password_file)
    with probe(
        password_broker.tls, options, name=f"pw-{accepted}", username="cam", password=password
    ) as client:
        if accepted:
            client.echo(b"hello with a password")
        else:
            wait_until(lambda: bool(client.refusals), 8.0, "not refused")
            assert not client.connected.wait(0.5)
            assert client.refusals[0] == "Not authorized"
    assert "s3cret" not in caplog.text
    assert "n0t-it" not in caplog.text


# --- the context itself: ALPN, versions -------------------------------------------


def handshake_with(
    pki: Pki, client: ssl.SSLContext, server: ssl.SSLContext, *, chain: bool = True
) -> tuple[str | None, str | None, BaseException | None]:
    """One handshake with a Python TLS server: (server's ALPN pick, client's, client
    error). `chain`: give the server the good certificate for 127.0.0.1."""
    if chain:
        server.load_cert_chain(pki.server.cert, pki.server.key)
    seen: dict[str, str | None] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    seen["alpn"] = tls.selected_alpn_protocol()
            except (ssl.SSLError, OSError):
                seen["alpn"] = None

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                mine, error = tls.selected_alpn_protocol(), None
        except (ssl.SSLError, OSError) as exc:
            mine, error = None, exc
        thread.join(5)
    return seen.get("alpn"), mine, error


def test_alpn_protocols_are_offered(pki: Pki) -> None:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.set_alpn_protocols(["x-amzn-mqtt-ca"])  # as AWS IoT Core on port 443
    client = mqtt_tls_context(
        MqttTls(ca_file=str(pki.ca.cert_file), alpn=("mqtt", "x-amzn-mqtt-ca"))
    )
    picked, agreed, error = handshake_with(pki, client, server)
    assert error is None
    assert picked == agreed == "x-amzn-mqtt-ca"


def test_min_version_1_3_refuses_a_tls_1_2_broker(pki: Pki) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    strict = mqtt_tls_context(MqttTls(ca_file=str(pki.ca.cert_file), min_version="1.3"))
    _, _, error = handshake_with(pki, strict, old)
    assert isinstance(error, ssl.SSLError)
    assert "does not accept our TLS versions" in describe_tls_error(error)
    default = mqtt_tls_context(MqttTls(ca_file=str(pki.ca.cert_file)))
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake_with(pki, default, old)[2] is None


def test_an_expired_broker_certificate_points_at_the_clock(pki: Pki) -> None:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    expired = pki.ca.server_cert(expired=True)
    server.load_cert_chain(expired.cert, expired.key)
    client = mqtt_tls_context(MqttTls(ca_file=str(pki.ca.cert_file)))
    _, _, error = handshake_with(pki, client, server, chain=False)
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert describe_tls_error(error) == (
        "the broker's certificate is not trusted: certificate has expired "
        "(the certificate's dates or this device's clock are wrong)"
    )


def test_the_context_verifies_and_pins(pki: Pki) -> None:
    context = mqtt_tls_context(pki.mtls())
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert len(context.get_ca_certs()) == 1  # ca_file replaces the system CAs
    insecure = mqtt_tls_context(pki.mtls(insecure=True))
    assert insecure.verify_mode == ssl.CERT_REQUIRED
    assert not insecure.check_hostname


# --- configuration errors name the key and the file -------------------------------


def write_encrypted_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return path


BAD_OPTIONS: dict[str, tuple[Callable[[Pki, Path], MqttTls], str]] = {
    "missing ca_file": (
        lambda pki, tmp: pki.mtls(ca_file=str(tmp / "nope.pem")),
        "mqtt.tls.ca_file: cannot read {tmp}/nope.pem: no such file or directory",
    ),
    "a key as ca_file": (
        lambda pki, tmp: pki.mtls(ca_file=str(pki.device.key)),
        "mqtt.tls.ca_file: {key}: no PEM CERTIFICATE in it",
    ),
    "a corrupt ca_file": (
        lambda pki, tmp: pki.mtls(ca_file=str(corrupt_pem(tmp / "ca.pem"))),
        "mqtt.tls.ca_file: {tmp}/ca.pem: not usable as CA certificates",
    ),
    "missing cert_file": (
        lambda pki, tmp: pki.mtls(cert_file=str(tmp / "device.pem")),
        "mqtt.tls.cert_file: cannot read {tmp}/device.pem: no such file or directory",
    ),
    "missing key_file": (
        lambda pki, tmp: pki.mtls(key_file=str(tmp / "device.key")),
        "mqtt.tls.key_file: cannot read {tmp}/device.key: no such file or directory",
    ),
    "the key of another certificate": (
        lambda pki, tmp: pki.mtls(key_file=str(pki.expired.key)),
        "the key does not belong to the certificate",
    ),
    "an encrypted key": (
        lambda pki, tmp: pki.mtls(key_file=str(write_encrypted_key(tmp / "enc.key"))),
        "mqtt.tls.key_file: {tmp}/enc.key: encrypted keys are not supported",
    ),
    "no key anywhere": (
        lambda pki, tmp: pki.mtls(key_file=None),
        "mqtt.tls.cert_file: {cert}: no PEM PRIVATE KEY in it",
    ),
    "a key without a certificate": (
        lambda pki, tmp: pki.mtls(cert_file=None),
        "mqtt.tls.key_file: is set without mqtt.tls.cert_file",
    ),
    "insecure with the public CAs": (
        lambda pki, tmp: MqttTls(insecure=True),
        "mqtt.tls.insecure: needs mqtt.tls.ca_file",
    ),
    "TLS 1.1": (
        lambda pki, tmp: pki.mtls(min_version="1.1"),
        "mqtt.tls.min_version: '1.1' is not one of 1.2, 1.3",
    ),
    "an empty ALPN name": (
        lambda pki, tmp: pki.mtls(alpn=("mqtt", "")),
        "mqtt.tls.alpn: '' is not an ALPN protocol name",
    ),
}


def corrupt_pem(path: Path) -> Path:
    path.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    return path


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_unusable_settings_are_config_errors(pki: Pki, tmp_path: Path, case: str) -> None:
    make, expected = BAD_OPTIONS[case]
    message = expected.format(tmp=tmp_path, key=pki.device.key, cert=pki.device.cert)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    with pytest.raises(ConfigError) as raised:
        apply(client, make(pki, tmp_path))
    assert message in str(raised.value)


def test_apply_none_leaves_the_client_plain() -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    apply(client, None)
    client.tls_set_context(ssl.create_default_context())  # would raise if TLS were set


# --- secrets in files -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        (b"s3cret\n", "s3cret"),
        (b"s3cret", "s3cret"),
        (b"s3cret\r\n", "s3cret"),
        (b" spaced s3cret \n", " spaced s3cret "),
        ("pässwörd\n".encode(), "pässwörd"),
    ],
)
def test_read_secret_strips_one_newline(tmp_path: Path, content: bytes, secret: str) -> None:
    path = tmp_path / "mqtt-password"
    path.write_bytes(content)
    path.chmod(0o600)
    assert read_secret(path) == secret


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read {path}: no such file or directory"),
        (b"", "{path} is empty"),
        (b"\n", "{path} is empty"),
        (b"s3cret\nhunter2\n", "{path} has more than one line"),
        (b"s3cret\n\n", "{path} has more than one line"),
        (b"\xff\xfe", "{path} is not UTF-8 text"),
        (b"x" * 70_000, "{path} is over 65536 bytes; not a password file"),
    ],
)
def test_read_secret_errors_name_the_key_not_the_secret(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    path = tmp_path / "mqtt-password"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        read_secret(path)
    message = str(raised.value)
    assert message == "mqtt.password_file: " + problem.format(path=path)
    assert "s3cret" not in message
    assert "hunter2" not in message


def test_read_secret_warns_when_others_can_read_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mqtt-password"
    path.write_text("s3cret\n")
    path.chmod(0o600)
    read_secret(path)
    assert "readable by other users" not in caplog.text
    path.chmod(0o644)
    assert read_secret(path, key="pipelines.0.source.password_file") == "s3cret"
    assert f"pipelines.0.source.password_file: {path} is readable by other users" in caplog.text
    assert "s3cret" not in caplog.text


# --- the agent over TLS: active once MqttOptions has `tls` (the wiring patch) -----

WIRED = "tls" in {f.name for f in fields(MqttOptions)}
needs_wiring = pytest.mark.skipif(not WIRED, reason="MqttOptions.tls is not wired yet")


def agent_config(port: int, state_dir: Path, mqtt: dict[str, Any]) -> dict[str, Any]:
    frames = DEMO_MODELS / "samples" / "camera"
    return {
        "device_id": "dev1",
        "state_dir": str(state_dir),
        "mqtt": {"host": "127.0.0.1", "port": port, "keepalive": 5, **mqtt},
        "pipelines": [
            {
                "name": "cam",
                "model": str(DEMO_MODELS / "shapes_int8.tflite"),
                "labels": str(DEMO_MODELS / "shapes_labels.txt"),
                "source": {"kind": "files", "pattern": str(frames / "*.jpg")},
                "policy": {
                    "kind": "classification",
                    "threshold": 0.6,
                    "default_state": "empty",
                    "debounce": 2,
                },
            }
        ],
    }


def run_agent(config: dict[str, Any]) -> Agent:
    agent = Agent(load_settings(None, config))
    agent.run(threading.Event(), until_done=True)
    return agent


@needs_wiring
def test_the_agent_publishes_over_mutual_tls(
    pki: Pki, mtls_broker: TlsBroker, tmp_path: Path
) -> None:
    sub = Subscriber(mtls_broker.server.port, "edge/dev1/#", client_id="tls-agent-watcher")
    try:
        tls = {
            "ca_file": str(pki.ca.cert_file),
            "cert_file": str(pki.device.cert),
            "key_file": str(pki.device.key),
        }
        run_agent(agent_config(mtls_broker.mtls, tmp_path / "state", {"tls": tls}))
        sub.wait_for(lambda s: len(s.on("/event")) >= 4)
        assert [m.json()["seq"] for m in sub.on("/event")] == [1, 2, 3, 4]
    finally:
        sub.close()


@needs_wiring
def test_the_agent_reads_its_password_file_over_tls(
    pki: Pki, password_broker: PasswordBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password_file = tmp_path / "mqtt-password"
    password_file.write_text("s3cret\n")
    password_file.chmod(0o600)
    mqtt_settings = {
        "username": "cam",
        "password_file": str(password_file),
        "tls": {"ca_file": str(pki.ca.cert_file)},
    }
    agent = run_agent(agent_config(password_broker.tls, tmp_path / "state", mqtt_settings))
    with sqlite3.connect(agent.outbox.path) as db:  # what shutdown left undelivered
        assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
    assert agent.publisher.stats.connects >= 1
    assert "s3cret" not in caplog.text


@needs_wiring
def test_the_agent_refuses_unusable_tls_files_at_start(pki: Pki, tmp_path: Path) -> None:
    tls = {"ca_file": str(pki.ca.cert_file), "cert_file": str(tmp_path / "missing.pem")}
    with pytest.raises(ConfigError, match=r"mqtt\.tls\.cert_file: cannot read"):
        run_agent(agent_config(free_port(), tmp_path / "state", {"tls": tls}))


@needs_wiring
@pytest.mark.parametrize(
    ("mqtt", "message"),
    [
        (
            {"username": "cam", "password": "x", "password_file": "/run/credentials/pw"},
            "mqtt: Value error, password and password_file are mutually exclusive",
        ),
        ({"password_file": "/run/credentials/pw"}, "mqtt: Value error, password_file needs"),
        ({"tls": {"insecure": True}}, "mqtt.tls: Value error, insecure needs ca_file"),
        ({"tls": {"key_file": "/etc/k.pem"}}, "mqtt.tls: Value error, key_file needs cert_file"),
        ({"tls": {"min_version": "1.1"}}, "mqtt.tls.min_version: Input should be '1.2' or '1.3'"),
        ({"tls": {"ca_fil": "/etc/ca.pem"}}, "mqtt.tls.ca_fil: unknown key"),
    ],
)
def test_settings_refuse_inconsistent_tls_and_passwords(
    tmp_path: Path, mqtt: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(None, agent_config(8883, tmp_path, mqtt))
    assert message in str(raised.value)


def test_the_mqtt_source_speaks_tls_too(pki: Pki, mtls_broker: TlsBroker) -> None:
    tls = MqttTls(
        ca_file=str(pki.ca.cert_file), cert_file=str(pki.device.cert), key_file=str(pki.device.key)
    )
    source = MqttSensorSource(
        "s",
        host="127.0.0.1",
        port=mtls_broker.mtls,
        topic="sensors/x",
        fields=["x"],
        window=SlidingWindow(2, 2, 1),
        tls=tls,
        client_id="sensor-over-tls",
    )
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="zigbee-over-tls")
    apply(publisher, tls)
    try:
        deadline = time.monotonic() + 10
        while not source.subscribed:
            assert time.monotonic() < deadline, "the source did not subscribe over TLS"
            time.sleep(0.05)
        publisher.connect("127.0.0.1", mtls_broker.mtls)
        publisher.loop_start()
        for value in (1.5, 2.5):
            publisher.publish("sensors/x", f'{{"x": {value}}}', qos=1).wait_for_publish(5)
        window = source.read(timeout=5)
        assert window is not None
        assert window.values.ravel().tolist() == [1.5, 2.5]
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        source.close()

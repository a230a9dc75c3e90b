"""The update fetcher against real local HTTP(S) servers: no mocks of the network."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError, FetchError, HashError, LengthError
from edge_agent.update.fetch import Fetcher, FetchOptions
from edge_agent.update.protocols import Fetched, Validators

from .servers import CA, StaticServer, closed_port, make_ca, unresponsive_port

pytestmark = pytest.mark.integration

MODEL = os.urandom(300_000)  # several 64 KiB reads, so a cut lands mid-stream
MANIFEST = b'{"spec_version": 1, "version": 7}'


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    www.mkdir()
    (www / "manifest.json").write_bytes(MANIFEST)
    (www / "model.tflite").write_bytes(MODEL)
    return www


@pytest.fixture
def server(root: Path, ca: CA) -> Iterator[StaticServer]:
    with StaticServer(root, https=ca.server_cert()) as running:
        yield running


@pytest.fixture
def fetcher(ca: CA) -> Fetcher:
    return Fetcher(FetchOptions(ca_file=str(ca.cert_file), connect_timeout=2, read_timeout=0.5))


@pytest.fixture
def part(tmp_path: Path) -> Path:
    return tmp_path / "state" / "model.part"


def get_manifest(
    fetcher: Fetcher, url: str, *, cap: int = 1_000_000, **since: str | None
) -> Fetched | None:
    """As the update manager asks for a manifest: capped, conditional when `since`."""
    return fetcher.fetch(url, max_length=cap, since=Validators(**since) if since else None)


def get_small(fetcher: Fetcher, url: str, cap: int) -> bytes:
    fetched = fetcher.fetch(url, max_length=cap)
    assert fetched is not None
    return fetched.body


def download(fetcher: Fetcher, url: str, part: Path, length: int, data: bytes = MODEL) -> None:
    """As the manager downloads a model: exactly `length` bytes hashing to `data`'s digest."""
    digest = hashlib.sha256(data).hexdigest()
    assert fetcher.fetch(url, max_length=length, sha256=digest, into=part) == Fetched(b"", part)


def meta_of(part: Path) -> Path:
    return part.with_suffix(".part.meta")


def raises_within(seconds: float, kind: type[Exception], call: Callable[[], object]) -> str:
    """The message of the `kind` that `call` raised, checking it came quickly."""
    start = time.monotonic()
    with pytest.raises(kind) as caught:
        call()
    assert time.monotonic() - start < seconds
    return str(caught.value)


# --- manifests and small files ----------------------------------------------------


def test_manifest_conditional_get_with_etag(server: StaticServer, fetcher: Fetcher) -> None:
    url = server.url("/manifest.json")
    first = get_manifest(fetcher, url)
    assert isinstance(first, Fetched)
    assert first.body == MANIFEST
    assert first.etag
    assert first.last_modified
    assert "if-none-match" not in server.last_headers("/manifest.json")
    assert server.last_headers("/manifest.json")["user-agent"].startswith("edge-agent/")

    assert get_manifest(fetcher, url, etag=first.etag) is None
    assert server.last_headers("/manifest.json")["if-none-match"] == first.etag
    assert server.last_status("/manifest.json") == 304


def test_manifest_conditional_get_with_last_modified(
    server: StaticServer, fetcher: Fetcher, root: Path
) -> None:
    url = server.url("/manifest.json")
    first = get_manifest(fetcher, url)
    assert first is not None
    assert get_manifest(fetcher, url, last_modified=first.last_modified) is None
    assert server.last_headers("/manifest.json")["if-modified-since"] == first.last_modified

    (root / "manifest.json").write_bytes(b'{"version": 8}')
    os.utime(root / "manifest.json", (time.time() + 10, time.time() + 10))
    changed = get_manifest(fetcher, url, etag=first.etag, last_modified=first.last_modified)
    assert changed is not None
    assert changed.body == b'{"version": 8}'
    assert changed.etag != first.etag


@pytest.mark.parametrize("behaviour", [None, "forever"])  # Content-Length known / unknown
def test_manifest_over_the_cap_is_a_length_error(
    server: StaticServer, fetcher: Fetcher, behaviour: str | None
) -> None:
    server.behave("/manifest.json", behaviour)
    url = server.url("/manifest.json")
    assert url in raises_within(5, LengthError, lambda: get_manifest(fetcher, url, cap=10))


def test_get_small_caps_and_detects_short_reads(server: StaticServer, fetcher: Fetcher) -> None:
    url = server.url("/manifest.json")
    assert get_small(fetcher, url, len(MANIFEST)) == MANIFEST
    with pytest.raises(LengthError):
        get_small(fetcher, url, len(MANIFEST) - 1)
    server.behave("/manifest.json", "close-early")
    assert "short read" in raises_within(5, FetchError, lambda: get_small(fetcher, url, 1000))


@pytest.mark.parametrize(
    ("path", "behaviour", "status"),
    [
        ("/missing.json", None, "HTTP 404 Not Found"),
        ("/manifest.json", "status:500", "HTTP 500 Internal Server Error"),
        ("/manifest.json", "status:403", "HTTP 403 Forbidden"),
    ],
)
def test_http_error_status_is_a_fetch_error(
    server: StaticServer, fetcher: Fetcher, path: str, behaviour: str | None, status: str
) -> None:
    server.behave(path, behaviour)
    with pytest.raises(FetchError, match=status):
        get_manifest(fetcher, server.url(path))


# --- the network failing underneath -----------------------------------------------


def test_connection_refused(fetcher: Fetcher) -> None:
    url = f"https://127.0.0.1:{closed_port()}/manifest.json"
    message = raises_within(5, FetchError, lambda: get_manifest(fetcher, url))
    assert url in message
    assert "connection refused" in message


def test_connect_timeout_covers_the_tls_handshake(ca: CA) -> None:
    """A peer that accepts TCP but never speaks TLS fails after connect_timeout,
    not read_timeout."""
    slow_reads = Fetcher(
        FetchOptions(ca_file=str(ca.cert_file), connect_timeout=0.5, read_timeout=60)
    )
    with unresponsive_port() as port:
        call = lambda: get_manifest(slow_reads, f"https://127.0.0.1:{port}/m")  # noqa: E731
        assert "connecting: timed out after 0.5 s" in raises_within(3, FetchError, call)


def test_read_timeout_when_the_server_never_answers(server: StaticServer, fetcher: Fetcher) -> None:
    server.behave("/manifest.json", "silent")
    call = lambda: get_manifest(fetcher, server.url("/manifest.json"))  # noqa: E731
    assert "timed out after 0.5 s" in raises_within(3, FetchError, call)


# --- downloads --------------------------------------------------------------------


def test_download_exact_length_is_fsynced(
    server: StaticServer, fetcher: Fetcher, part: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    part.parent.mkdir()
    download(fetcher, server.url("/model.tflite"), part, len(MODEL))
    assert part.read_bytes() == MODEL
    assert part.stat().st_ino in synced
    assert not meta_of(part).exists()  # the sidecar only lives as long as the partial


def test_stall_mid_body_fails_after_read_timeout_and_keeps_the_partial(
    server: StaticServer, fetcher: Fetcher, part: Path
) -> None:
    part.parent.mkdir()
    server.behave("/model.tflite", "stall")
    call = lambda: download(fetcher, server.url("/model.tflite"), part, len(MODEL))  # noqa: E731
    assert "timed out after 0.5 s" in raises_within(3, FetchError, call)
    assert 0 < part.stat().st_size < len(MODEL)


def test_endless_body_stops_at_length_plus_one(
    server: StaticServer, fetcher: Fetcher, part: Path
) -> None:
    part.parent.mkdir()
    server.behave("/model.tflite", "forever")
    call = lambda: download(fetcher, server.url("/model.tflite"), part, 1000)  # noqa: E731
    assert server.url("/model.tflite") in raises_within(5, LengthError, call)
    assert part.stat().st_size <= 1001


def test_announced_wrong_length_is_refused_before_writing(
    server: StaticServer, fetcher: Fetcher, part: Path
) -> None:
    part.parent.mkdir()
    for length in (len(MODEL) - 1, len(MODEL) + 1):
        with pytest.raises(LengthError, match="announces"):
            download(fetcher, server.url("/model.tflite"), part, length)
    assert not part.exists()


def interrupted(server: StaticServer, fetcher: Fetcher, part: Path) -> int:
    """Leave a half download behind, as a link that dropped would; its size."""
    part.parent.mkdir(exist_ok=True)
    server.behave("/model.tflite", "close-early", times=1)
    with pytest.raises(FetchError, match="short read"):
        download(fetcher, server.url("/model.tflite"), part, len(MODEL))
    size = part.stat().st_size
    assert 0 < size < len(MODEL)
    assert meta_of(part).exists()
    return size


def test_resume_after_the_server_closed_early(
    server: StaticServer, fetcher: Fetcher, part: Path
) -> None:
    size = interrupted(server, fetcher, part)
    etag = json.loads(meta_of(part).read_text())["etag"]
    download(fetcher, server.url("/model.tflite"), part, len(MODEL))
    headers = server.last_headers("/model.tflite")
    assert headers["range"] == f"bytes={size}-"
    assert headers["if-range"] == etag
    assert server.last_status("/model.tflite") == 206
    assert part.read_bytes() == MODEL
    assert not meta_of(part).exists()


def test_partial_of_another_url_is_not_resumed(
    server: StaticServer, fetcher: Fetcher, part: Path
) -> None:
    interrupted(server, fetcher, part)
    download(fetcher, server.url("/model.tflite?mirror=2"), part, len(MODEL))
    assert "range" not in server.last_headers("/model.tflite")
    assert part.read_bytes() == MODEL


def test_server_ignoring_range_restarts_from_zero(
    server: StaticServer, fetcher: Fetcher, part: Path
) -> None:
    interrupted(server, fetcher, part)
    server.behave("/model.tflite", "ignore-range")
    download(fetcher, server.url("/model.tflite"), part, len(MODEL))
    assert "range" in server.last_headers("/model.tflite")
    assert server.last_status("/model.tflite") == 200
    assert part.read_bytes() == MODEL


def test_file_changed_since_the_partial_restarts_from_zero(
    server: StaticServer, fetcher: Fetcher, part: Path, root: Path
) -> None:
    interrupted(server, fetcher, part)
    new_model = os.urandom(len(MODEL))
    (root / "model.tflite").write_bytes(new_model)  # same length, new ETag
    download(fetcher, server.url("/model.tflite"), part, len(MODEL), new_model)
    assert server.last_status("/model.tflite") == 200  # If-Range did not match
    assert part.read_bytes() == new_model


def test_partial_longer_than_length_is_discarded(
    server: StaticServer, fetcher: Fetcher, part: Path
) -> None:
    part.parent.mkdir()
    part.write_bytes(b"x" * (len(MODEL) + 10))
    download(fetcher, server.url("/model.tflite"), part, len(MODEL))
    assert "range" not in server.last_headers("/model.tflite")
    assert part.read_bytes() == MODEL


def test_complete_partial_needs_no_request(
    server: StaticServer, fetcher: Fetcher, part: Path
) -> None:
    part.parent.mkdir()
    part.write_bytes(MODEL)
    download(fetcher, server.url("/model.tflite"), part, len(MODEL))
    assert server.count("/model.tflite") == 0


# --- schemes, TLS and redirects ---------------------------------------------------


def test_plain_http_refused_unless_allowed(root: Path, part: Path) -> None:
    with StaticServer(root) as plain:
        url = plain.url("/manifest.json")
        with pytest.raises(FetchError, match="allow_http"):
            get_manifest(Fetcher(FetchOptions()), url)
        assert plain.count("/manifest.json") == 0
        fetched = get_manifest(Fetcher(FetchOptions(allow_http=True)), url)
        assert fetched is not None
        assert fetched.body == MANIFEST


def test_https_with_the_throwaway_ca(server: StaticServer, fetcher: Fetcher) -> None:
    for host in ("127.0.0.1", "localhost"):
        assert get_small(fetcher, server.url("/manifest.json", host=host), 1000) == MANIFEST


def test_https_with_system_cas_rejects_the_throwaway_ca(server: StaticServer) -> None:
    with pytest.raises(FetchError, match="certificate verify failed"):
        get_manifest(Fetcher(FetchOptions()), server.url("/manifest.json"))


@pytest.mark.parametrize(
    ("hosts", "expired", "reason"),
    [
        (("other.example",), False, "mismatch"),
        (("127.0.0.1", "localhost"), True, "expired"),
    ],
)
def test_bad_server_certificates(
    root: Path, ca: CA, fetcher: Fetcher, hosts: tuple[str, ...], expired: bool, reason: str
) -> None:
    with StaticServer(root, https=ca.server_cert(hosts, expired=expired)) as bad:
        with pytest.raises(FetchError, match=f"certificate verify failed: .*{reason}"):
            get_manifest(fetcher, bad.url("/manifest.json"))
        assert bad.count("/manifest.json") == 0


def test_mutual_tls(root: Path, ca: CA, fetcher: Fetcher) -> None:
    device = ca.client_cert()
    with_cert = Fetcher(
        FetchOptions(
            ca_file=str(ca.cert_file), client_cert=str(device.cert), client_key=str(device.key)
        )
    )
    with StaticServer(root, https=ca.server_cert(), client_ca=ca) as strict:
        url = strict.url("/manifest.json")
        assert get_small(with_cert, url, 1000) == MANIFEST
        with pytest.raises(FetchError, match="TLS error"):
            get_small(fetcher, url, 1000)


def test_redirects(root: Path, ca: CA, server: StaticServer, fetcher: Fetcher) -> None:
    server.behave("/moved.json", "redirect:/manifest.json")
    assert get_small(fetcher, server.url("/moved.json"), 1000) == MANIFEST

    server.behave("/loop.json", "redirect:/loop.json")
    with pytest.raises(FetchError, match="more than 5 redirects"):
        get_small(fetcher, server.url("/loop.json"), 1000)
    assert server.count("/loop.json") == 6

    with StaticServer(root) as plain:
        server.behave("/down.json", f"redirect:{plain.url('/manifest.json')}")
        lenient = Fetcher(FetchOptions(allow_http=True, ca_file=str(ca.cert_file)))
        with pytest.raises(FetchError, match="refusing a redirect from https to http"):
            get_small(lenient, server.url("/down.json"), 1000)
        assert plain.count("/manifest.json") == 0


def test_bad_tls_files_are_config_errors_naming_the_file(ca: CA, tmp_path: Path) -> None:
    device = ca.client_cert()
    other = ca.client_cert()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    missing = str(tmp_path / "missing.pem")
    cases = [
        (FetchOptions(ca_file=missing), missing),
        (FetchOptions(ca_file=str(junk)), str(junk)),
        (FetchOptions(client_cert=missing, client_key=str(device.key)), missing),
        (FetchOptions(client_cert=str(junk), client_key=str(device.key)), str(junk)),
        (FetchOptions(client_cert=str(device.cert), client_key=str(junk)), str(junk)),
        (FetchOptions(client_cert=str(device.cert), client_key=str(other.key)), str(other.key)),
        (FetchOptions(client_key=str(device.key)), str(device.key)),
    ]
    for options, named in cases:
        with pytest.raises(ConfigError) as caught:
            Fetcher(options)
        assert named in str(caught.value)


# --- time bounds: deadline, minimum rate, cancel ------------------------------------


def bounded(
    ca: CA, *, deadline: float = 3600.0, min_rate: float = 1024.0, rate_window: float = 60.0
) -> Fetcher:
    """A fetcher with a generous read timeout: only these limits may end a drip."""
    options = FetchOptions(
        ca_file=str(ca.cert_file),
        connect_timeout=2.0,
        read_timeout=20.0,
        deadline=deadline,
        min_rate=min_rate,
        rate_window=rate_window,
    )
    return Fetcher(options)


def test_a_dripping_body_ends_at_the_deadline_and_keeps_the_partial(
    server: StaticServer, ca: CA, part: Path
) -> None:
    """Each byte comes well within read_timeout: only the deadline can end this."""
    part.parent.mkdir()
    server.behave("/model.tflite", "drip")
    fetcher = bounded(ca, deadline=2.5, min_rate=0)
    call = lambda: download(fetcher, server.url("/model.tflite"), part, len(MODEL))  # noqa: E731
    message = raises_within(10, FetchError, call)
    assert "gave up after the 2.5 s deadline" in message
    assert server.url("/model.tflite") in message
    assert 0 < part.stat().st_size < len(MODEL)  # resumed at the next check
    assert meta_of(part).exists()


def test_a_body_under_the_minimum_rate_ends_after_one_window(
    server: StaticServer, ca: CA, part: Path
) -> None:
    part.parent.mkdir()
    server.behave("/model.tflite", "drip")
    fetcher = bounded(ca, min_rate=100, rate_window=2)
    call = lambda: download(fetcher, server.url("/model.tflite"), part, len(MODEL))  # noqa: E731
    assert "too slow" in raises_within(10, FetchError, call)


def test_headers_that_drip_end_at_the_deadline(server: StaticServer, ca: CA) -> None:
    """Not a body byte ever arrives: http.client waits in its header parser."""
    server.behave("/manifest.json", "drip-headers")
    fetcher = bounded(ca, deadline=2, min_rate=0)
    call = lambda: get_manifest(fetcher, server.url("/manifest.json"))  # noqa: E731
    assert "gave up after the 2 s deadline" in raises_within(10, FetchError, call)


def test_a_small_file_that_drips_is_bounded_too(server: StaticServer, ca: CA) -> None:
    server.behave("/manifest.json", "drip")
    fetcher = bounded(ca, min_rate=100, rate_window=2)
    call = lambda: get_small(fetcher, server.url("/manifest.json"), 1000)  # noqa: E731
    assert "too slow" in raises_within(10, FetchError, call)


def test_cancel_ends_a_download_in_flight(server: StaticServer, ca: CA, part: Path) -> None:
    part.parent.mkdir()
    server.behave("/model.tflite", "drip")
    cancel = threading.Event()
    fetcher = bounded(ca)  # the defaults: an hour's deadline, a minute's rate window

    def cancel_once_bytes_flow() -> None:
        deadline = time.monotonic() + 15
        while server.dripped("/model.tflite") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        cancel.set()

    helper = threading.Thread(target=cancel_once_bytes_flow, daemon=True)
    helper.start()
    digest = hashlib.sha256(MODEL).hexdigest()
    url = server.url("/model.tflite")
    with pytest.raises(FetchError, match="cancelled"):
        fetcher.fetch(url, max_length=len(MODEL), sha256=digest, into=part, cancel=cancel)
    assert server.dripped("/model.tflite") >= 2
    assert 0 < part.stat().st_size < len(MODEL)
    helper.join()
    with pytest.raises(FetchError, match="cancelled"):  # and no new request while it is set
        fetcher.fetch(url, max_length=len(MODEL), sha256=digest, into=part, cancel=cancel)
    assert server.count("/model.tflite") == 1


# --- hashes while streaming --------------------------------------------------------


def test_a_download_with_another_digest_is_deleted(
    server: StaticServer, fetcher: Fetcher, part: Path
) -> None:
    part.parent.mkdir()
    with pytest.raises(HashError, match="sha256"):
        download(fetcher, server.url("/model.tflite"), part, len(MODEL), data=b"other")
    assert not part.exists()
    assert not meta_of(part).exists()


def test_a_resumed_download_hashes_the_partial_too(
    server: StaticServer, fetcher: Fetcher, part: Path
) -> None:
    """A partial whose bytes went bad on disk is caught when the resumed file is hashed."""
    size = interrupted(server, fetcher, part)
    with part.open("r+b") as handle:
        handle.write(b"\xff" * min(size, 16))
    with pytest.raises(HashError):
        download(fetcher, server.url("/model.tflite"), part, len(MODEL))
    assert server.last_status("/model.tflite") == 206
    assert not part.exists()


def test_a_complete_partial_of_another_digest_is_fetched_again(
    server: StaticServer, fetcher: Fetcher, part: Path
) -> None:
    part.parent.mkdir()
    part.write_bytes(os.urandom(len(MODEL)))
    download(fetcher, server.url("/model.tflite"), part, len(MODEL))
    assert server.count("/model.tflite") == 1
    assert part.read_bytes() == MODEL


def test_a_model_is_never_read_whole_into_memory(
    server: StaticServer, fetcher: Fetcher, part: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every read of the socket and of the partial file asks for a bounded chunk."""
    asked: list[int] = []
    real_read1 = http.client.HTTPResponse.read1

    def spy(self: http.client.HTTPResponse, amount: int = -1) -> bytes:
        asked.append(amount)
        return real_read1(self, amount)

    monkeypatch.setattr(http.client.HTTPResponse, "read1", spy)
    monkeypatch.setattr(http.client.HTTPResponse, "read", None)  # any whole-body read fails
    size = interrupted(server, fetcher, part)
    download(fetcher, server.url("/model.tflite"), part, len(MODEL))
    assert part.read_bytes() == MODEL
    assert asked
    assert 0 < max(asked) <= 64 * 1024
    assert size > 0

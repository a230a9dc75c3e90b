"""The sample uploader against a real local HTTP server that accepts PUT: one that
fails half the requests, one that is down for a while, an uploader restarted in the
middle. Nothing is lost, nothing is uploaded twice, nothing is deleted before its 2xx."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge_agent.capture.store import Sample, SampleStore, StoreOptions, new_stem
from edge_agent.capture.upload import Uploader, UploadOptions

pytestmark = pytest.mark.integration

Decide = Callable[[int, str], int | None]  # (request number, path) -> status, None: hang up


class PutServer:
    """Stores PUT bodies by path. `decide` picks each answer; `local` is the sample
    directory, to check that the device still had the file when it arrived."""

    def __init__(self, local: Path, decide: Decide, port: int = 0) -> None:
        self.stored: dict[str, bytes] = {}
        self.ok: Counter[str] = Counter()  # 2xx answers by path
        self.requests = 0
        self.still_local: list[bool] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with server._lock:
                    server.requests += 1
                    n = server.requests
                    name = self.path.rsplit("/", 1)[-1]
                    server.still_local.append((local / name).exists())
                    server.headers.append(dict(self.headers))
                status = decide(n, self.path)
                if status is None:  # hang up without an answer
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if 200 <= status < 300:
                    with server._lock:
                        server.stored[self.path] = body
                        server.ok[self.path] += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(store: SampleStore, count: int) -> dict[str, bytes]:
    """`count` samples; what the server should end with, by path."""
    expected = {}
    now = time.time()
    for i in range(count):
        stem = new_stem(now + i, "cam")
        data = f"jpeg-{i}".encode() * 50
        sidecar = {"pipeline": "cam", "i": i}
        store.save(Sample(stem, data, ".jpg", sidecar))
        expected[f"/bucket/dev1/cam/{stem}.jpg"] = data
        expected[f"/bucket/dev1/cam/{stem}.json"] = json.dumps(
            sidecar, separators=(",", ":")
        ).encode()
    return expected


def uploader(store: SampleStore, port: int, **kw: Any) -> Uploader:
    options = UploadOptions(
        f"http://127.0.0.1:{port}/bucket/{{device}}/{{pipeline}}/{{name}}",
        headers={"X-Token": "t"},
        timeout=5.0,
        retry_min=0.02,
        retry_max=0.1,
        interval=0.05,
        **kw,
    )
    return Uploader(store, options, device="dev1")


def run_until(up: Uploader, done: Callable[[], bool], timeout: float = 20.0) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=up.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not done() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
    assert done(), "the uploader did not finish in time"


@pytest.fixture
def store(tmp_path: Path) -> SampleStore:
    return SampleStore(StoreOptions(tmp_path / "samples"))


@pytest.fixture
def servers() -> Iterator[list[PutServer]]:
    started: list[PutServer] = []
    yield started
    for s in started:
        s.close()


def test_every_sample_arrives_once_when_half_the_requests_fail(
    store: SampleStore, servers: list[PutServer]
) -> None:
    expected = fill(store, 6)
    server = PutServer(store.directory, lambda n, _p: 500 if n % 2 else 201)
    servers.append(server)
    up = uploader(store, server.port)
    run_until(up, lambda: up.stats.uploaded == 6)
    assert server.stored == expected
    assert set(server.ok.values()) == {1}  # nothing twice
    assert all(server.still_local)  # nothing deleted before its 2xx
    assert list(store.directory.iterdir()) == []
    assert len(store) == 0
    assert up.stats.failures == server.requests - 12
    assert up.stats.failures >= 12
    assert {h["Content-Type"] for h in server.headers} == {"image/jpeg", "application/json"}
    assert all(h["X-Token"] == "t" for h in server.headers)


def test_a_server_down_for_a_while(store: SampleStore, servers: list[PutServer]) -> None:
    expected = fill(store, 3)
    port = free_port()
    up = uploader(store, port)
    stop = threading.Event()
    thread = threading.Thread(target=up.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while up.stats.failures < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert up.stats.failures >= 3  # refused connections, retried
        assert len(store) == 3  # nothing deleted while nothing was accepted
        servers.append(PutServer(store.directory, lambda _n, _p: 200, port=port))
        deadline = time.monotonic() + 20
        while up.stats.uploaded < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
    assert servers[0].stored == expected
    assert set(servers[0].ok.values()) == {1}
    assert list(store.directory.iterdir()) == []


def test_a_restart_in_the_middle_resumes_without_sending_twice(
    store: SampleStore, servers: list[PutServer], tmp_path: Path
) -> None:
    """Request 4 (the second sample's sidecar) is cut off and the uploader stopped
    there; a new uploader on the same directory sends only what is missing."""
    expected = fill(store, 4)
    stop_first = threading.Event()

    def decide(n: int, _path: str) -> int | None:
        if n == 4:
            stop_first.set()  # the first uploader is stopped while this one fails
            return None
        return 200

    server = PutServer(store.directory, decide)
    servers.append(server)
    first = uploader(store, server.port)
    thread = threading.Thread(target=first.run, args=(stop_first,))
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert (first.stats.uploaded, first.stats.failures) == (1, 1)
    # the second sample's input is up and gone; its sidecar is still here
    entries = SampleStore(StoreOptions(store.directory)).entries()
    assert len(entries) == 3
    assert entries[0].input is None

    second = uploader(SampleStore(StoreOptions(store.directory)), server.port)
    run_until(second, lambda: second.stats.uploaded == 3)
    assert server.stored == expected
    assert set(server.ok.values()) == {1}  # no key accepted twice
    inputs = [p for p in server.ok if p.endswith(".jpg")]
    assert server.requests == 8 + 1  # 8 files, plus the one cut off
    assert len(inputs) == 4
    assert all(server.still_local)
    assert list(store.directory.iterdir()) == []


def test_names_in_the_template_are_quoted(store: SampleStore) -> None:
    up = Uploader(
        store, UploadOptions("https://h/{device}/{pipeline}/{name}?sig=abc"), device="a b"
    )
    assert up.url_for("cam", "x y.jpg") == "https://h/a%20b/cam/x%20y.jpg?sig=abc"

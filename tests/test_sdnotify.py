"""sd_notify against real AF_UNIX datagram sockets standing in for systemd's."""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.app.sdnotify import Heartbeats, Notifier, Watchdog


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound notify socket, as systemd's, and the NOTIFY_SOCKET value for it."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, str(path)
    sock.close()


def received(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def nothing_pending(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(2.0)
    return False


def test_each_message_is_one_exact_datagram(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.enabled

    assert notifier.ready()
    assert received(sock) == b"READY=1"
    assert notifier.ready("2 pipelines running")
    assert received(sock) == b"READY=1\nSTATUS=2 pipelines running"
    assert notifier.status("outbox: 3 events waiting")
    assert received(sock) == b"STATUS=outbox: 3 events waiting"
    assert notifier.watchdog()
    assert received(sock) == b"WATCHDOG=1"
    assert notifier.stopping()
    assert received(sock) == b"STOPPING=1"
    assert notifier.send(STATUS="custom", ERRNO=5)
    assert received(sock) == b"STATUS=custom\nERRNO=5"
    assert nothing_pending(sock)
    notifier.close()


def test_reloading_carries_the_monotonic_time(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    notifier = Notifier(address, monotonic_ns=lambda: 123_456_789_999)
    assert notifier.reloading()
    assert received(sock) == b"RELOADING=1\nMONOTONIC_USEC=123456789"


def test_reloading_uses_clock_monotonic_by_default(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    before = time_usec()
    Notifier(address).reloading()
    lines = received(sock).decode().split("\n")
    assert lines[0] == "RELOADING=1"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= time_usec()


def time_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_a_newline_in_a_value_cannot_inject_a_field(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    Notifier(address).status("camera down\nREADY=1")
    assert received(sock) == b"STATUS=camera down READY=1"


def test_abstract_socket() -> None:
    name = f"edge-agent-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert received(sock) == b"READY=1"


def test_sent_from_a_thread_with_our_pid(systemd: tuple[socket.socket, str]) -> None:
    """NotifyAccess=main accepts only the main pid: a worker thread's datagram
    carries the process id, not a thread id."""
    sock, address = systemd
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    notifier = Notifier(address)
    thread = threading.Thread(target=notifier.watchdog)
    thread.start()
    thread.join()
    data, ancillary, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    assert data == b"WATCHDOG=1"
    (level, kind, creds), *_ = ancillary
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
    pid, _uid, _gid = struct.unpack("3i", creds[:12])
    assert pid == os.getpid()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert not notifier.reloading()
    assert notifier.watchdog_interval() is None
    notifier.close()


@pytest.mark.parametrize("value", ["", "run/notify", "vsock:2:1234"])
def test_an_unusable_notify_socket_disables_notifying(value: str) -> None:
    assert not Notifier.from_environ({"NOTIFY_SOCKET": value}).enabled


def test_a_vanished_socket_is_logged_once_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier(str(path))
        assert notifier.ready()
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="edge_agent.app.sdnotify"):
        assert not notifier.watchdog()
        assert not notifier.watchdog()
        assert not notifier.stopping()
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()


def test_a_socket_nobody_listens_on_is_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    # the file is left behind, but nothing is bound to it: ECONNREFUSED
    assert not Notifier(str(path)).ready()


def test_a_receiver_that_does_not_read_cannot_block_us(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier(str(path), send_timeout=0.05)
        sent = 0
        while notifier.watchdog():  # until its queue is full: then timed out, not raised
            sent += 1
            assert sent < 100_000
        assert sent > 0
        assert received(sock) == b"WATCHDOG=1"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000"}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "main"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-1"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": ""}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "/run/systemd/notify", **environ}, pid=4242)
    assert notifier.watchdog_interval() == expected


def test_watchdog_pid_defaults_to_our_own() -> None:
    ours = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_environ(ours).watchdog_interval() == 1.0
    theirs = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_environ(theirs).watchdog_interval() is None


def test_heartbeats_find_the_wedged_worker() -> None:
    clock = FakeClock()
    beats = Heartbeats(clock)
    beats.register("camera")
    beats.register("pump")
    assert beats.all_alive(clock.now, max_silence=30)

    for _ in range(10):  # the camera keeps going, the pump is stuck in a read
        clock.now += 5
        beats.beat("camera")
    assert not beats.all_alive(clock.now, max_silence=30)
    assert beats.silent(clock.now, max_silence=30) == {"pump": 50.0}
    assert beats.all_alive(clock.now, max_silence=60)

    beats.beat("pump")  # it came back
    assert beats.all_alive(clock.now, max_silence=30)


def test_heartbeats_forget_unregistered_workers() -> None:
    clock = FakeClock()
    beats = Heartbeats(clock)
    assert beats.all_alive(clock.now, max_silence=1)  # nobody to wait for
    beats.register("replay")
    clock.now += 100
    assert not beats.all_alive(clock.now, max_silence=1)
    beats.unregister("replay")  # its source was exhausted: done, not wedged
    assert beats.all_alive(clock.now, max_silence=1)
    beats.beat("replay")  # a late beat does not bring it back
    clock.now += 100
    assert beats.all_alive(clock.now, max_silence=1)
    beats.unregister("never-registered")


def test_watchdog_pings_only_while_every_worker_is_alive(
    systemd: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    sock, address = systemd
    clock = FakeClock()
    beats = Heartbeats(clock)
    beats.register("camera")
    beats.register("pump")
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"})
    watchdog = Watchdog(notifier, beats, clock=clock)
    assert (watchdog.period, watchdog.max_silence) == (15.0, 30.0)

    pings = []
    with caplog.at_level(logging.ERROR, logger="edge_agent.app.sdnotify"):
        for step in range(1, 451):  # 90 s in the agent's 0.2 s steps
            clock.now = 1000 + step * 0.2
            beats.beat("camera")
            if step <= 100:  # the pump wedges after 20 s
                beats.beat("pump")
            if watchdog.tick():
                pings.append(round(clock.now - 1000, 1))
    assert pings == [0.2, 15.2, 30.2, 45.2]  # due at 60.2, but the pump is 40 s silent
    assert [received(sock) for _ in pings] == [b"WATCHDOG=1"] * len(pings)
    assert nothing_pending(sock)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # rate-limited, not one per tick
    assert "pump (40 s)" in errors[0]

    beats.beat("pump")  # recovered before systemd acted: pings resume
    assert watchdog.tick()
    assert received(sock) == b"WATCHDOG=1"


def test_watchdog_without_watchdog_usec_never_pings(systemd: tuple[socket.socket, str]) -> None:
    sock, address = systemd
    clock = FakeClock()
    watchdog = Watchdog(Notifier(address), Heartbeats(clock), clock=clock)
    for _ in range(10):
        clock.now += 100
        assert not watchdog.tick()
    assert nothing_pending(sock)

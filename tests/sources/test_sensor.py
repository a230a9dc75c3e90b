"""Sensor sources against real parts: files, FIFOs, a fake IIO sysfs tree, mosquitto."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.errors import InputError
from edge_agent.sources.base import SourceExhausted
from edge_agent.sources.sensor.iio import IioSource
from edge_agent.sources.sensor.lines import LinesSource
from edge_agent.sources.sensor.mqtt import MqttSensorSource
from edge_agent.sources.sensor.parsing import parse_line
from edge_agent.sources.sensor.window import SlidingWindow

from ..broker import Mosquitto, free_port

MEAN = [1.0, 2.0]
STD = [2.0, 4.0]


def normalised(*rows: tuple[float, float]) -> np.ndarray:
    """What a window of these raw samples must hold, computed apart from the code under test."""
    values: np.ndarray = (np.array(rows, dtype=np.float64) - np.array(MEAN)) / np.array(STD)
    return values


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def take(source: LinesSource | IioSource | MqttSensorSource, count: int) -> list[np.ndarray]:
    """Exactly `count` windows, failing if they do not come within a few seconds."""
    windows: list[np.ndarray] = []
    deadline = time.monotonic() + 5.0
    while len(windows) < count:
        assert time.monotonic() < deadline, f"got {len(windows)} of {count} windows"
        window = source.read(0.1)
        if window is not None:
            assert window.values.dtype == np.float32
            windows.append(window.values)
    return windows


def take_all(source: LinesSource) -> list[np.ndarray]:
    """Every window until the source is exhausted."""
    windows: list[np.ndarray] = []
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            window = source.read(0.1)
        except SourceExhausted:
            return windows
        if window is not None:
            windows.append(window.values)
    raise AssertionError("source was not exhausted in time")


def assert_windows(got: list[np.ndarray], *want: np.ndarray) -> None:
    assert len(got) == len(want)
    for values, expected in zip(got, want, strict=True):
        np.testing.assert_allclose(values, expected, rtol=1e-6)


def write_fifo(path: Path, *sessions: list[str], pause: float = 0.05) -> threading.Thread:
    """A writer thread: each session opens the FIFO, writes its pieces, closes it."""

    def write() -> None:
        for pieces in sessions:
            with path.open("w") as fifo:
                for piece in pieces:
                    fifo.write(piece)
                    fifo.flush()
                    time.sleep(pause)
            time.sleep(pause)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "samples.fifo"
    os.mkfifo(path)
    return path


def lines_source(
    path: Path,
    size: int = 2,
    hop: int = 1,
    *,
    fields: list[str] | None = None,
    follow: bool = False,
    rate: float = 0.0,
    queue_size: int = 64,
) -> LinesSource:
    """A two-channel source normalised by MEAN and STD."""
    return LinesSource(
        "probe",
        path=str(path),
        window=SlidingWindow(size, hop, 2, mean=MEAN, std=STD),
        channels=2,
        fields=fields,
        follow=follow,
        rate=rate,
        queue_size=queue_size,
    )


# --- LinesSource ----------------------------------------------------------------------------


@pytest.mark.integration
def test_bad_lines_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "samples.csv"
    lines = [
        "0,0",
        "1,2",
        "abc,1",  # not a number
        "3,nan",  # NaN
        "5",  # short
        "7,8,9",  # long
        '{"a": 1}',  # JSON object, no fields to pick
        "",  # blank: not a sample, not an error
        "4,6",
        "6,10",  # no newline after the last line
    ]
    path.write_text("\n".join(lines))
    with caplog.at_level(logging.WARNING), closing(lines_source(path)) as source:
        windows = take_all(source)
        assert source.stats.errors == 5
        assert source.stats.read == 3
        assert source.stats.dropped == 0
        assert source.stats.bytes_in == path.stat().st_size
    assert_windows(
        windows,
        normalised((0, 0), (1, 2)),
        normalised((1, 2), (4, 6)),
        normalised((4, 6), (6, 10)),
    )
    assert "probe: bad line: not a number in column 1: 'abc'" in caplog.text


@pytest.mark.integration
def test_json_lines_with_fields(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text('{"t": 3, "h": {"rel": 6}}\n{"t": 5}\n[5, 10]\n')
    with closing(lines_source(path, fields=["t", "h.rel"])) as source:
        windows = take_all(source)
        assert source.stats.errors == 1  # the one without "h.rel"
    assert_windows(windows, normalised((3, 6), (5, 10)))


@pytest.mark.integration
def test_replaying_a_file_waits_for_the_pipeline_instead_of_dropping(tmp_path: Path) -> None:
    path = tmp_path / "samples.csv"
    path.write_text("".join(f"{i},{-i}\n" for i in range(100)))
    with closing(lines_source(path, size=1, queue_size=4)) as source:
        time.sleep(0.2)  # a stalled pipeline
        windows = take_all(source)
        assert source.stats.dropped == 0
    assert_windows(windows, *(normalised((i, -i)) for i in range(100)))


def replay_lines(count: int) -> list[str]:
    """A recording with every kind of bad line now and then, and blank lines."""
    rng = np.random.default_rng(3)
    bad = ["abc,1", "3,nan", "5", "7,8,9", '{"a": 1}', "1,,2", "1e40,1", "1 2,3", "\x00,1"]
    lines = []
    for index in range(count):
        if index % 97 == 13:
            lines.append(bad[index % len(bad)])
        elif index % 131 == 7:
            lines.append(" " if index % 2 else "")
        else:
            x, y = rng.normal(0.0, 3.0, size=2)
            lines.append(f"{x:.4f},{y:.{index % 7}f}" + ("\r" if index % 5 == 0 else ""))
    return lines


def windows_line_by_line(lines: list[str], size: int, hop: int) -> tuple[list[np.ndarray], int]:
    """The windows and the error count of parsing and pushing one line at a time."""
    window = SlidingWindow(size, hop, 2, mean=MEAN, std=STD)
    windows, errors = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            sample = parse_line(line, 2)
        except InputError:
            errors += 1
            continue
        if (values := window.push(sample)) is not None:
            windows.append(values)
    return windows, errors


@pytest.mark.integration
def test_bulk_replay_gives_the_windows_of_line_by_line(tmp_path: Path) -> None:
    lines = replay_lines(12_000)  # ~170 KB: several reads, lines cut between them
    path = tmp_path / "samples.csv"
    path.write_text("\n".join(lines))  # the last line without a newline
    want, bad = windows_line_by_line(lines, size=16, hop=5)
    with closing(lines_source(path, size=16, hop=5, queue_size=4)) as source:
        got = take_all(source)
        assert source.stats.errors == bad > 0
        assert source.stats.dropped == 0
        assert source.stats.read == len(want)
        assert source.stats.bytes_in == path.stat().st_size
    assert len(got) == len(want)
    for values, expected in zip(got, want, strict=True):
        np.testing.assert_array_equal(values, expected)


@pytest.mark.integration
def test_close_is_prompt_while_a_replay_waits_for_the_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "samples.csv"
    path.write_text("".join(f"{i},{-i}\n" for i in range(50_000)))
    # Paced (far faster than it matters): a reader thread fills the queue and waits.
    source = lines_source(path, size=1, queue_size=2, rate=1e9)  # nobody reads
    wait_until(lambda: len(source._queue) == 2)
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 1.0
    assert not any(thread.name == "probe" for thread in threading.enumerate())
    assert_windows(take(source, 2), normalised((0, 0)), normalised((1, -1)))
    with pytest.raises(SourceExhausted):
        source.read(0.1)


def test_a_full_speed_replay_is_read_on_the_callers_thread(tmp_path: Path) -> None:
    """No reader thread: read() parses the next chunk when the last one is used up,
    so a big file is never more than one chunk ahead in memory."""
    path = tmp_path / "samples.csv"
    rows = [(i % 7, -(i % 5)) for i in range(19_999)]  # + the last line: 20 000 samples
    path.write_text("".join(f"{a},{b}\n" for a, b in rows) + "bad,line\n1,2")
    threads = set(threading.enumerate())
    source = lines_source(path, size=2, hop=2, queue_size=4)
    assert set(threading.enumerate()) == threads
    first = take(source, 1)
    assert 1 < len(source._queue) < 2_000  # one chunk's windows, not the file's
    windows = first + take_all(source)
    assert len(windows) == 10_000
    assert_windows(windows[:2], normalised(*rows[:2]), normalised(*rows[2:4]))
    assert_windows(windows[-1:], normalised(rows[-1], (1, 2)))
    assert (source.stats.read, source.stats.errors, source.stats.dropped) == (10_000, 1, 0)
    assert source.stats.bytes_in == path.stat().st_size
    source.close()
    with pytest.raises(SourceExhausted):
        source.read(0.1)


@pytest.mark.integration
def test_rate_paces_a_replay(tmp_path: Path) -> None:
    path = tmp_path / "samples.csv"
    path.write_text("".join(f"{i},{i}\n" for i in range(11)))
    started = time.monotonic()
    with closing(lines_source(path, size=1, rate=50.0)) as source:
        windows = take_all(source)
    elapsed = time.monotonic() - started
    assert len(windows) == 11
    assert 0.18 < elapsed < 1.0  # 10 intervals of 20 ms


@pytest.mark.integration
def test_fifo_lines_split_across_writes(fifo: Path) -> None:
    with closing(lines_source(fifo, hop=2)) as source:
        writer = write_fifo(fifo, ["1,2\n3,", "4\n5,6", "\n7,8"])
        windows = take_all(source)
        writer.join(5)
        assert source.stats.errors == 0
    assert_windows(windows, normalised((1, 2), (3, 4)), normalised((5, 6), (7, 8)))


@pytest.mark.integration
def test_fifo_followed_across_writers(fifo: Path) -> None:
    with closing(lines_source(fifo, follow=True)) as source:
        writer = write_fifo(fifo, ["1,2\n", "3,4\n"], ["5,6\n"], ["7,8\n"])
        windows = take(source, 3)
        writer.join(5)
        assert source.read(0.3) is None  # waiting for the next writer, not exhausted
    assert_windows(
        windows,
        normalised((1, 2), (3, 4)),
        normalised((3, 4), (5, 6)),
        normalised((5, 6), (7, 8)),
    )


@pytest.mark.integration
def test_live_input_drops_oldest_windows_when_the_pipeline_stalls(fifo: Path) -> None:
    with closing(lines_source(fifo, size=1, queue_size=3)) as source:
        writer = write_fifo(fifo, ["".join(f"{i},{i}\n" for i in range(10))])
        wait_until(lambda: source.stats.dropped == 7)
        windows = take_all(source)
        writer.join(5)
        assert source.stats.read == 3
    assert_windows(windows, normalised((7, 7)), normalised((8, 8)), normalised((9, 9)))


@pytest.mark.integration
def test_follow_a_file_through_appends_truncation_and_rotation(tmp_path: Path) -> None:
    path = tmp_path / "samples.csv"
    path.write_text("1,2\n")
    with closing(lines_source(path, size=1, follow=True)) as source:
        assert_windows(take(source, 1), normalised((1, 2)))
        with path.open("a") as log:
            log.write("3,4\n5,")
            log.flush()
            time.sleep(0.3)  # the reader sits on a partial line meanwhile
            log.write("6\n")
        assert_windows(take(source, 2), normalised((3, 4)), normalised((5, 6)))

        path.write_text("7,8\n")  # truncated, then rewritten shorter
        assert_windows(take(source, 1), normalised((7, 8)))

        path.rename(tmp_path / "samples.csv.1")
        path.write_text("9,10\n")
        assert_windows(take(source, 1), normalised((9, 10)))
        assert source.read(0.3) is None
        assert source.stats.errors == 0


@pytest.mark.integration
def test_follow_waits_for_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "later.csv"
    with closing(lines_source(path, size=1, follow=True)) as source:
        time.sleep(0.2)
        path.write_text("3,6\n")
        assert_windows(take(source, 1), normalised((3, 6)))
        assert source.stats.errors >= 1  # the failed open(s)


@pytest.mark.integration
def test_missing_file_without_follow_ends_the_source(tmp_path: Path) -> None:
    with closing(lines_source(tmp_path / "nope.csv")) as source:
        assert take_all(source) == []
        assert source.stats.errors == 1


@pytest.mark.integration
def test_close_is_prompt_and_idempotent(fifo: Path) -> None:
    source = lines_source(fifo, follow=True)  # no writer ever comes
    assert source.read(0.1) is None
    started = time.monotonic()
    source.close()
    source.close()
    assert time.monotonic() - started < 1.0
    assert not any(thread.name == "probe" for thread in threading.enumerate())
    with pytest.raises(SourceExhausted):
        source.read(0.1)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"channels": 3}, "channels"),
        ({"fields": ["a"]}, "fields"),
        ({"rate": -1.0}, "rate"),
        ({"queue_size": 0}, "queue_size"),
    ],
)
def test_lines_source_rejects_bad_options(
    tmp_path: Path, options: dict[str, object], name: str
) -> None:
    arguments: dict[str, object] = {"channels": 2, **options}
    window = SlidingWindow(2, 1, 2)
    with pytest.raises(ValueError, match=f"^{name}:"):
        LinesSource("bad", path=str(tmp_path / "x"), window=window, **arguments)  # type: ignore[arg-type]


# --- IioSource ------------------------------------------------------------------------------


def put(path: Path, text: str) -> None:
    """Replace a file at once, as sysfs attributes change: never half-written."""
    spare = path.with_name(path.name + ".new")
    spare.write_text(text)
    os.replace(spare, path)


@pytest.fixture
def iio_device(tmp_path: Path) -> Path:
    device = tmp_path / "iio:device0"
    device.mkdir()
    put(device / "in_accel_x_raw", "100\n")
    put(device / "in_accel_x_scale", "0.5\n")
    put(device / "in_accel_x_offset", "10\n")
    put(device / "in_accel_y_raw", "-8\n")
    put(device / "in_accel_scale", "0.250000\n")  # shared by x and y; x has its own
    put(device / "in_temp_raw", "300\n")  # no scale, no offset
    return device


@pytest.mark.integration
def test_iio_channels_are_scaled_and_normalised(
    iio_device: Path, caplog: pytest.LogCaptureFixture
) -> None:
    imu = IioSource(
        "imu",
        device=iio_device.name,
        channels=["in_accel_x", "in_accel_y", "in_temp"],
        window=SlidingWindow(2, 2, 3, mean=[50.0, 0.0, 0.0], std=[5.0, 1.0, 100.0]),
        rate=200.0,
        root=str(iio_device.parent),
    )
    with caplog.at_level(logging.WARNING), closing(imu) as source:
        # x = (100 + 10) * 0.5 = 55, y = -8 * 0.25 = -2, temp = 300
        first = [[1.0, -2.0, 3.0], [1.0, -2.0, 3.0]]
        assert_windows(take(source, 2), np.array(first), np.array(first))
        assert source.stats.errors == 0

        put(iio_device / "in_accel_y_raw", "garbage\n")
        wait_until(lambda: source.stats.errors >= 2)
        put(iio_device / "in_accel_y_raw", "4\n")
        (iio_device / "in_temp_raw").unlink()
        wait_until(lambda: source.stats.errors >= 4)
        put(iio_device / "in_temp_raw", "100\n")

        later = [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
        wait_until(lambda: _next_values(source) == later)
        assert source.stats.bytes_in > 0
    assert "imu: bad channel:" in caplog.text
    assert "in_accel_y_raw holds b'garbage" in caplog.text


def _next_values(source: IioSource) -> list[list[float]] | None:
    window = source.read(0.1)
    if window is None:
        return None
    values: list[list[float]] = window.values.tolist()
    return values


def test_iio_source_rejects_bad_options(tmp_path: Path) -> None:
    window = SlidingWindow(2, 1, 2)
    with pytest.raises(ValueError, match=r"^channels:"):
        IioSource("bad", device="d", channels=["in_a"], window=window, rate=10, root=str(tmp_path))
    with pytest.raises(ValueError, match=r"^rate:"):
        IioSource("bad", device="d", channels=["a", "b"], window=window, rate=0, root="/x")


# --- MqttSensorSource -----------------------------------------------------------------------


def publish(port: int, topic: str, *payloads: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def climate(broker: Mosquitto) -> Iterator[MqttSensorSource]:
    window = SlidingWindow(2, 1, 2, mean=[20.0, 50.0], std=[2.0, 10.0])
    source = MqttSensorSource(
        "climate",
        host="127.0.0.1",
        port=broker.port,
        topic="zigbee2mqtt/room",
        fields=["temperature", "humidity"],
        window=window,
    )
    try:
        wait_until(lambda: source.subscribed)
        yield source
    finally:
        source.close()


@pytest.mark.integration
def test_mqtt_messages_become_windows(
    broker: Mosquitto, climate: MqttSensorSource, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        publish(
            broker.port,
            "zigbee2mqtt/room",
            b'{"temperature": 21.5, "humidity": 40, "linkquality": 120}',
            b'{"temperature": 22}',  # no humidity
            b'{"temperature": 23, "humidity": 45}',
            b"\xff\xfe not utf-8",
            b'{"temperature": 19, "humidity": 60}',
        )
        windows = take(climate, 2)
    assert_windows(
        windows, np.array([[0.75, -1.0], [1.5, -0.5]]), np.array([[1.5, -0.5], [-0.5, 1]])
    )
    assert climate.stats.errors == 2
    assert climate.stats.read == 2
    assert "climate: bad message: on zigbee2mqtt/room: missing field 'humidity'" in caplog.text


@pytest.mark.integration
def test_mqtt_source_reconnects_and_resubscribes(
    broker: Mosquitto, climate: MqttSensorSource
) -> None:
    publish(broker.port, "zigbee2mqtt/room", b'{"temperature": 20, "humidity": 50}')
    wait_until(lambda: climate.stats.bytes_in > 0)
    assert climate.read(0.1) is None  # one sample: no window yet
    broker.kill()
    wait_until(lambda: not climate.subscribed)
    broker.start()
    wait_until(lambda: climate.subscribed, timeout=10.0)
    publish(broker.port, "zigbee2mqtt/room", b'{"temperature": 24, "humidity": 70}')
    assert_windows(take(climate, 1), np.array([[0.0, 0.0], [2.0, 2.0]]))
    assert climate.stats.errors >= 1  # the lost connection


@pytest.mark.integration
def test_mqtt_close_is_prompt_without_a_broker() -> None:
    source = MqttSensorSource(
        "nobody",
        host="127.0.0.1",
        port=free_port(),
        topic="t",
        fields=["v"],
        window=SlidingWindow(1, 1, 1),
    )
    wait_until(lambda: source.stats.errors >= 1)  # the refused connection
    assert not source.subscribed
    started = time.monotonic()
    source.close()
    source.close()
    assert time.monotonic() - started < 1.5

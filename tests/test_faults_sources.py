"""Faults at the sources (issue #14): inputs that were lost, hung or misread.

Each scenario runs against real parts: files written in halves into a watched
directory, an HTTP server that drips its body, real models from the fixtures,
CSV files that start with a UTF-8 byte order mark.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge_agent.app.agent import Agent
from edge_agent.config.settings import load_settings
from edge_agent.errors import ConfigError
from edge_agent.model.preprocess import ImagePreprocessor
from edge_agent.model.runtime import Model
from edge_agent.sources.base import Frame, Source, SourceExhausted, Window
from edge_agent.sources.camera.directory import DirectorySource
from edge_agent.sources.camera.http import HttpSnapshotSource
from edge_agent.sources.sensor.csvblock import parse_csv_block
from edge_agent.sources.sensor.lines import LinesSource
from edge_agent.sources.sensor.parsing import parse_line
from edge_agent.sources.sensor.window import SlidingWindow

from .conftest import DEMO_MODELS, FIXTURE_IMAGES

PARROT = (FIXTURE_IMAGES / "parrot.jpg").read_bytes()
CIRCLE = (DEMO_MODELS / "samples/camera/frame_015.jpg").read_bytes()
SHAPES = DEMO_MODELS / "shapes_int8.tflite"
VIBRATION = DEMO_MODELS / "vibration_int8.tflite"
BOM = b"\xef\xbb\xbf"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def next_frame(source: Source, timeout: float) -> Frame:
    """The next frame, waited for with read()'s own timeout up to `timeout` s in all."""
    for _ in range(int(timeout / 0.25)):
        item = source.read(0.25)
        if item is not None:
            assert isinstance(item, Frame)
            return item
    raise AssertionError(f"{source.name}: no frame within {timeout} s")


# --- 1. dir + delete_after: a file still being written ------------------------------------


@pytest.mark.integration
def test_a_jpeg_written_in_two_halves_is_read_whole_then_deleted(tmp_path: Path) -> None:
    """Before: read half-written after two polls, handed over truncated, deleted."""
    path = tmp_path / "shot.jpg"
    half_written, stop = threading.Event(), threading.Event()

    def write_in_halves() -> None:
        with open(path, "wb") as file:
            file.write(PARROT[: len(PARROT) // 2])
            file.flush()
            half_written.set()
            stop.wait(2.0)  # the scenario: a slow writer (FTP upload, SD card)
            file.write(PARROT[len(PARROT) // 2 :])

    source = DirectorySource("cam", path=str(tmp_path), delete_after=True, poll_interval=0.1)
    writer = threading.Thread(target=write_in_halves)
    with closing(source):
        writer.start()
        try:
            frame = next_frame(source, timeout=15)
        finally:
            stop.set()
            writer.join()
        assert len(frame.data) == len(PARROT)
        assert frame.data == PARROT
        wait_until(lambda: not path.exists(), 5, "the file read whole is deleted")
    assert source.stats.errors == 0


@pytest.mark.integration
def test_a_file_that_is_not_an_image_is_left_logged_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: deleted with the good ones (delete_after), so its bytes were gone."""
    bad = tmp_path / "bad.jpg"
    source = DirectorySource("cam", path=str(tmp_path), delete_after=True, poll_interval=0.05)
    with caplog.at_level(logging.WARNING), closing(source):
        bad.write_bytes(b"<html>camera login</html>")
        wait_until(lambda: source.stats.errors >= 1, 10, "the bad file is counted")
        (tmp_path / "good.jpg").write_bytes(CIRCLE)
        assert next_frame(source, timeout=10).data == CIRCLE  # polls went on after it
        assert bad.read_bytes() == b"<html>camera login</html>"
        assert source.stats.errors == 1
        assert len([r for r in caplog.records if "bad.jpg" in r.getMessage()]) == 1


@pytest.mark.integration
def test_a_jpeg_that_stays_truncated_is_given_up_on_but_never_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer that died half-way: the file is left for a human, logged once."""
    stuck = tmp_path / "stuck.jpg"
    stuck.write_bytes(b"")
    source = DirectorySource(
        "cam", path=str(tmp_path), delete_after=True, poll_interval=0.05, incomplete_timeout=0.5
    )
    with caplog.at_level(logging.WARNING), closing(source):
        stuck.write_bytes(PARROT[:5000])
        wait_until(lambda: source.stats.errors >= 1, 10, "the truncated file is given up on")
        (tmp_path / "next.jpg").write_bytes(CIRCLE)
        assert next_frame(source, timeout=10).data == CIRCLE
        assert stuck.read_bytes() == PARROT[:5000]
        assert source.stats.errors == 1
        lines = [r.getMessage() for r in caplog.records if "stuck.jpg" in r.getMessage()]
        assert len(lines) == 1
        assert "incomplete" in lines[0]


# --- 2. an http snapshot that drips ---------------------------------------------------------


@pytest.fixture
def dripping_camera() -> Iterator[str]:
    """A snapshot URL whose first response drips its body a byte at a time, 20 per
    second; later responses are whole."""
    requests, stop = [0], threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests[0] += 1
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(CIRCLE)))
            self.end_headers()
            try:
                if requests[0] > 1:
                    self.wfile.write(CIRCLE)
                    return
                for byte in CIRCLE:
                    if stop.wait(0.05):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            except OSError:
                return  # the client gave up: what it should do

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/snapshot.jpg"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_a_dripping_snapshot_is_cut_off_at_its_deadline_logged_and_counted(
    dripping_camera: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: each byte came within the read timeout, so the snapshot never ended:
    no frame, no warning, no count, for as long as the server kept dripping."""
    source = HttpSnapshotSource("cam", url=dripping_camera, fps=2, timeout=1.0)
    with caplog.at_level(logging.WARNING), closing(source):
        frame = next_frame(source, timeout=20)
        assert frame.data == CIRCLE  # the next, whole, snapshot
        assert source.stats.errors == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("cam: ") and "within 1.0 s" in m for m in warnings), warnings


# --- 3. 16-bit images -----------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


GREYS = (np.arange(64 * 48).reshape(48, 64) * 7 % 256).astype(np.uint8)
WIDE = GREYS.astype(np.uint16) * 257  # the same picture in 16 bits: 0..65535
WIDE_BIG_ENDIAN = Image.frombytes("I;16B", (64, 48), WIDE.astype(">u2").tobytes())


@pytest.mark.runtime
@pytest.mark.parametrize(
    ("mode", "data"),
    [
        ("I;16", encoded(Image.fromarray(WIDE), "PNG")),
        ("I;16B", encoded(WIDE_BIG_ENDIAN, "TIFF")),
        ("I", encoded(Image.fromarray(WIDE.astype(np.int32)), "TIFF")),
    ],
)
def test_a_16_bit_image_is_scaled_to_8_bits_not_clipped_to_white(
    mode: str, data: bytes, runtime_name: str
) -> None:
    """Before: convert() clipped every value above 255, so the frame was all white."""
    assert Image.open(io.BytesIO(data)).mode == mode
    spec = Model.load(SHAPES, runtime=runtime_name).inputs[0]  # type: ignore[arg-type]
    prepare = ImagePreprocessor(spec).prepare
    expected = prepare(encoded(Image.fromarray(GREYS), "PNG"))
    assert np.array_equal(prepare(data), expected)
    assert len(np.unique(expected)) > 100  # a real picture, not a flat one


# --- 4. a model that does not fit the source ------------------------------------------------


def agent_config(tmp_path: Path, model: Path, source: dict[str, Any]) -> dict[str, Any]:
    return {
        "device_id": "dev1",
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"host": "127.0.0.1", "port": 9},  # never connected: the build fails first
        "pipelines": [
            {
                "name": "yard",
                "model": str(model),
                "source": source,
                "policy": {"kind": "threshold", "index": 1},
            }
        ],
    }


@pytest.mark.runtime
def test_a_sensor_model_on_a_camera_pipeline_is_refused_at_build(tmp_path: Path) -> None:
    """Before: [1, 64, 3] passed for a 64x3 grey image and decided on every frame."""
    source = {"kind": "files", "pattern": str(DEMO_MODELS / "samples/camera/*.jpg")}
    with pytest.raises(ConfigError) as caught:
        Agent(load_settings(None, agent_config(tmp_path, VIBRATION, source)))
    message = str(caught.value)
    assert "pipelines.yard" in message
    assert str(VIBRATION) in message
    assert "[1, 64, 3]" in message


@pytest.mark.runtime
def test_an_image_model_on_a_sensor_pipeline_with_another_window_is_refused(
    tmp_path: Path,
) -> None:
    """Before: accepted; every window then failed at inference, counted one by one."""
    window = {"size": 64, "hop": 32, "channels": 3}
    source = {"kind": "lines", "path": str(DEMO_MODELS / "samples/vibration.csv")}
    config = agent_config(tmp_path, SHAPES, source | {"window": window})
    with pytest.raises(ConfigError) as caught:
        Agent(load_settings(None, config))
    message = str(caught.value)
    assert "pipelines.yard" in message
    assert str(SHAPES) in message
    assert "[1, 96, 96, 3]" in message
    assert "64x3" in message


# --- 5. a UTF-8 byte order mark -------------------------------------------------------------


def test_the_line_and_block_parsers_skip_a_byte_order_mark() -> None:
    """Before: `\\ufeff1.0` is not a number: the first line was a bad sample."""
    assert parse_line("\ufeff1.0,2.0,3.0", 3).tolist() == [1.0, 2.0, 3.0]
    samples, errors = parse_csv_block(BOM + b"1.0,2.0,3.0\n4,5,6\n", 3)
    assert errors == []
    assert samples.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def read_all(source: LinesSource) -> list[Window]:
    windows: list[Window] = []
    for _ in range(400):
        try:
            item = source.read(0.05)
        except SourceExhausted:
            return windows
        if item is not None:
            assert isinstance(item, Window)
            windows.append(item)
    raise AssertionError("the source did not end")


@pytest.mark.integration
@pytest.mark.parametrize("rate", [0.0, 1000.0], ids=["block", "per-line"])
def test_a_csv_file_with_a_byte_order_mark_loses_no_sample(tmp_path: Path, rate: float) -> None:
    path = tmp_path / "export.csv"
    rows = [[float(i), float(2 * i), float(-i)] for i in range(8)]
    path.write_bytes(BOM + b"".join(b"%g,%g,%g\r\n" % tuple(row) for row in rows))
    source = LinesSource(
        "vib", path=str(path), window=SlidingWindow(4, 4, 3), channels=3, rate=rate
    )
    with closing(source):
        windows = read_all(source)
    assert source.stats.errors == 0
    assert [w.values.tolist() for w in windows] == [rows[:4], rows[4:]]

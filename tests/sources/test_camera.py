"""Camera sources against real parts: files, an HTTP server, child processes."""

from __future__ import annotations

import base64
import io
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from PIL import Image

from edge_agent.errors import SourceError
from edge_agent.sources.base import Frame, Source, SourceExhausted
from edge_agent.sources.camera.command import CommandSource
from edge_agent.sources.camera.directory import DirectorySource
from edge_agent.sources.camera.files import FilesSource
from edge_agent.sources.camera.http import HttpSnapshotSource
from edge_agent.sources.camera.mjpeg import MjpegSource
from edge_agent.sources.camera.multipart import JpegSplitter, MultipartReader, boundary_from


def jpeg(seed: int, size: int = 16) -> bytes:
    """A tiny JPEG of noise: its entropy-coded data is full of stuffed FF bytes."""
    pixels = random.Random(seed).randbytes(size * size * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (size, size), pixels).save(out, "JPEG", quality=95)
    return out.getvalue()


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def with_thumbnail(image: bytes, thumbnail: bytes) -> bytes:
    """An image whose APP1 holds a whole JPEG and whose comment holds an FFD9."""
    extra = segment(0xE1, b"Exif\0\0" + thumbnail) + segment(0xFE, b"x\xff\xd9y")
    return image[:2] + extra + image[2:]


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def read_frame(source: Source, timeout: float = 5.0) -> Frame:
    frame = source.read(timeout)
    assert isinstance(frame, Frame)
    return frame


S = TypeVar("S", bound=Source)


class Closer:
    """Registers sources to close after the test, whatever happens in it."""

    def __init__(self) -> None:
        self.opened: list[Source] = []

    def __call__(self, source: S) -> S:
        self.opened.append(source)
        return source


@pytest.fixture
def track() -> Iterator[Closer]:
    closer = Closer()
    yield closer
    for source in closer.opened:
        source.close()


# --- JpegSplitter ---------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 1000, 1 << 20])
def test_splitter_cuts_concatenated_jpegs_however_chunked(chunk: int) -> None:
    images = [jpeg(1), with_thumbnail(jpeg(2), jpeg(3, size=8)), jpeg(4, size=40)]
    stream = b"".join(images)
    splitter = JpegSplitter()
    frames = []
    for start in range(0, len(stream), chunk):
        frames += splitter.feed(stream[start : start + chunk])
    assert frames == images
    assert splitter.pop_errors() == []


def test_splitter_resyncs_after_junk_and_a_truncated_image() -> None:
    good, cut = jpeg(5), jpeg(6)
    splitter = JpegSplitter()
    frames = splitter.feed(b"garbage\xff" + cut[:-20] + good + b"\r\n")
    assert frames == [good]
    assert splitter.pop_errors() == ["JPEG cut short"]


def test_splitter_drops_oversize_images_and_reports_streams_without_jpegs() -> None:
    small, big = jpeg(7, size=8), jpeg(8, size=64)
    splitter = JpegSplitter(max_frame_bytes=len(small) + 10)
    assert splitter.feed(big[:100]) == []
    assert splitter.feed(big[100:] + small) == [small]
    assert splitter.pop_errors() == [f"JPEG over {len(small) + 10} bytes"]
    assert splitter.feed(b"\x00" * 2 * len(big)) == []
    assert splitter.pop_errors() == [f"no JPEG start marker: skipped {2 * len(big)} bytes"]
    assert splitter.pop_errors() == []


# --- multipart ------------------------------------------------------------------


def multipart(
    frames: list[bytes], *, boundary: bytes, content_length: bool, close: bool = False
) -> bytes:
    out = b""
    for frame in frames:
        length = b"Content-Length: %d\r\n" % len(frame) if content_length else b""
        out += b"--" + boundary + b"\r\nContent-Type: image/jpeg\r\n" + length + b"\r\n"
        out += frame + b"\r\n"
    return out + (b"--" + boundary + b"--\r\n" if close else b"")


@pytest.mark.parametrize("content_length", [True, False])
@pytest.mark.parametrize("declared", ["frame", "--frame"])
def test_multipart_reader_reads_every_part(content_length: bool, declared: str) -> None:
    frames = [jpeg(i) for i in range(3)]
    body = b"preamble\r\n" + multipart(
        frames, boundary=b"frame", content_length=content_length, close=True
    )
    reader = MultipartReader(io.BytesIO(body), declared.encode(), max_part_bytes=10_000)
    assert [reader.next_part() for _ in range(4)] == [*frames, None]
    assert reader.pop_bytes_read() == len(body)


def test_multipart_reader_stops_at_the_closing_delimiter() -> None:
    body = multipart([b"one"], boundary=b"b", content_length=False, close=True) + b"--b\r\n"
    reader = MultipartReader(io.BytesIO(body), b"b", max_part_bytes=100)
    assert reader.next_part() == b"one"
    assert reader.next_part() is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"--b\r\nContent-Length: 500\r\n\r\nxx", "over the 100 byte limit"),
        (b"--b\r\nContent-Length: 50\r\n\r\nxx", "ended inside a part"),
        (b"--b\r\n\r\n" + b"x" * 200, "over the 100 byte limit"),
        (b"--b\r\nContent-Length: lots\r\n\r\n", "bad part Content-Length"),
        (b"x" * 300, "no boundary"),
    ],
)
def test_multipart_reader_rejects_framing_it_cannot_follow(body: bytes, message: str) -> None:
    reader = MultipartReader(io.BytesIO(body), b"b", max_part_bytes=100)
    with pytest.raises(SourceError, match=message):
        reader.next_part()


def test_boundary_from_content_type() -> None:
    assert boundary_from('multipart/x-mixed-replace; boundary="ab cd"') == b"ab cd"
    with pytest.raises(SourceError, match="not a multipart stream"):
        boundary_from("image/jpeg")


# --- FilesSource ----------------------------------------------------------------


def write_images(directory: Path, count: int) -> list[bytes]:
    images = [jpeg(seed) for seed in range(count)]
    for index, data in enumerate(images):
        (directory / f"img{index}.jpg").write_bytes(data)
    return images


def test_files_source_reads_in_name_order_then_is_exhausted(tmp_path: Path) -> None:
    images = write_images(tmp_path, 3)
    source = FilesSource("files", pattern=str(tmp_path / "*.jpg"))
    frames = [read_frame(source, 0) for _ in images]
    assert [frame.data for frame in frames] == images
    assert frames[0].origin == str(tmp_path / "img0.jpg")
    with pytest.raises(SourceExhausted):
        source.read(0)
    assert (source.stats.read, source.stats.bytes_in) == (3, sum(map(len, images)))


def test_files_source_skips_and_counts_unreadable_files_for_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = write_images(tmp_path, 2)
    (tmp_path / "img0a.jpg").write_bytes(b"<html>not an image</html>")
    (tmp_path / "img0b.jpg").write_bytes(b"")
    (tmp_path / "img0c.jpg").symlink_to(tmp_path / "missing.jpg")
    source = FilesSource("files", pattern=str(tmp_path / "*.jpg"), loop=True)
    got = [read_frame(source, 0).data for _ in range(4)]
    assert got == images + images
    assert (source.stats.read, source.stats.errors) == (4, 3)
    assert "img0a.jpg: not an image" in caplog.text


def test_files_source_paces_to_fps_without_dropping(tmp_path: Path) -> None:
    images = write_images(tmp_path, 2)
    source = FilesSource("files", pattern=str(tmp_path / "*.jpg"), fps=10)
    started = time.monotonic()
    assert read_frame(source, 0).data == images[0]
    assert source.read(0.02) is None  # not due yet
    assert read_frame(source, 1).data == images[1]
    assert time.monotonic() - started >= 0.09
    assert source.stats.dropped == 0


def test_files_source_empty_glob(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SourceExhausted):
        FilesSource("files", pattern=str(tmp_path / "*.jpg")).read(1)
    assert "no readable files match" in caplog.text
    looping = FilesSource("files", pattern=str(tmp_path / "*.jpg"), loop=True)
    assert looping.read(0.01) is None
    images = write_images(tmp_path, 1)  # a loop re-globs, so late files count
    assert read_frame(looping, 0).data == images[0]
    looping.close()
    with pytest.raises(SourceExhausted):
        looping.read(0)


# --- DirectorySource ------------------------------------------------------------


def drop(path: Path, data: bytes, mtime: float | None = None) -> None:
    """Write the way cameras do: a temporary name, then an atomic rename."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    if mtime is not None:
        os.utime(temp, (mtime, mtime))
    temp.rename(path)


@pytest.mark.integration
def test_directory_source_reads_only_new_files(tmp_path: Path, track: Closer) -> None:
    (tmp_path / "old.jpg").write_bytes(jpeg(0))
    source = track(DirectorySource("dir", path=str(tmp_path), pattern="*", poll_interval=0.02))
    for name in (".hidden.jpg", "x.jpg.tmp", "x.jpg~", "y.part"):
        (tmp_path / name).write_bytes(jpeg(1))
    new = jpeg(2)
    drop(tmp_path / "new.jpg", new)
    frame = read_frame(source)
    assert (frame.data, frame.origin) == (new, str(tmp_path / "new.jpg"))
    assert source.read(0.2) is None
    assert (source.stats.read, source.stats.errors, source.stats.bytes_in) == (1, 0, len(new))
    assert (tmp_path / "new.jpg").exists()


@pytest.mark.integration
def test_directory_source_counts_and_leaves_bad_files_and_deletes_read_ones(
    tmp_path: Path, track: Closer, caplog: pytest.LogCaptureFixture
) -> None:
    source = track(
        DirectorySource("dir", path=str(tmp_path), delete_after=True, poll_interval=0.02)
    )
    (tmp_path / "bad.jpg").write_bytes(b"GIF? no, text")
    wait_for(lambda: source.stats.errors == 1)
    assert "bad.jpg: not an image" in caplog.text
    good = jpeg(3)
    drop(tmp_path / "GOOD.JPG", good)
    assert read_frame(source).data == good
    wait_for(lambda: not (tmp_path / "GOOD.JPG").exists())
    assert sorted(os.listdir(tmp_path)) == ["bad.jpg"]  # never delete what could not be read


@pytest.mark.integration
def test_directory_source_retries_a_missing_directory(
    tmp_path: Path, track: Closer, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "later"
    source = track(DirectorySource("dir", path=str(path), poll_interval=0.02))
    wait_for(lambda: source.stats.errors >= 1)
    assert f"cannot list {path}: FileNotFoundError" in caplog.text
    path.mkdir()
    image = jpeg(5)
    drop(path / "a.jpg", image)
    assert read_frame(source).data == image


@pytest.mark.integration
def test_directory_source_waits_for_a_growing_file(tmp_path: Path, track: Closer) -> None:
    data = jpeg(4, size=64)
    source = track(DirectorySource("dir", path=str(tmp_path), poll_interval=0.15))
    with open(tmp_path / "slow.jpg", "wb") as file:
        for start in range(0, len(data), len(data) // 10):
            file.write(data[start : start + len(data) // 10])
            file.flush()
            time.sleep(0.04)
    assert read_frame(source).data == data
    assert (source.stats.read, source.stats.errors) == (1, 0)


@pytest.mark.integration
def test_directory_source_latest_wins(tmp_path: Path, track: Closer) -> None:
    source = track(DirectorySource("dir", path=str(tmp_path), poll_interval=0.02))
    now = time.time()
    images = [jpeg(seed) for seed in range(3)]
    for index, name in enumerate(["c.jpg", "a.jpg", "b.jpg"]):  # mtime order, not name order
        drop(tmp_path / name, images[index], mtime=now + index)
    wait_for(lambda: source.stats.dropped == 2)
    assert read_frame(source).data == images[2]
    assert source.stats.read == 1


# --- an HTTP camera -------------------------------------------------------------


Route = Callable[[BaseHTTPRequestHandler, int], None]  # handler, how many hits before


class Camera:
    """A ThreadingHTTPServer whose paths each tests sets to a route function."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        lock = threading.Lock()
        self.release = threading.Event()  # hanging routes wait for this
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    hits = camera.hits.get(self.path, 0)
                    camera.hits[self.path] = hits + 1
                route = camera.routes.get(self.path)
                try:
                    if route is None:
                        self.send_error(404)
                    else:
                        route(self, hits)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the source hung up, as it may

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def camera() -> Iterator[Camera]:
    server = Camera()
    yield server
    server.stop()


def send_image(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def snapshots(images: list[bytes]) -> Route:
    """Serves the images in turn, then 503s."""

    def route(handler: BaseHTTPRequestHandler, hits: int) -> None:
        if hits < len(images):
            send_image(handler, images[hits])
        else:
            handler.send_error(503)

    return route


def stream(
    frames: list[bytes], *, content_length: bool = True, close: bool = False, interval: float = 0
) -> Route:
    """An mjpg-streamer style stream of the frames, on the first connection only."""

    def route(handler: BaseHTTPRequestHandler, hits: int) -> None:
        if hits:
            handler.send_error(503)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace;boundary=frame")
        handler.end_headers()
        for frame in frames:
            handler.wfile.write(
                multipart([frame], boundary=b"frame", content_length=content_length)
            )
            time.sleep(interval)
        if close:
            handler.wfile.write(b"--frame--\r\n")

    return route


@pytest.mark.integration
def test_snapshot_source_polls_at_fps(camera: Camera, track: Closer) -> None:
    images = [jpeg(seed) for seed in range(3)]
    camera.routes["/snap.jpg"] = snapshots(images)
    source = track(HttpSnapshotSource("snap", url=camera.url("/snap.jpg"), fps=10))
    frames = [read_frame(source) for _ in images]
    assert [frame.data for frame in frames] == images
    assert frames[0].origin == camera.url("/snap.jpg")
    assert frames[2].captured - frames[0].captured >= 0.18
    assert source.stats.bytes_in == sum(map(len, images))


@pytest.mark.integration
def test_snapshot_source_slow_consumer_gets_the_newest(
    camera: Camera, track: Closer, caplog: pytest.LogCaptureFixture
) -> None:
    images = [jpeg(seed) for seed in range(5)]
    camera.routes["/snap.jpg"] = snapshots(images)
    source = track(HttpSnapshotSource("snap", url=camera.url("/snap.jpg"), fps=0))
    wait_for(lambda: source.stats.errors >= 1)  # all served, then a 503
    assert read_frame(source, 0).data == images[-1]
    assert (source.stats.read, source.stats.dropped) == (1, 4)
    assert "HTTP 503" in caplog.text
    source.close()
    with pytest.raises(SourceExhausted):
        source.read(1)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("path", "kwargs", "reason"),
    [
        ("/missing", {}, "HTTP 404"),
        ("/big", {"max_bytes": 100}, "over max_bytes (100)"),
        ("/page", {}, "not an image"),
        ("/private", {}, "HTTP 401"),
        ("/private", {"username": "u", "password": "wrong"}, "HTTP 401"),
    ],
)
def test_snapshot_source_counts_failures(
    camera: Camera,
    track: Closer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    kwargs: dict[str, Any],
    reason: str,
) -> None:
    camera.routes["/big"] = lambda handler, _: send_image(handler, jpeg(0, size=64))
    camera.routes["/page"] = lambda handler, _: send_image(handler, b"<html>log in</html>")
    camera.routes["/private"] = basic_auth("u", "p", jpeg(1))
    source = track(HttpSnapshotSource("snap", url=camera.url(path), fps=50, **kwargs))
    wait_for(lambda: source.stats.errors >= 1)
    assert source.read(0) is None
    assert reason in caplog.text


def basic_auth(user: str, password: str, image: bytes) -> Route:
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def route(handler: BaseHTTPRequestHandler, hits: int) -> None:
        if handler.headers.get("Authorization") == expected:
            send_image(handler, image)
        else:
            handler.send_error(401)

    return route


@pytest.mark.integration
def test_snapshot_source_basic_auth(camera: Camera, track: Closer) -> None:
    image = jpeg(2)
    camera.routes["/private"] = basic_auth("u", "p w", image)
    url = camera.url("/private")
    source = track(HttpSnapshotSource("snap", url=url, username="u", password="p w"))
    assert read_frame(source).data == image
    in_url = url.replace("http://", "http://u:p%20w@")
    source = track(HttpSnapshotSource("snap", url=in_url))
    frame = read_frame(source)
    assert (frame.data, frame.origin) == (image, url)  # no password in logs


@pytest.mark.integration
def test_snapshot_source_times_out_on_a_hung_camera_and_closes_promptly(
    camera: Camera, track: Closer, caplog: pytest.LogCaptureFixture
) -> None:

    def hang(handler: BaseHTTPRequestHandler, hits: int) -> None:
        camera.release.wait(10)

    camera.routes["/hang"] = camera.routes["/hang2"] = hang
    source = track(HttpSnapshotSource("snap", url=camera.url("/hang"), timeout=0.2))
    wait_for(lambda: source.stats.errors >= 1)
    assert "snap: no whole response within 0.2 s" in caplog.text
    slow = track(HttpSnapshotSource("snap", url=camera.url("/hang2"), timeout=30))
    wait_for(lambda: camera.hits.get("/hang2", 0) >= 1)
    started = time.monotonic()
    slow.close()
    assert time.monotonic() - started < 0.5
    assert slow.stats.errors == 0  # an interrupted request is not a failure


@pytest.mark.integration
def test_snapshot_source_connection_refused_backs_off(
    track: Closer, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    source = track(HttpSnapshotSource("snap", url=f"http://127.0.0.1:{port}/", fps=0))
    deadline = started + 10
    while source.stats.errors < 3:
        assert time.monotonic() < deadline, source.stats
        time.sleep(0.02)
    # Backed off, not hammered: the retries waited at least 0.25 s, then 0.5 s (the
    # lower halves of the first two steps). A slow machine only makes this longer.
    assert time.monotonic() - started >= 0.75
    logged = [r for r in caplog.records if "ConnectionRefusedError" in r.getMessage()]
    assert len(logged) == 1  # rate-limited


# --- MjpegSource ----------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(("content_length", "close"), [(True, False), (False, True)])
def test_mjpeg_source_latest_wins_then_reconnects(
    camera: Camera,
    track: Closer,
    caplog: pytest.LogCaptureFixture,
    content_length: bool,
    close: bool,
) -> None:
    frames = [jpeg(seed) for seed in range(6)]
    camera.routes["/video"] = stream(frames, content_length=content_length, close=close)
    source = track(MjpegSource("mjpeg", url=camera.url("/video")))
    wait_for(lambda: source.stats.errors >= 1)  # the stream ended
    assert read_frame(source, 0).data == frames[-1]
    assert (source.stats.read, source.stats.dropped) == (1, 5)
    assert "stream ended" in caplog.text
    wait_for(lambda: camera.hits["/video"] >= 2)  # reconnected, got a 503
    assert source.stats.bytes_in > sum(map(len, frames))


@pytest.mark.integration
def test_mjpeg_source_fast_consumer_sees_every_frame_in_order(
    camera: Camera, track: Closer
) -> None:
    frames = [jpeg(seed) for seed in range(8)]
    camera.routes["/video"] = stream(frames, interval=0.05)
    source = track(MjpegSource("mjpeg", url=camera.url("/video")))
    got = [read_frame(source).data for _ in frames]
    assert got == frames
    assert source.stats.dropped == 0


@pytest.mark.integration
def test_mjpeg_source_fps_caps_hand_overs(camera: Camera, track: Closer) -> None:
    frames = [jpeg(seed) for seed in range(20)]
    camera.routes["/video"] = stream(frames, interval=0.02)
    started = time.monotonic()
    source = track(MjpegSource("mjpeg", url=camera.url("/video"), fps=5))
    got: list[bytes] = []
    while source.stats.errors == 0:
        if frame := source.read(0.05):
            got.append(frame.data)
    if frame := source.read(0):  # the last one may still wait in the slot
        got.append(frame.data)
    elapsed = time.monotonic() - started
    assert 2 <= len(got) <= 2 + elapsed * 5
    assert got == [frame for frame in frames if frame in got]  # in order, all served
    assert source.stats.read + source.stats.dropped == len(frames)


@pytest.mark.integration
def test_mjpeg_source_rejects_a_non_multipart_url(
    camera: Camera, track: Closer, caplog: pytest.LogCaptureFixture
) -> None:
    camera.routes["/snap.jpg"] = lambda handler, _: send_image(handler, jpeg(0))
    source = track(MjpegSource("mjpeg", url=camera.url("/snap.jpg")))
    wait_for(lambda: source.stats.errors >= 1)
    assert "not a multipart stream: Content-Type 'image/jpeg'" in caplog.text
    assert source.stats.read == 0


# --- CommandSource --------------------------------------------------------------


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / f"{name}.jpg" for name in "abc"]
    for seed, path in enumerate(paths):
        path.write_bytes(with_thumbnail(jpeg(seed), jpeg(seed + 10, size=8)))
    return paths


@pytest.mark.integration
def test_command_source_splits_stdout_and_restarts(
    tmp_path: Path,
    images: list[Path],
    track: Closer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    marker = tmp_path / "ran"
    script = f'[ -e {marker} ] && {{ echo "camera busy" >&2; exit 3; }}; touch {marker}; cat "$@"'
    command = ["sh", "-c", script, "sh", *map(str, images)]
    source = track(CommandSource("cmd", command=command))
    wait_for(lambda: source.stats.errors >= 2)  # the first run ended, the restart failed
    assert read_frame(source, 0).data == images[-1].read_bytes()
    stats = source.stats
    assert (stats.read, stats.dropped) == (1, 2)
    assert stats.bytes_in == sum(path.stat().st_size for path in images)
    assert "sh exited with 0" in caplog.text
    assert "sh exited with 3: last stderr line 'camera busy'" in caplog.text


@pytest.mark.integration
def test_command_source_that_cannot_start(track: Closer, caplog: pytest.LogCaptureFixture) -> None:
    source = track(CommandSource("cmd", command=["/nonexistent/rpicam-vid", "-o", "-"]))
    wait_for(lambda: source.stats.errors >= 1)
    assert "cannot start /nonexistent/rpicam-vid: FileNotFoundError" in caplog.text


@pytest.mark.integration
def test_command_source_counts_garbage_on_stdout(
    track: Closer, caplog: pytest.LogCaptureFixture
) -> None:
    command = ["sh", "-c", "head -c 200000 /dev/zero; sleep 5"]
    source = track(CommandSource("cmd", command=command, max_frame_bytes=1000))
    wait_for(lambda: source.stats.errors >= 1)
    assert "no JPEG start marker" in caplog.text
    assert source.stats.bytes_in >= 1000


@pytest.mark.integration
def test_command_source_streams_and_closes_promptly(images: list[Path], track: Closer) -> None:
    script = 'while :; do cat "$@"; sleep 0.01; done'
    source = track(CommandSource("cmd", command=["sh", "-c", script, "sh", *map(str, images)]))
    wanted = {path.read_bytes() for path in images}
    assert {read_frame(source).data for _ in range(6)} <= wanted
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 0.5
    assert source.stats.errors == 0


@pytest.mark.integration
def test_command_source_kills_a_command_that_ignores_sigterm(tmp_path: Path, track: Closer) -> None:
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}; trap '' TERM; while :; do sleep 0.05; done"
    source = track(CommandSource("cmd", command=["sh", "-c", script]))
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    pid = int(pid_file.read_text())
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 1.6
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

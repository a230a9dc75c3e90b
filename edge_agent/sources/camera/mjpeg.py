"""A multipart/x-mixed-replace stream of JPEGs: mjpg-streamer, ustreamer, ESP32-CAM,
most IP cameras' /video."""

from __future__ import annotations

from edge_agent.errors import InputError, SourceError
from edge_agent.sources.camera.common import check_image
from edge_agent.sources.camera.http import HttpGet
from edge_agent.sources.camera.live import LiveSource
from edge_agent.sources.camera.multipart import MultipartReader, boundary_from


class MjpegSource(LiveSource):
    """A multipart/x-mixed-replace stream (mjpg-streamer, ustreamer, ESP32-CAM,
    most IP cameras' /video). Read as fast as the camera sends, so the frame handed
    over is the newest; fps only caps how many are handed over."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        timeout: float = 10.0,
        fps: float = 0,
        max_frame_bytes: int = 10_000_000,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._http = HttpGet(url, timeout=timeout, username=username, password=password)
        super().__init__(name, origin=self._http.origin, fps=fps)
        self._max_frame_bytes = max_frame_bytes
        self._thread.start()

    def _session(self) -> None:
        with self._http.get() as response:
            boundary = boundary_from(response.getheader("Content-Type", ""))
            reader = MultipartReader(response, boundary, max_part_bytes=self._max_frame_bytes)
            try:
                self._pump(reader)
            finally:
                self.stats.add(bytes_in=reader.pop_bytes_read())

    def _pump(self, reader: MultipartReader) -> None:
        while (part := reader.next_part()) is not None:
            self.stats.add(bytes_in=reader.pop_bytes_read())
            try:
                check_image(part)
            except InputError as exc:
                self._reject("a part", str(exc))
            else:
                self._offer(part)
        raise SourceError("stream ended")

    def _interrupt(self) -> None:
        self._http.interrupt()

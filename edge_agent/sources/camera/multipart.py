"""The two ways cameras stream JPEGs: multipart over HTTP, concatenated on a pipe.

Pure parsers with no I/O of their own, so they are unit-tested on bytes.
"""

from __future__ import annotations

import email.message
from typing import Literal, Protocol

from edge_agent.errors import SourceError

_LINE_LIMIT = 65536  # a delimiter or header line is short; JPEG "lines" are cut here
_MAX_HEADER_LINES = 64

_SOI = b"\xff\xd8"
_MARK_SOI, _MARK_EOI, _MARK_SOS = 0xD8, 0xD9, 0xDA
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length field


class Readable(Protocol):
    """What MultipartReader needs: an http.client response or an io.BytesIO."""

    def read(self, size: int = ..., /) -> bytes: ...

    def readline(self, size: int = ..., /) -> bytes: ...


def boundary_from(content_type: str) -> bytes:
    """The delimiter declared in a Content-Type header; SourceError if not multipart,
    because a URL that serves a single image or an HTML page is a configuration slip."""
    header = email.message.Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_maintype() != "multipart" or not isinstance(boundary, str):
        raise SourceError(f"not a multipart stream: Content-Type {content_type!r}")
    if not boundary.strip("-"):
        raise SourceError(f"unusable multipart boundary: {boundary!r}")
    return boundary.encode("latin-1")


class MultipartReader:
    """Reads the parts of a multipart/x-mixed-replace body one at a time.

    Lenient because cameras disagree on details: the declared boundary may already
    start with "--" (then some send it with two more dashes, some without), parts
    may or may not carry Content-Length (without it the body runs to the next
    delimiter line), and anything between a part and the next delimiter is skipped.
    Framing that cannot be followed raises SourceError: the caller reconnects.
    """

    def __init__(self, stream: Readable, boundary: bytes, *, max_part_bytes: int) -> None:
        self._stream = stream
        self._boundary = boundary.strip(b"-")
        self._max = max_part_bytes
        self._at_headers = False  # the delimiter before the next part is already consumed
        self._ended = False
        self._bytes_read = 0

    def pop_bytes_read(self) -> int:
        """Bytes consumed since the last call, for the source's bytes_in counter."""
        count, self._bytes_read = self._bytes_read, 0
        return count

    def next_part(self) -> bytes | None:
        """The next part's body, or None once the stream has closed."""
        if self._ended or not (self._at_headers or self._seek_delimiter()):
            return None
        self._at_headers = False
        length = self._read_headers().get("content-length")
        if length is None:
            return self._read_to_delimiter()
        return self._read_exactly(_parse_length(length))

    def _line(self) -> bytes:
        line = self._stream.readline(_LINE_LIMIT)
        self._bytes_read += len(line)
        return line

    def _delimiter(self, line: bytes) -> Literal["part", "end"] | None:
        text = line.strip()
        if not text.startswith(b"--"):
            return None
        core = text.lstrip(b"-")
        if core == self._boundary:
            return "part"
        return "end" if core == self._boundary + b"--" else None

    def _seek_delimiter(self) -> bool:
        """Skip to the next delimiter: True if a part follows, False at the end."""
        skipped = 0
        while line := self._line():
            kind = self._delimiter(line)
            if kind is not None:
                self._ended = kind == "end"
                return not self._ended
            skipped += len(line)
            if skipped > self._max:
                raise SourceError(f"no boundary {self._boundary!r}: skipped {skipped} bytes")
        return False

    def _read_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADER_LINES):
            line = self._line()
            if not line:
                raise SourceError("stream ended inside part headers")
            if not line.strip():
                return headers
            name, colon, value = line.decode("latin-1").partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        raise SourceError(f"more than {_MAX_HEADER_LINES} part header lines")

    def _read_exactly(self, length: int) -> bytes:
        if length > self._max:
            raise SourceError(f"part over the {self._max} byte limit: {length} bytes")
        data = self._stream.read(length)
        self._bytes_read += len(data)
        if len(data) < length:
            raise SourceError("stream ended inside a part")
        return data

    def _read_to_delimiter(self) -> bytes:
        body = bytearray()
        while line := self._line():
            kind = self._delimiter(line)
            if kind is not None:
                self._at_headers = kind == "part"
                self._ended = kind == "end"
                return bytes(body.removesuffix(b"\n").removesuffix(b"\r"))
            body += line
            if len(body) > self._max:
                raise SourceError(f"part over the {self._max} byte limit")
        raise SourceError("stream ended inside a part")


def _parse_length(value: str) -> int:
    try:
        length = int(value)
    except ValueError:
        length = -1
    if length < 0:
        raise SourceError(f"bad part Content-Length: {value!r}")
    return length


class JpegSplitter:
    """Cuts a byte stream of concatenated JPEGs (rpicam-vid --codec mjpeg -o -,
    ffmpeg -f image2pipe) into whole images, however the stream was chunked.

    It walks marker segments by their length fields instead of pairing SOI/EOI:
    an EXIF thumbnail is a whole JPEG inside the APP1 segment, whose EOI would end
    the outer image early, and any segment payload may hold FFD9 by chance. Inside
    entropy-coded data every FF is stuffed (FF00) or a restart marker, so the first
    other marker ends it. Limitation: an image cut off inside a segment payload is
    only noticed when the walk lands on a non-marker byte; the splitter then
    resynchronises on the next SOI, and may lose the image that follows.
    Problems are recorded for `pop_errors` rather than raised, so one bad image
    never costs the good ones fed in the same chunk.
    """

    def __init__(self, max_frame_bytes: int = 10_000_000) -> None:
        self._buf = bytearray()
        self._pos = 0  # parse cursor into _buf; 0 means no SOI found yet
        self._entropy = False  # the cursor is inside entropy-coded data
        self._junk = 0  # bytes discarded while looking for an SOI
        self._max = max_frame_bytes
        self._errors: list[str] = []

    def feed(self, data: bytes) -> list[bytes]:
        """The images completed by `data`; a partial one is kept for the next call."""
        self._buf += data
        frames = []
        while (frame := self._next_frame()) is not None:
            frames.append(frame)
        return frames

    def pop_errors(self) -> list[str]:
        """Why bytes were discarded since the last call."""
        errors, self._errors = self._errors, []
        return errors

    def _next_frame(self) -> bytes | None:
        while self._pos or self._find_start():
            end = self._walk()
            if end is None and len(self._buf) <= self._max:
                return None
            if end is None or end > self._max:
                self._discard(end or len(self._buf) - 1, f"JPEG over {self._max} bytes")
            elif end > 0:
                frame = bytes(self._buf[:end])
                self._discard(end, None)
                return frame
        return None

    def _discard(self, upto: int, reason: str | None) -> None:
        if reason is not None:
            self._errors.append(reason)
        del self._buf[:upto]
        self._pos, self._entropy = 0, False

    def _find_start(self) -> bool:
        start = self._buf.find(_SOI)
        if start < 0:  # keep a trailing FF: it may begin the next SOI
            start = len(self._buf) - self._buf.endswith(b"\xff")
        self._junk += start
        del self._buf[:start]
        if self._junk > self._max:
            self._errors.append(f"no JPEG start marker: skipped {self._junk} bytes")
            self._junk = 0
        if not self._buf.startswith(_SOI):
            return False
        self._pos, self._junk = 2, 0
        return True

    def _walk(self) -> int | None:
        """Move the cursor segment by segment: the image's end once EOI is reached,
        None if more bytes are needed, 0 if these bytes are not a JPEG after all."""
        buf = self._buf
        while not self._entropy or self._skip_entropy():
            pos = self._pos
            if pos + 2 > len(buf):
                return None
            marker = buf[pos + 1]
            if marker == _MARK_EOI and buf[pos] == 0xFF:
                return pos + 2
            if buf[pos] == 0xFF and (marker == 0xFF or marker in _STANDALONE):
                self._pos += 1 if marker == 0xFF else 2  # a fill byte, or no length field
                continue
            if pos + 4 > len(buf):
                return None
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            if buf[pos] != 0xFF or marker == _MARK_SOI or length < 2:
                cut_short = buf.startswith(_SOI, pos)
                self._discard(pos, "JPEG cut short" if cut_short else "corrupt JPEG")
                return 0
            self._pos += 2 + length
            self._entropy = marker == _MARK_SOS
        return None

    def _skip_entropy(self) -> bool:
        """Move the cursor to the marker that ends entropy-coded data; False if that
        marker has not arrived yet."""
        buf = self._buf
        while True:
            ff = buf.find(b"\xff", self._pos)
            if ff < 0 or ff + 1 >= len(buf):
                self._pos = max(self._pos, len(buf) if ff < 0 else ff)
                return False
            follower = buf[ff + 1]
            if follower == 0 or 0xD0 <= follower <= 0xD7 or follower == 0xFF:
                self._pos = ff + (1 if follower == 0xFF else 2)
                continue
            self._pos, self._entropy = ff, False
            return True

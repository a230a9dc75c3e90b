"""What the camera sources share besides the reader thread: recognising an image
before it costs a decode, reading a file, and wording their log lines."""

from __future__ import annotations

from edge_agent.errors import InputError
from edge_agent.sources.base import SourceStats
from edge_agent.util.logs import RateLimitedLog

CHUNK = 65536
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"RIFF")


def check_image(data: bytes) -> None:
    """Reject what cannot be an image before it costs a decode: empty files and
    truncated writes, HTML login pages, text."""
    if not data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] != b"WEBP"):
        raise InputError(f"not an image: {len(data)} bytes starting {data[:8]!r}")


def load(path: str, stats: SourceStats) -> bytes:
    """A whole image file; InputError if it cannot be read or is not an image."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}") from exc
    stats.add(bytes_in=len(data))
    check_image(data)
    return data


def log_skip(log: RateLimitedLog, source: str, what: str, reason: str) -> None:
    """Each source has its own RateLimitedLog. Reasons put their varying detail
    after a colon, so repeats group by what comes before it: one line per kind
    of trouble, not one per file name or byte count."""
    key = f"skip:{reason.partition(':')[0]}"
    log.warning(key, "%s: skipped %s: %s", source, what, reason)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def image_complete(data: bytes) -> bool:
    """False if `data` is the start of an image whose end has not been written yet:
    nothing yet, part of a signature, a JPEG without its end marker, a PNG without
    IEND, a BMP or WebP shorter than its header says. True for anything else,
    including what is no image at all (`check_image` rejects that)."""
    if not data or any(len(data) < len(magic) and magic.startswith(data) for magic in _IMAGE_MAGIC):
        return False
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg_complete(data)
    if data.startswith(b"\x89PNG"):
        return b"IEND" in data[-64:]
    if data.startswith(b"BM") and len(data) >= 6:
        declared = int.from_bytes(data[2:6], "little")  # some writers leave it 0
        return declared == 0 or len(data) >= declared
    if data.startswith(b"RIFF") and len(data) >= 8:
        return len(data) >= int.from_bytes(data[4:8], "little") + 8
    return True


def _jpeg_complete(data: bytes) -> bool:
    """Walks the segments to the end marker, so that an EXIF thumbnail's end marker,
    or FFD9 inside a segment, does not pass for the end of the image."""
    from edge_agent.sources.camera.multipart import JpegSplitter  # noqa: PLC0415 - JPEGs only

    splitter = JpegSplitter(max_frame_bytes=len(data) + 1)
    frames = splitter.feed(data)
    return bool(frames) or bool(splitter.pop_errors())  # corrupt is not "still writing"

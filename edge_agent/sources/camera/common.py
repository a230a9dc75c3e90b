"""What the camera sources share besides the reader thread: recognising an image
before it costs a decode, reading a file, and wording their log lines."""

from __future__ import annotations

from edge_agent.errors import InputError
from edge_agent.logutil import RateLimitedLog
from edge_agent.sources.base import SourceStats

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

"""The `Fetch` protocol over `file:` URLs: a release staged on disk, before it is
uploaded, read with the fetcher's bounds and checked by the device's streaming
check (`edge-agent manifest verify manifest.json`)."""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from edge_agent.errors import FetchError, LengthError
from edge_agent.update.manifest import FileCheck, FileRef
from edge_agent.update.protocols import Fetched, Validators

_CHUNK = 1 << 20


class LocalFetch:
    """The `Fetch` protocol over `file:` URLs, with the fetcher's bounds and the
    device's streaming check: a release staged on disk is verified like one served."""

    def fetch(
        self,
        url: str,
        *,
        max_length: int,
        sha256: str | None = None,
        into: Path | None = None,
        since: Validators | None = None,
        cancel: threading.Event | None = None,
    ) -> Fetched:
        path = _local_path(url)
        check = FileCheck(FileRef(url, max_length, sha256)) if sha256 is not None else None
        chunks: list[bytes] = []
        try:
            size = path.stat().st_size
            if size > max_length:
                raise LengthError(f"{url}: {size} bytes, more than {max_length}")
            with path.open("rb") as source, into.open("wb") if into else nullcontext() as sink:
                while chunk := source.read(_CHUNK):
                    if check is not None:
                        check.update(chunk)
                    if sink is None:
                        chunks.append(chunk)
                    else:
                        sink.write(chunk)
        except FileNotFoundError:
            raise FetchError(f"{path}: no such file", status=404) from None
        except OSError as exc:
            raise FetchError(f"{path}: cannot read: {exc.strerror}") from None
        if check is not None:
            check.done()
        return Fetched(b"".join(chunks), into)


def _local_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise FetchError(f"{url}: only local files can be read here")
    return Path(url2pathname(parts.path))

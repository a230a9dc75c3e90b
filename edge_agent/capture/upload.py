"""Getting samples out: PUT each sample's input, then its sidecar, to a URL template
(`https://host/bucket/{device}/{pipeline}/{name}`), oldest first. A plain HTTP server
that accepts PUT and S3-compatible storage (a bucket policy or a query-string
credential in the template) both work.

A local file is deleted only after its PUT was answered 2xx: the input first (a
sidecar left alone means its input is already on the server), then the sidecar. So
a restart in the middle resumes where it stopped, from what is on the disk, and
nothing acknowledged is sent again. Failures are retried with a doubling backoff,
in order: the oldest sample waits for nothing newer.
"""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from edge_agent.capture.store import Entry, SampleStore, read_sidecar
from edge_agent.errors import UploadError
from edge_agent.util.backoff import Backoff, BackoffOptions
from edge_agent.util.logs import RateLimitedLog

log = logging.getLogger(__name__)
limited = RateLimitedLog(log)

CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".bmp": "image/bmp",
    ".csv": "text/csv",
    ".wav": "audio/wav",
    ".json": "application/json",
}


@dataclass(frozen=True)
class UploadOptions:
    url: str  # with {device}, {pipeline}, {name}
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    retry_min: float = 1.0
    retry_max: float = 300.0
    interval: float = 10.0


@dataclass
class UploadStats:
    uploaded: int = 0  # samples whose input and sidecar are both on the server
    files: int = 0  # files PUT with a 2xx answer
    failures: int = 0  # PUTs that failed (answer or connection)


def put(
    url: str, body: bytes, *, content_type: str, headers: dict[str, str], timeout: float
) -> int:
    """One PUT; the status code, or UploadError when no answer came."""
    parts = urlsplit(url)
    conn_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = conn_class(parts.netloc, timeout=timeout)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(
            "PUT",
            target or "/",
            body=body,
            headers={"Content-Type": content_type, "Content-Length": str(len(body)), **headers},
        )
        response = conn.getresponse()
        response.read(65_536)
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        raise UploadError(f"PUT {parts.netloc}{parts.path}: {type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()


class Uploader:
    """`run` is the uploader thread's body; `upload_entry` does one sample."""

    def __init__(
        self,
        store: SampleStore,
        options: UploadOptions,
        *,
        device: str,
        put: Callable[..., int] = put,
    ) -> None:
        self.store = store
        self.options = options
        self.device = device
        self.stats = UploadStats()
        self._put = put
        self._backoff = Backoff(
            BackoffOptions(options.retry_min, options.retry_max, jitter="equal")
        )

    def url_for(self, pipeline: str, name: str) -> str:
        return self.options.url.format(
            device=quote(self.device, safe=""),
            pipeline=quote(pipeline, safe=""),
            name=quote(name, safe=""),
        )

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.upload_pending(stop)
            stop.wait(self.options.interval)

    def upload_pending(self, stop: threading.Event) -> int:
        """Upload every complete sample, oldest first, retrying each until it is up
        or `stop` is set; how many were uploaded."""
        done = 0
        for entry in self.store.entries():
            while not stop.is_set():
                if self.upload_entry(entry):
                    self._backoff.reset()
                    done += 1
                    break
                if not self._backoff.wait(stop):
                    return done
        return done

    def upload_entry(self, entry: Entry) -> bool:
        """PUT the input (if still here), then the sidecar, deleting each after its
        2xx; False after the first failure (what succeeded stays done)."""
        sidecar = read_sidecar(entry)
        if sidecar is None:  # unreadable: nothing to name it by; keep it for a person
            return True
        pipeline = str(sidecar.get("pipeline", "unknown"))
        if entry.input is not None:
            if not self._send(entry.input, pipeline):
                return False
            self.store.input_sent(entry)
        if not self._send(entry.sidecar, pipeline):
            return False
        self.store.remove(entry.stem)
        self.stats.uploaded += 1
        return True

    def _send(self, path: Path, pipeline: str) -> bool:
        try:
            body = path.read_bytes()
        except FileNotFoundError:  # evicted meanwhile
            return True
        except OSError as exc:
            limited.error("upload-read", "samples: cannot read %s: %s", path, exc)
            return False
        url = self.url_for(pipeline, path.name)
        try:
            status = self._put(
                url,
                body,
                content_type=CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
                headers=self.options.headers,
                timeout=self.options.timeout,
            )
        except UploadError as exc:
            self.stats.failures += 1
            limited.warning("upload", "samples: upload failed, will retry: %s", exc)
            return False
        if not 200 <= status < 300:
            self.stats.failures += 1
            limited.warning(
                "upload", "samples: upload of %s answered %d, will retry", path.name, status
            )
            return False
        self.stats.files += 1
        return True

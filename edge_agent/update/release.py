"""A release as a device reads it: the manifest and its signature through a `Fetch`,
verified by `manifest.verify` (size cap, signature, parsing, freshness), and the
files it lists, checked as they stream. The update manager and `edge-agent
manifest verify` both read releases through here, so the operator's check is the
device's own code path, not a parallel implementation."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.errors import FetchError, LengthError
from edge_agent.update.manifest import FileRef, Manifest, resolve_url, verify
from edge_agent.update.protocols import Fetch, Fetched, Validators

MAX_SIGNATURE_BYTES = 4096
MAX_MANIFEST_BYTES = 1_000_000  # the default of update.max_manifest_bytes
MAX_IN_MEMORY = 10_000_000  # labels and golden inputs; a model is always streamed to disk


@dataclass(frozen=True)
class Release:
    manifest: Manifest
    newer: bool  # False: the very version already trusted
    validators: Validators  # for the next conditional GET


def read_release(
    fetch: Fetch,
    url: str,
    keys: Sequence[Ed25519PublicKey],
    *,
    trusted_version: int | None,
    now: datetime,
    max_manifest_bytes: int = MAX_MANIFEST_BYTES,
    since: Validators | None = None,
    cancel: threading.Event | None = None,
) -> Release | None:
    """The verified manifest at `url`, or None when the server says it has not
    changed since `since`. Raises SignatureError only after both the manifest and
    its signature arrived whole: a mismatch is then a matter of releases, not of
    transport."""
    fetched = fetch.fetch(url, max_length=max_manifest_bytes, since=since, cancel=cancel)
    if fetched is None:
        return None
    signature = fetch.fetch(url + ".sig", max_length=MAX_SIGNATURE_BYTES, cancel=cancel)
    verified = verify(
        fetched.body, _body(signature, url), keys, trusted_version=trusted_version, now=now
    )
    validators = Validators(fetched.etag, fetched.last_modified)
    return Release(verified.manifest, verified.newer, validators)


def read_small(
    fetch: Fetch, base_url: str, ref: FileRef, cancel: threading.Event | None = None
) -> bytes:
    """A file the manifest lists (labels, a golden input), whole in memory: so it
    must be small, and is refused unread when the manifest says it is not."""
    if ref.length > MAX_IN_MEMORY:
        raise LengthError(f"{ref.url}: {ref.length} bytes, more than {MAX_IN_MEMORY} in memory")
    url = resolve_url(base_url, ref.url)
    return _body(fetch.fetch(url, max_length=ref.length, sha256=ref.sha256, cancel=cancel), url)


def read_optional(
    fetch: Fetch, url: str, max_length: int, cancel: threading.Event | None = None
) -> bytes | None:
    """A small file that may not exist (a group key file): None on HTTP 404."""
    try:
        fetched = fetch.fetch(url, max_length=max_length, cancel=cancel)
    except FetchError as exc:
        if exc.status == 404:
            return None
        raise
    return _body(fetched, url)


def download(
    fetch: Fetch, url: str, ref: FileRef, into: Path, cancel: threading.Event | None = None
) -> None:
    """A listed file (a model) streamed into `into`, its length and digest checked
    on the way; `url` is the ref's, already resolved."""
    fetch.fetch(url, max_length=ref.length, sha256=ref.sha256, into=into, cancel=cancel)


def _body(fetched: Fetched | None, url: str) -> bytes:
    if fetched is None:  # only a conditional GET may answer "unchanged"
        raise FetchError(f"{url}: 304 Not Modified to an unconditional request")
    return fetched.body

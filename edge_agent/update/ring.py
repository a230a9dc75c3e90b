"""The keys a device opens encrypted models with: its own X25519 key, and the group
keys unwrapped from its group key files (fetched beside a manifest, then cached in
the store so a restart needs no network).

`for_entry` is the update manager's, before it downloads anything: which keys open
a manifest entry, or why none does. `model_bytes` and `label_names` are the model
loaders' (start-up, restart, rollback): a stored or hand-installed file, decrypted
into memory when it is encrypted, as it is otherwise.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from edge_agent.errors import DecryptError, HashError, ModelError
from edge_agent.model.labels import parse_labels
from edge_agent.update.decrypt import (
    FetchGroupFile,
    decrypt_bytes,
    device_keyring,
    group_file_url,
    load_model_bytes,
)
from edge_agent.update.envelope import MAGIC, Keyring, key_id, open_stream
from edge_agent.update.groupcache import GroupCache
from edge_agent.update.groupkey import open_group_key
from edge_agent.update.manifest import FileRef, GroupRef, ModelEntry

log = logging.getLogger(__name__)


class DeviceKeyring:
    """This device's key (None: none configured) and the group keys cached for it."""

    def __init__(self, device_key: X25519PrivateKey | None, groups: GroupCache | None) -> None:
        self._device = device_key
        self._groups = groups

    @property
    def device_key(self) -> X25519PrivateKey | None:
        return self._device

    @property
    def key_id(self) -> str | None:
        return None if self._device is None else key_id(self._device)

    def keys(self) -> dict[str, X25519PrivateKey]:
        """The device key and every cached group key it unwraps."""
        if self._device is None:
            return {}
        ring = {key_id(self._device): self._device}
        for cached in self._groups.load(key_id(self._device)) if self._groups else ():
            public = X25519PublicKey.from_public_bytes(cached.public_key)
            try:
                ring[cached.key_id] = open_group_key(cached.data, self._device, public)
            except DecryptError as exc:
                log.warning("update: cached group key file %s does not open: %s", cached.path, exc)
        return ring

    # -- loaders: every failure is a ModelError naming the file -------------------

    def model_bytes(self, path: Path) -> bytes:
        """A model file's bytes for `Model.load`, decrypted in memory if encrypted."""
        if not _encrypted(path):
            return load_model_bytes(path, None)
        return load_model_bytes(path, self.keys() or None)

    def label_names(self, path: Path) -> list[str]:
        """A labels file's lines, decrypted in memory if encrypted."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read labels: {exc.strerror or exc}") from exc
        if data.startswith(MAGIC):
            keys = self.keys()
            if not keys:
                raise ModelError(f"{path}: encrypted labels, and no device key is configured")
            try:
                data = open_stream(io.BytesIO(data), len(data), keys)[1]
            except (DecryptError, HashError) as exc:
                raise ModelError(f"{path}: cannot decrypt: {exc}") from exc
        return parse_labels(data, str(path))

    # -- the update manager: DecryptError subclasses name the reason --------------

    def for_entry(
        self, entry: ModelEntry, groups: Sequence[GroupRef], fetch: FetchGroupFile
    ) -> dict[str, X25519PrivateKey] | None:
        """The keys that open `entry`'s encrypted files, found before anything is
        downloaded; None when nothing in it is encrypted. A group key file comes
        from the cache if this device already has it, else from `fetch` (None: HTTP
        404, not a member), and is cached once it opened."""
        encryptions = [ref.encryption for _, ref in entry.refs() if ref.encryption is not None]
        if not encryptions:
            return None
        if self._device is None:
            raise DecryptError(
                f"no device key: model {entry.name} is encrypted (for key(s) "
                f"{', '.join(encryptions[0].recipients[:4])}); make one with `edge-agent keys "
                "init` (or set update.device_key) and enroll it with the operator"
            )
        device, member = self._device, key_id(self._device)
        by_url = {group_file_url(group, member): group for group in groups}
        answers: dict[str, bytes | None] = {}  # the model's and the labels' groups are one

        def group_file(url: str) -> bytes | None:
            if url not in answers:
                answers[url] = self._group_file(by_url[url], member, url, fetch)
            return answers[url]

        ring: dict[str, X25519PrivateKey] = {}
        for encryption in encryptions:
            ring.update(device_keyring(encryption, device, groups, group_file))
        for url, data in answers.items():
            group = by_url[url]
            if data is not None and group.key_id in ring and self._groups is not None:
                self._groups.save(group.name, group.key_id, group.public_key, member, data)
        return ring

    def _group_file(
        self, group: GroupRef, member: str, url: str, fetch: FetchGroupFile
    ) -> bytes | None:
        """From the cache when this device has it (a restart, the next release to
        the same group key), else from the server."""
        cached = self._groups.get(group.key_id, member) if self._groups else None
        if cached is not None and cached.public_key == group.public_key:
            return cached.data
        return fetch(url)


def open_file(data: bytes, ref: FileRef, ring: Keyring | None) -> bytes:
    """A downloaded small file (labels) as the manifest entry says it is: decrypted
    when it is encrypted, as it is otherwise."""
    if ref.encryption is None:
        return data
    if not ring:
        raise DecryptError(f"{ref.url}: encrypted, and no key was found for it")
    return decrypt_bytes(data, ref, ring)


def _encrypted(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False  # load_model_bytes says what is wrong with the file

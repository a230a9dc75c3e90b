"""The on-disk model store and the persisted update state, under `<state_dir>/updates/`.

Mender/RAUC discipline in pure file I/O: files go in by temp file, fsync, rename;
the pointers (current, previous, probation) live in one atomically written JSON
file, so a model is kept only after `commit`, and `recover` at start-up rolls back
whatever was on probation when the agent or the board went down. Layout:
`state.json`, `models/<name>/<version>-<sha12>.tflite` (+ `.labels.txt`),
`downloads/` (the fetcher's resumable `.part` files, never swept here) and `groups/`
(group key files, see `groupcache`).

An encrypted model is kept as it was downloaded: its `.tflite` and `.labels.txt`
hold the ciphertext (every load decrypts it in memory), while the sha256 a model
is recorded under, rejected by and named after is the plaintext's, so the same
model encrypted again is the same model.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_agent.errors import HashError, ManifestError, RollbackError, UpdateError
from edge_agent.update.groupcache import GroupCache
from edge_agent.util.fs import atomic_write

log = logging.getLogger(__name__)

SCHEMA = 1
STATE_FILE = "state.json"
ROLLOUT_FILE = "rollout.json"
MODEL_SUFFIX = ".tflite"
LABELS_SUFFIX = ".labels.txt"
REJECTED_KEPT = 32  # bounded: a server re-offering bad bytes must not grow the state forever
_CHUNK = 1 << 20
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # fullmatch: `$` would admit "x\n"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class InstalledModel:
    name: str  # manifest model name
    version: str
    sha256: str
    path: Path  # the .tflite file
    labels: Path | None


@dataclass(frozen=True)
class _Record:
    version: str
    sha256: str
    labels: bool


@dataclass(frozen=True)
class _Entry:
    current: _Record | None = None
    previous: _Record | None = None
    probation: bool = False
    rejected: tuple[str, ...] = ()


@dataclass(frozen=True)
class _State:
    trusted: tuple[int, str] | None = None
    etag: str | None = None
    last_modified: str | None = None
    models: dict[str, _Entry] = field(default_factory=dict)

    def entry(self, name: str) -> _Entry:
        return self.models.get(name, _Entry())

    def with_entry(self, name: str, entry: _Entry) -> _State:
        return replace(self, models={**self.models, name: entry})


def _safe(value: object, what: str = "name") -> str:
    """Names and versions become file names: the manifest validated them, but a
    tampered state.json or a caller bug must still not reach outside the store."""
    if not isinstance(value, str) or not _SAFE.fullmatch(value):
        raise ManifestError(f"unsafe model {what} {value!r}")
    return value


def _sha(value: object) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value.lower()):
        raise ManifestError(f"not a SHA-256 hex digest: {value!r}")
    return value.lower()


def _record(raw: Any) -> _Record | None:
    if raw is None:
        return None
    return _Record(_safe(raw["version"], "version"), _sha(raw["sha256"]), raw["labels"] is True)


def _parse_state(raw: Any) -> _State:
    """Names, versions and digests become paths, so they are checked again; any
    shape we did not write ourselves raises, and the caller starts empty."""
    if raw.get("schema") != SCHEMA:
        raise ValueError(f"unknown state schema {raw.get('schema')!r}")
    trusted = None if raw["trusted"] is None else (int(raw["trusted"][0]), _sha(raw["trusted"][1]))
    if not all(raw[k] is None or isinstance(raw[k], str) for k in ("etag", "last_modified")):
        raise TypeError("etag and last_modified must be strings")
    models = {
        _safe(name): _Entry(
            _record(e["current"]),
            _record(e["previous"]),
            e["probation"] is True,
            tuple(_sha(sha) for sha in e["rejected"]),
        )
        for name, e in raw["models"].items()
    }
    return _State(trusted, raw["etag"], raw["last_modified"], models)


def _files(model: InstalledModel) -> list[Path]:
    return [model.path] if model.labels is None else [model.path, model.labels]


def _is_leftover(path: Path) -> bool:
    stem = path.name.removesuffix(LABELS_SUFFIX)
    if stem != path.name:
        return not path.with_name(stem + MODEL_SUFFIX).exists()
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _fsync(path: Path) -> None:
    """For a file: the fetcher's bytes reach the card before a rename publishes them;
    for a directory: a rename is durable only once its directory is fsynced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    """Thread-safe: every mutation is read-modify-write of the in-memory state
    (always equal to state.json) under one lock, persisted before memory changes."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._models = root / "models"
        self._downloads = root / "downloads"
        self._state_path = root / STATE_FILE
        self.groups = GroupCache(root / "groups")
        self._lock = threading.Lock()
        self._pending: set[Path] = set()  # installed, not yet activated: commit must not prune them
        self._recovered: list[InstalledModel] = []  # rolled back by `recover`, not yet announced
        try:
            for directory in (self._root, self._models, self._downloads):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UpdateError(f"cannot create the model store at {root}: {exc}") from exc
        self._sweep()
        self._state = self._load()

    def trusted_version(self) -> int | None:
        return None if (trusted := self._state.trusted) is None else trusted[0]

    def set_trusted(self, version: int, manifest_sha256: str) -> None:
        """Refuses to go backwards (or to re-bind a version to other bytes): the
        last line of defence against a replayed manifest."""
        digest = _sha(manifest_sha256)

        def change(state: _State) -> _State:
            old = state.trusted
            if old is not None and (version < old[0] or (version == old[0] and digest != old[1])):
                raise RollbackError(f"manifest version {version} does not supersede {old[0]}")
            return replace(state, trusted=(version, digest))

        self._mutate(change)

    def etag(self) -> tuple[str | None, str | None]:
        state = self._state
        return state.etag, state.last_modified

    def set_etag(self, etag: str | None, last_modified: str | None) -> None:
        self._mutate(lambda state: replace(state, etag=etag, last_modified=last_modified))

    def download_path(self, name: str, sha256: str) -> Path:
        return self._downloads / f"{_safe(name)}-{_sha(sha256)[:12]}.part"

    def install(
        self,
        name: str,
        version: str,
        sha256: str,
        model_file: Path,
        labels: bytes | None,
        *,
        file_sha256: str | None = None,
    ) -> InstalledModel:
        """Labels go in first, the model last, so a present .tflite means a finished
        install. A source under downloads/ is moved (consumed); any other is
        stream-copied and re-hashed on the way, since every byte is read anyway.
        `sha256` is the model's (the plaintext's); `file_sha256`, when the file is
        encrypted, the digest of the file's own bytes."""
        record = _Record(_safe(version, "version"), _sha(sha256), labels is not None)
        digest = _sha(file_sha256 or sha256)
        model = self._model(_safe(name), record)
        with self._lock:
            self._pending.update(_files(model))
        try:
            model.path.parent.mkdir(parents=True, exist_ok=True)
            if model.labels is not None and labels is not None:
                atomic_write(model.labels, labels)
            if model_file.resolve().is_relative_to(self._downloads.resolve()):
                self._move(model_file, model.path, digest)
            else:
                self._copy(model_file, model.path, digest)
        except (OSError, UpdateError) as exc:
            self._forget_pending(model)
            if model.labels is not None and _is_leftover(model.labels):
                self._remove(model.labels)
            if isinstance(exc, UpdateError):
                raise
            raise UpdateError(f"cannot install {name} {version}: {exc}") from exc
        log.info("installed model %s %s at %s", name, version, model.path)
        return model

    def _move(self, source: Path, target: Path, sha256: str) -> None:
        """The fetcher may not have fsynced: do it before the rename makes it visible."""
        _fsync(source)
        try:
            os.replace(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            self._copy(source, target, sha256)
            source.unlink()
            return
        _fsync(target.parent)
        _fsync(source.parent)

    def _copy(self, source: Path, target: Path, sha256: str) -> None:
        # unique per thread, and still matched by the sweep's `.*.tmp`
        temp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        digest = hashlib.sha256()
        try:
            with source.open("rb") as src, temp.open("wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            if digest.hexdigest() != sha256:
                raise HashError(f"{source} changed after verification: {digest.hexdigest()}")
            temp.replace(target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync(target.parent)

    def current(self, name: str) -> InstalledModel | None:
        return self._resolve(name, self._state.entry(_safe(name)).current)

    def previous(self, name: str) -> InstalledModel | None:
        return self._resolve(name, self._state.entry(_safe(name)).previous)

    def on_probation(self, name: str) -> bool:
        return self._state.entry(_safe(name)).probation

    def is_rejected(self, name: str, sha256: str) -> bool:
        return _sha(sha256) in self._state.entry(_safe(name)).rejected

    def activate(self, name: str, model: InstalledModel) -> None:
        """Persisted before the caller swaps the model in, so a crash from here on
        finds it on probation and rolls back. Activating over a model still on
        probation keeps `previous`: the rollback target stays one that proved healthy."""
        labelled = model.labels is not None
        record = _Record(_safe(model.version, "version"), _sha(model.sha256), labelled)
        if model != self._model(_safe(name), record) or self._resolve(name, record) is None:
            raise UpdateError(f"{model.path} is not a model installed in this store as {name}")

        def change(state: _State) -> _State:
            entry = state.entry(name)
            keep = entry.probation or entry.current == record
            previous = entry.previous if keep else entry.current
            return state.with_entry(
                name, replace(entry, current=record, previous=previous, probation=True)
            )

        self._mutate(change)
        self._forget_pending(model)

    def commit(self, name: str) -> None:
        """The model proved healthy: from now on only current and previous are kept."""
        _safe(name)
        self._mutate(lambda s: s.with_entry(name, replace(s.entry(name), probation=False)))
        self._prune(name)

    def rollback(self, name: str) -> InstalledModel | None:
        """Restore previous (if its file is still there) and remember the rejected
        bytes so the same update is not installed again."""
        _safe(name)

        def change(state: _State) -> _State:
            entry = state.entry(name)
            restored = entry.previous if self._resolve(name, entry.previous) else None
            rejected = entry.rejected
            if entry.current is not None and entry.current.sha256 not in rejected:
                rejected = (*rejected, entry.current.sha256)[-REJECTED_KEPT:]
            return state.with_entry(name, _Entry(restored, None, False, rejected))

        self._mutate(change)
        self._prune(name)
        restored = self.current(name)
        log.warning("rolled back model %s to %s", name, restored.version if restored else "none")
        return restored

    def recover(self) -> list[str]:
        """Start-up: a model still on probation never proved healthy before the agent
        died or the board rebooted, so it goes."""
        names = sorted(name for name, entry in self._state.models.items() if entry.probation)
        for name in names:
            current = self._state.entry(name).current
            if current is not None:
                self._recovered.append(self._model(name, current))
            self.rollback(name)
        return names

    def take_recovered(self) -> list[InstalledModel]:
        """The models `recover` rolled back, once: the update manager announces them."""
        with self._lock:
            taken, self._recovered = self._recovered, []
        return taken

    def discard(self, model: InstalledModel) -> None:
        """An installed model that failed its last check before activation: its
        files go, unless they are current's or previous's."""
        self._forget_pending(model)
        self._prune(_safe(model.name))

    def _model(self, name: str, record: _Record) -> InstalledModel:
        stem = self._models / name / f"{record.version}-{record.sha256[:12]}"
        labels = stem.with_name(stem.name + LABELS_SUFFIX) if record.labels else None
        path = stem.with_name(stem.name + MODEL_SUFFIX)
        return InstalledModel(name, record.version, record.sha256, path, labels)

    def _forget_pending(self, model: InstalledModel) -> None:
        with self._lock:
            self._pending.difference_update(_files(model))

    def _resolve(self, name: str, record: _Record | None) -> InstalledModel | None:
        """A dangling path would fail later and less clearly (SD card trouble): say so here."""
        if record is None:
            return None
        model = self._model(name, record)
        for path in _files(model):
            if not path.is_file():
                log.error("installed model %s %s is missing %s", name, record.version, path)
                return None
        return model

    def _mutate(self, change: Callable[[_State], _State]) -> None:
        with self._lock:
            state = change(self._state)
            try:
                atomic_write(
                    self._state_path,
                    json.dumps({"schema": SCHEMA, **asdict(state)}, indent=1).encode(),
                )
            except OSError as exc:
                raise UpdateError(f"cannot persist update state: {exc}") from exc
            self._state = state

    def _load(self) -> _State:
        """Corrupt state must not stop the agent: it starts empty (configured models,
        no trusted version) and keeps the bad file aside for a post-mortem."""
        try:
            return _parse_state(json.loads(self._state_path.read_bytes()))
        except FileNotFoundError:
            return _State()
        except (OSError, ValueError, TypeError, LookupError, AttributeError, UpdateError) as exc:
            log.error("update state %s is unreadable (%s); starting empty", self._state_path, exc)
            try:
                self._state_path.replace(self._state_path.with_name(STATE_FILE + ".corrupt"))
            except OSError:
                log.exception("cannot set aside %s", self._state_path)
            return _State()

    def _prune(self, name: str) -> None:
        """Dot-files are a concurrent install's temp files: leave them to it."""
        with self._lock:
            entry = self._state.entry(name)
            keep = set(self._pending)
            for record in filter(None, (entry.current, entry.previous)):
                keep.update(_files(self._model(name, record)))
            directory = self._models / name
            try:
                doomed = [p for p in directory.iterdir() if p not in keep]
            except OSError:
                log.exception("cannot prune %s", directory)
                return
            for path in doomed:
                if not path.name.startswith("."):
                    self._remove(path)

    def _sweep(self) -> None:
        """Remove what a killed install leaves: dot-temp files, and labels whose model
        never arrived (labels are written first)."""
        leftovers = [self._root / f".{STATE_FILE}.tmp"]
        try:
            for directory in (d for d in self._models.iterdir() if d.is_dir()):
                leftovers.extend(p for p in directory.iterdir() if _is_leftover(p))
        except OSError:
            log.exception("cannot sweep %s", self._models)
        for path in leftovers:
            if path.exists():
                log.warning("removing %s left by an interrupted install", path)
                self._remove(path)

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            log.exception("cannot remove %s", path)

    # The trusted manifest's rollout salt, kept beside state.json (not in it) so
    # the device can publish its bucket after a restart that polls only a 304.

    def rollout_salt(self) -> str | None:
        try:
            value = json.loads((self._root / ROLLOUT_FILE).read_bytes()).get("salt")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("update: %s is unreadable (%s); no rollout bucket", ROLLOUT_FILE, exc)
            return None
        return value if isinstance(value, str) and value else None

    def set_rollout_salt(self, salt: str | None) -> None:
        try:
            atomic_write(self._root / ROLLOUT_FILE, json.dumps({"salt": salt}).encode())
        except OSError as exc:
            raise UpdateError(f"cannot persist the rollout salt: {exc}") from exc

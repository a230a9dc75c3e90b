"""Images other programs drop into a directory: rpicam-still --timelapse, motion,
an IP camera's FTP upload."""

from __future__ import annotations

import fnmatch
import logging
import os
from contextlib import suppress

from edge_agent.errors import InputError, SourceError
from edge_agent.sources.camera.common import describe, load
from edge_agent.sources.camera.live import LiveSource

logger = logging.getLogger(__name__)

_TEMP_SUFFIXES = (".tmp", ".part", ".partial", "~")


class DirectorySource(LiveSource):
    """Images other programs drop into a directory (rpicam-still --timelapse, motion,
    an IP camera's FTP upload). Polls with os.scandir: no dependency, and unlike
    inotify it also works on network mounts. Files present at start are ignored; a
    file is read once its size and mtime held still across two polls, and of the
    files that settle in one poll only the newest is read, the rest are stale."""

    def __init__(
        self,
        name: str,
        *,
        path: str,
        pattern: str = "*.jpg",
        delete_after: bool = False,
        fps: float = 0,
        poll_interval: float = 0.5,
    ) -> None:
        super().__init__(name, origin=path, fps=fps)
        self._path = path
        self._pattern = pattern.lower()  # cameras write IMG_0001.JPG as often as .jpg
        self._delete_after = delete_after
        self._poll_interval = poll_interval
        self._pending: dict[str, tuple[int, int]] = {}  # name -> (mtime_ns, size) last poll
        try:
            self._known = self._scan()  # handled or pre-existing: not new
        except SourceError as exc:
            self._known = {}
            logger.warning("%s: %s; will keep polling", name, exc)
        self._thread.start()

    def _session(self) -> None:
        current = self._scan()
        fresh = {name: sig for name, sig in current.items() if self._known.get(name) != sig}
        settled = sorted(
            (name for name, sig in fresh.items() if self._pending.get(name) == sig),
            key=lambda name: (current[name][0], name),
        )
        self._pending = {name: sig for name, sig in fresh.items() if name not in settled}
        self._known = {name: sig for name, sig in current.items() if name not in self._pending}
        self._consume(settled)
        self._stop.wait(self._poll_interval)

    def _scan(self) -> dict[str, tuple[int, int]]:
        found = {}
        try:
            with os.scandir(self._path) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(".") or name.endswith(_TEMP_SUFFIXES):
                        continue  # writers that rename into place write these first
                    with suppress(OSError):  # vanished since listed
                        if fnmatch.fnmatchcase(name.lower(), self._pattern) and entry.is_file():
                            stat = entry.stat()
                            found[name] = (stat.st_mtime_ns, stat.st_size)
        except OSError as exc:
            raise SourceError(f"cannot list {self._path}: {describe(exc)}") from exc
        return found

    def _consume(self, names: list[str]) -> None:
        if not names:
            return
        *stale, newest = names
        self.stats.add(dropped=len(stale))
        for name in stale:
            self._discard(name)
        path = os.path.join(self._path, newest)
        data = None
        if self._gate.delay() > 0:
            self.stats.add(dropped=1)
        else:
            data = self._read(path)
        self._discard(newest)
        if data is not None:
            self._offer(data, origin=path)

    def _read(self, path: str) -> bytes | None:
        try:
            return load(path, self.stats)
        except InputError as exc:
            self._reject(path, str(exc))
            return None

    def _discard(self, name: str) -> None:
        """With delete_after every file seen goes, stale or bad ones too, so the
        directory cannot fill up."""
        if not self._delete_after:
            return
        try:
            os.remove(os.path.join(self._path, name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._log.warning("delete", "%s: cannot delete %s: %s", self.name, name, exc)
            self.stats.add(errors=1)

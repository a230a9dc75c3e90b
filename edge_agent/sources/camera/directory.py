"""Images other programs drop into a directory: rpicam-still --timelapse, motion,
an IP camera's FTP upload."""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from contextlib import suppress
from dataclasses import dataclass

from edge_agent.errors import InputError, SourceError
from edge_agent.sources.camera.common import check_image, describe, image_complete
from edge_agent.sources.camera.live import LiveSource

logger = logging.getLogger(__name__)

_TEMP_SUFFIXES = (".tmp", ".part", ".partial", "~")

Signature = tuple[int, int]  # (mtime_ns, size)


@dataclass
class _Seen:
    """A new or changed file, not handled yet."""

    sig: Signature
    since: float  # time.monotonic() of the poll that first saw this signature
    incomplete: bool = False  # read at this signature and found cut short


class DirectorySource(LiveSource):
    """Polls with os.scandir: no dependency, and unlike inotify it also works on
    network mounts. Files present at start are ignored.

    A file is read once its size and mtime have held still for `settle` seconds
    and, for formats that mark their end (JPEG, PNG, BMP, WebP), once that end
    is there: a writer that pauses half-way (an FTP upload, a slow SD card) is
    waited for. One that stays cut short for `incomplete_timeout` seconds is given
    up on. Of the files that settle in one poll only the newest is read, the rest
    are stale. With `delete_after` a file goes once handled, stale ones too, so
    the directory cannot fill up; a file that could not be read (unreadable, not
    an image, never completed) is left in place for a human, logged and counted
    once.
    """

    def __init__(
        self,
        name: str,
        *,
        path: str,
        pattern: str = "*.jpg",
        delete_after: bool = False,
        fps: float = 0,
        poll_interval: float = 0.5,
        settle: float = 1.0,
        incomplete_timeout: float = 30.0,
    ) -> None:
        super().__init__(name, origin=path, fps=fps)
        self._path = path
        self._pattern = pattern.lower()  # cameras write IMG_0001.JPG as often as .jpg
        self._delete_after = delete_after
        self._poll_interval = poll_interval
        self._settle = settle
        self._incomplete_timeout = incomplete_timeout
        self._pending: dict[str, _Seen] = {}
        try:
            self._known = self._scan()  # handled, pre-existing or left: not new
        except SourceError as exc:
            self._known = {}
            logger.warning("%s: %s; will keep polling", name, exc)
        self._thread.start()

    def _session(self) -> None:
        now = time.monotonic()
        self._track(self._scan(), now)
        self._give_up(now)
        settled = [
            name
            for name, seen in self._pending.items()
            if not seen.incomplete and now - seen.since >= self._settle
        ]
        settled.sort(key=lambda name: (self._pending[name].sig[0], name))
        self._consume(settled)
        self._stop.wait(self._poll_interval)

    def _track(self, current: dict[str, Signature], now: float) -> None:
        """Note new and changed files; forget those that went away."""
        self._known = {name: sig for name, sig in self._known.items() if name in current}
        self._pending = {name: seen for name, seen in self._pending.items() if name in current}
        for name, sig in current.items():
            seen = self._pending.get(name)
            if self._known.get(name) != sig and (seen is None or seen.sig != sig):
                self._pending[name] = _Seen(sig, now)

    def _scan(self) -> dict[str, Signature]:
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

    def _give_up(self, now: float) -> None:
        for name, seen in list(self._pending.items()):
            waited = now - seen.since
            if seen.incomplete and waited >= self._incomplete_timeout:
                reason = f"incomplete image: {seen.sig[1]} bytes, unchanged for {waited:.0f} s"
                self._reject(self._full(name), f"{reason}; left in place")
                self._handled(name, delete=False)

    def _consume(self, names: list[str]) -> None:
        """Hand over the newest file that reads whole; the older ones are stale."""
        if names and self._gate.delay() > 0:
            self.stats.add(dropped=len(names))
            for name in names:
                self._handled(name, delete=True)
            return
        for index in reversed(range(len(names))):
            data = self._read(names[index])
            if data is None:
                continue
            stale = names[:index]
            self.stats.add(dropped=len(stale))
            for name in stale:
                self._handled(name, delete=True)
            self._handled(names[index], delete=True)
            self._offer(data, origin=self._full(names[index]))
            return

    def _read(self, name: str) -> bytes | None:
        """The file's bytes if it is a whole image; None if it is not complete yet
        (it stays pending) or cannot be used (it is left, logged and counted)."""
        path = self._full(name)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as exc:
            self._reject(path, f"cannot read: {exc.strerror or exc}")
            self._handled(name, delete=False)
            return None
        self.stats.add(bytes_in=len(data))
        if not image_complete(data):
            self._pending[name].incomplete = True  # read again once it changes
            return None
        try:
            check_image(data)
        except InputError as exc:
            self._reject(path, f"{exc}; left in place")
            self._handled(name, delete=False)
            return None
        return data

    def _handled(self, name: str, *, delete: bool) -> None:
        """Done with this version of the file: it is not read again unless it changes."""
        seen = self._pending.pop(name)
        self._known[name] = seen.sig
        if delete and self._delete_after:
            self._delete(name)

    def _delete(self, name: str) -> None:
        try:
            os.remove(self._full(name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._log.warning("delete", "%s: cannot delete %s: %s", self.name, name, exc)
            self.stats.add(errors=1)

    def _full(self, name: str) -> str:
        return os.path.join(self._path, name)

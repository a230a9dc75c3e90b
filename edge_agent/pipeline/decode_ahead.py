"""Decode-ahead for camera pipelines: worker threads read and decode the next
frames while the model runs the current one, and hand them over in order.

Decoding a large JPEG costs more CPU than an int8 invoke() on a small model, so
one decoder can starve the interpreter; Pillow's decoder releases the GIL, so
several decode in parallel. Frames are tagged in the order they are read and
handed over in that order: a policy's debounce and smoothing see the scene as
the camera did.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from edge_agent.sources.base import Item, SourceExhausted

Ready = tuple[Item, Any]  # the item and what the pipeline prepared from it (a tensor...)
END = None  # handed over once the source is exhausted


class DecodeAhead:
    """`take` is the verb: the next decoded frame, in source order."""

    def __init__(
        self,
        read: Callable[[], Item | None],
        prepare: Callable[[Item], Any],
        *,
        workers: int = 2,
        name: str = "decode",
        room: int = 0,
    ) -> None:
        """`room`: decoded frames that may wait for the model (default: one more than
        there are decoders)."""
        self._read = read
        self._prepare = prepare
        self._name = name
        # Room for one frame more than there are decoders: with one decoder and room for
        # one, a slow frame left the model idle; a second ready frame absorbs it.
        self._handoff: queue.Queue[Ready | None] = queue.Queue(maxsize=room or workers + 1)
        self._read_lock = threading.Lock()
        self._turn = threading.Condition()
        self._issued = 0  # tickets handed to readers
        self._next = 0  # the ticket whose frame goes over next
        self._ended = False
        self._wanted = workers
        self._threads = [self._thread(i) for i in range(workers)]
        self._running = [True] * workers  # False once a thread left (resize, end, stop)
        self._stop = threading.Event()

    def _thread(self, index: int) -> threading.Thread:
        return threading.Thread(
            target=self._work, args=(index,), name=f"{self._name}-{index}", daemon=True
        )

    def start(self, stop: threading.Event) -> None:
        self._stop = stop
        for thread in self._threads:
            thread.start()

    def take(self, timeout: float) -> Ready | None:
        """A decoded frame; None at the end of a finite source; raises queue.Empty."""
        return self._handoff.get(timeout=timeout)

    def resize(self, workers: int) -> None:
        """Decode on `workers` threads from now on: new ones start, extra ones stop
        before their next read. Call after `start`."""
        with self._read_lock:
            self._wanted = max(1, workers)
            for index in range(self._wanted):
                if index < len(self._threads) and self._running[index]:
                    continue
                thread = self._thread(index)
                if index < len(self._threads):
                    self._threads[index], self._running[index] = thread, True
                else:
                    self._threads.append(thread)
                    self._running.append(True)
                thread.start()

    @property
    def workers(self) -> int:
        return self._wanted

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _work(self, index: int) -> None:
        while not self._stop.is_set():
            with self._read_lock:
                if self._ended or index >= self._wanted:
                    self._running[index] = False
                    return
                try:
                    item = self._read()
                except SourceExhausted:
                    item, self._ended = None, True
                ticket = self._issued
                self._issued += 1
            if item is None and not self._ended:
                self._pass(ticket, None, skip=True)  # nothing within the read timeout
                continue
            ready = None if item is None else self._prepared(item)
            self._pass(ticket, ready, skip=item is not None and ready is None)

    def _prepared(self, item: Item) -> Ready | None:
        tensor = self._prepare(item)
        return None if tensor is None else (item, tensor)

    def _pass(self, ticket: int, ready: Ready | None, *, skip: bool) -> None:
        """Wait for this ticket's turn, hand the frame (or the end) over, next turn."""
        with self._turn:
            while self._next != ticket:
                if self._stop.is_set():
                    return
                self._turn.wait(0.5)
            if not skip:
                while not self._stop.is_set():
                    try:
                        self._handoff.put(ready, timeout=0.5)
                        break
                    except queue.Full:
                        continue
            self._next += 1
            self._turn.notify_all()

"""Decode-ahead keeps the camera's order however the decoders race."""

from __future__ import annotations

import queue
import random
import threading
import time

import numpy as np
import pytest

from edge_agent.pipeline.decode_ahead import END, DecodeAhead
from edge_agent.sources.base import Frame, Item, SourceExhausted


class Counting:
    """A finite source of `count` frames whose data is their index; some reads time out."""

    def __init__(self, count: int) -> None:
        self.count, self.next = count, 0

    def read(self) -> Item | None:
        if self.next >= self.count:
            raise SourceExhausted
        if random.random() < 0.1:
            return None  # nothing arrived within the read timeout
        self.next += 1
        return Frame(str(self.next - 1).encode(), "test", 0.0)


def slow_prepare(item: Item) -> np.ndarray | None:
    assert isinstance(item, Frame)
    time.sleep(random.uniform(0, 0.003))
    index = int(item.data)
    return None if index % 7 == 3 else np.array([index])  # every 7th is a bad frame


def collect(ahead: DecodeAhead) -> list[int]:
    seen: list[int] = []
    while True:
        try:
            ready = ahead.take(timeout=5)
        except queue.Empty:
            pytest.fail("decode-ahead stalled")
        if ready is END:
            return seen
        seen.append(int(ready[1][0]))


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_frames_come_out_in_source_order_without_the_bad_ones(workers: int) -> None:
    random.seed(workers)
    ahead = DecodeAhead(Counting(300).read, slow_prepare, workers=workers)
    stop = threading.Event()
    ahead.start(stop)
    try:
        assert collect(ahead) == [i for i in range(300) if i % 7 != 3]
    finally:
        stop.set()
        ahead.join(5)


def test_stop_ends_the_workers_even_when_nobody_takes() -> None:
    ahead = DecodeAhead(Counting(10_000).read, lambda item: np.zeros(1), workers=3)
    stop = threading.Event()
    ahead.start(stop)
    time.sleep(0.2)  # the hand-over is full, the workers wait
    stop.set()
    ahead.join(3)
    assert not any(t.is_alive() for t in ahead._threads)


@pytest.mark.parametrize(("first", "then"), [(1, 3), (3, 1), (2, 2)])
def test_resizing_the_decoders_keeps_the_order(first: int, then: int) -> None:
    source = Counting(300)
    stop = threading.Event()
    decoded_by: dict[int, str] = {}

    def prepare(item: Item) -> np.ndarray | None:
        assert isinstance(item, Frame)
        decoded_by[int(item.data)] = threading.current_thread().name
        return slow_prepare(item)

    ahead = DecodeAhead(source.read, prepare, workers=first)
    ahead.start(stop)
    seen = [int(ahead.take(timeout=5)[1][0]) for _ in range(20)]  # type: ignore[index]
    ahead.resize(then)
    seen += collect(ahead)
    stop.set()
    ahead.join(5)
    assert seen == [i for i in range(300) if i % 7 != 3]
    late = {decoded_by[i] for i in range(200, 300)}  # long after the resize
    assert late == {f"decode-{i}" for i in range(then)}
    assert sum(t.is_alive() for t in ahead._threads) == 0

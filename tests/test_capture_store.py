"""The sample store and its writer: atomic samples, quota and age eviction (oldest
first), a bounded queue that drops and counts, inputs encoded as they came."""

from __future__ import annotations

import json
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from edge_agent.capture.store import Sample, SampleStore, StoreOptions, new_stem
from edge_agent.capture.writer import CaptureWriter, Pending
from edge_agent.sources.base import Audio, Frame, Window

from .conftest import DEMO_MODELS

NOW = time.time()  # samples older than the age limit (30 days) would be evicted
JPEG = (DEMO_MODELS / "samples" / "camera" / "frame_015.jpg").read_bytes()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sample(epoch: float, size: int = 1000) -> Sample:
    return Sample(new_stem(epoch, "cam"), b"x" * size, ".jpg", {"pipeline": "cam"})


def test_samples_are_written_as_input_plus_sidecar(tmp_path: Path) -> None:
    store = SampleStore(StoreOptions(tmp_path))
    store.save(Sample(new_stem(NOW, "cam"), JPEG, ".jpg", {"why": ["random"]}))
    (entry,) = store.entries()
    assert entry.input is not None
    assert entry.input.read_bytes() == JPEG
    assert json.loads(entry.sidecar.read_bytes()) == {"why": ["random"]}
    assert not list(tmp_path.glob(".*"))  # no temp file left


def test_quota_evicts_the_oldest_first(tmp_path: Path) -> None:
    clock = Clock(10_000.0)
    store = SampleStore(StoreOptions(tmp_path, quota_bytes=3_500), clock=clock)
    stems = []
    for i in range(5):
        s = sample(10_000.0 + i)
        stems.append(s.stem)
        store.save(s)
    kept = [e.stem for e in store.entries()]
    sidecar = len(b'{"pipeline":"cam"}')
    assert kept == stems[-3:]  # 3 x 1018 bytes fit in 3500, 4 do not
    assert store.bytes == 3 * (1000 + sidecar) <= 3_500
    assert store.evicted == 2


def test_age_limit_evicts_what_is_too_old(tmp_path: Path) -> None:
    clock = Clock(1_000.0)
    store = SampleStore(StoreOptions(tmp_path, max_age=100.0), clock=clock)
    old, new = sample(950.0), sample(990.0)
    store.save(old)
    store.save(new)
    assert len(store) == 2
    clock.now = 1_060.0  # old is 110 s old, new 70 s
    assert store.evict() == 1
    assert [e.stem for e in store.entries()] == [new.stem]


def test_a_restarted_store_sees_what_is_there_and_cleans_temp_files(tmp_path: Path) -> None:
    first = SampleStore(StoreOptions(tmp_path))
    first.save(sample(NOW))
    (tmp_path / ".half.jpg.tmp").write_bytes(b"cut short")
    again = SampleStore(StoreOptions(tmp_path))
    assert len(again) == 1
    assert again.bytes == first.bytes
    assert not (tmp_path / ".half.jpg.tmp").exists()


def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    writer = CaptureWriter(SampleStore(StoreOptions(tmp_path)), capacity=2)
    frame = Frame(JPEG, "test", NOW)
    results = [writer.offer(Pending("cam", frame, {})) for _ in range(5)]
    assert results == [True, True, False, False, False]
    assert writer.counts["cam"].dropped == 3
    stop = threading.Event()
    stop.set()
    writer.run(stop)  # stopped: still drains what was queued
    assert writer.counts["cam"].kept == 2
    assert writer.queued == 0
    assert len(writer.store) == 2


def test_inputs_are_kept_as_they_came(tmp_path: Path) -> None:
    writer = CaptureWriter(SampleStore(StoreOptions(tmp_path)))
    window = Window(np.array([[0.5, -1.0], [2.25, 3.0]], dtype=np.float32), "s", NOW)
    pcm = np.array([0, 1000, -1000, 32767], dtype=np.int16)
    audio = Audio(pcm, 16_000, 0, 0, "a", NOW)
    for item in (Frame(JPEG, "f", NOW), window, audio):
        writer.write(Pending("p", item, {"k": 1}))
    by_suffix = {e.input.suffix: e for e in writer.store.entries() if e.input is not None}
    assert set(by_suffix) == {".jpg", ".csv", ".wav"}
    assert by_suffix[".jpg"].input.read_bytes() == JPEG  # type: ignore[union-attr]
    rows = np.loadtxt(by_suffix[".csv"].input, delimiter=",")  # type: ignore[arg-type]
    assert rows.tolist() == [[0.5, -1.0], [2.25, 3.0]]
    with wave.open(str(by_suffix[".wav"].input), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (16_000, 1)
        assert np.frombuffer(wav.readframes(4), dtype="<i2").tolist() == pcm.tolist()
    sidecar = json.loads(by_suffix[".csv"].sidecar.read_bytes())
    assert sidecar == {"k": 1, "input": by_suffix[".csv"].input.name}  # type: ignore[union-attr]


def test_bad_store_options() -> None:
    with pytest.raises(ValueError, match="positive"):
        StoreOptions(Path("x"), quota_bytes=0)

"""Audio sources: WAV replay, and raw PCM from a real command that stops, restarts and
writes partial frames; endless and silent streams stay bounded."""

from __future__ import annotations

import logging
import shutil
import sys
import time
import tracemalloc
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import ConfigError
from edge_agent.pipeline.audio.listener import ListenerOptions, build_listener
from edge_agent.sources.audio.streams import CommandPcmSource, WavFilesSource
from edge_agent.sources.base import Audio, SourceExhausted

from .conftest import FIXTURES

AUDIO = FIXTURES / "audio"


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def drain(source: WavFilesSource) -> list[Audio]:
    chunks: list[Audio] = []
    while True:
        try:
            chunk = source.read(timeout=1.0)
        except SourceExhausted:
            return chunks
        if chunk is not None:
            chunks.append(chunk)


def wav_samples(path: Path) -> np.ndarray:
    with wave.open(str(path)) as reader:
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")


def test_wav_files_are_replayed_whole_one_stream_each(tmp_path: Path) -> None:
    for name in ("okay_nabu_2.wav", "computer.wav"):
        shutil.copy(AUDIO / name, tmp_path / name)
    (tmp_path / "zz_broken.wav").write_bytes(b"RIFF junk")
    source = WavFilesSource("mic", pattern=str(tmp_path / "*.wav"), chunk_ms=100)
    chunks = drain(source)
    streams = sorted({c.stream for c in chunks}, key=[c.stream for c in chunks].index)
    assert len(streams) == 2
    for stream, name in zip(streams, ("computer.wav", "okay_nabu_2.wav"), strict=True):
        mine = [c for c in chunks if c.stream == stream]
        assert {c.origin for c in mine} == {str(tmp_path / name)}
        assert [c.offset for c in mine] == list(range(0, mine[-1].offset + 1, 1600))
        assert all(c.values.size == 1600 for c in mine[:-1])
        np.testing.assert_array_equal(
            np.concatenate([c.values for c in mine]), wav_samples(AUDIO / name)
        )
    sizes = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert source.stats.bytes_in == sizes  # every byte read, the broken file's too
    assert source.stats.errors == 1
    assert source.stats.read == len(chunks)


def test_a_looping_wav_source_starts_new_streams_and_skips_bad_files(tmp_path: Path) -> None:
    shutil.copy(AUDIO / "okay_nabu_2.wav", tmp_path / "a.wav")
    (tmp_path / "b.wav").write_bytes(b"nope")
    source = WavFilesSource("mic", pattern=str(tmp_path / "*.wav"), loop=True, chunk_ms=1000)
    seen = [source.read(timeout=1.0) for _ in range(6)]  # 2 chunks per pass
    streams = [c.stream for c in seen if c is not None]
    assert len(streams) == 6
    assert len(set(streams)) == 3
    assert source.stats.errors == 1  # refused once, not on every pass
    source.close()
    with pytest.raises(SourceExhausted):
        source.read(timeout=0.1)


def test_realtime_pacing_holds_chunks_back_until_due(tmp_path: Path) -> None:
    shutil.copy(AUDIO / "okay_nabu_2.wav", tmp_path / "a.wav")
    source = WavFilesSource("mic", pattern=str(tmp_path / "a.wav"), realtime=True, chunk_ms=500)
    first = source.read(timeout=5.0)
    assert first is not None
    assert source.read(timeout=0.0) is None  # the next half second has not been "heard" yet
    second = source.read(timeout=5.0)
    assert second is not None
    assert second.offset == 8000  # the held chunk, not a skipped one


def test_bad_chunk_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="multiple of 10"):
        WavFilesSource("mic", pattern="*.wav", chunk_ms=15)


# --- raw PCM from a command ---------------------------------------------------------

# Writes runs of a ramp as S16_LE in awkward pieces (3, 5, 7... bytes: samples split
# across writes), then an odd trailing byte, says why on stderr and exits: the source
# restarts it. The ramp continues across runs, so every run's samples are known.
WRITER = r"""
import os, sys
run_file = sys.argv[1]
run = int(open(run_file).read() or 0) if os.path.exists(run_file) else 0
open(run_file, "w").write(str(run + 1))
samples = [(run * 10000 + i) % 32768 for i in range(2500)]
data = b"".join(s.to_bytes(2, "little", signed=True) for s in samples) + b"\x7f"
out, pos, size = sys.stdout.buffer, 0, 3
while pos < len(data):
    out.write(data[pos:pos + size]); out.flush()
    pos += size; size = size % 11 + 2
sys.stderr.write(f"run {run}: device unplugged\n")
sys.exit(3)
"""


def expected_run(run: int) -> np.ndarray:
    return np.array([(run * 10000 + i) % 32768 for i in range(2500)], dtype=np.int16)


@pytest.mark.integration
def test_command_source_restarts_and_reassembles_partial_frames(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    command = [sys.executable, str(script), str(tmp_path / "runs")]
    caplog.set_level(logging.WARNING)
    source = CommandPcmSource("mic", command=command, chunk_ms=50)
    chunks: list[Audio] = []
    try:
        while len({c.stream for c in chunks}) < 3:
            chunk = source.read(timeout=10.0)
            assert chunk is not None, "no audio within 10 s"
            chunks.append(chunk)
    finally:
        source.close()
    streams = list(dict.fromkeys(c.stream for c in chunks))
    for run, stream in enumerate(streams[:2]):  # the first two runs are complete
        mine = [c for c in chunks if c.stream == stream]
        assert [c.values.size for c in mine] == [800, 800, 800, 100]  # the tail, whole samples
        assert [c.offset for c in mine] == [0, 800, 1600, 2400]
        np.testing.assert_array_equal(np.concatenate([c.values for c in mine]), expected_run(run))
    assert source.stats.bytes_in >= 2 * 5001
    assert source.stats.errors >= 2  # each exit counted
    assert "exited with 3: last stderr line 'run 0: device unplugged'" in caplog.text


@pytest.mark.integration
def test_command_that_cannot_start_is_retried_not_raised() -> None:
    source = CommandPcmSource("mic", command=["/nonexistent/arecord"])
    try:
        assert source.read(timeout=0.2) is None
        wait_for(lambda: source.stats.errors >= 1)
    finally:
        source.close()
    with pytest.raises(SourceExhausted):
        source.read(timeout=0.1)


ENDLESS = r"""
import sys
silence = bytes(3200)
while True:
    sys.stdout.buffer.write(silence)
"""


@pytest.mark.integration
@pytest.mark.runtime
def test_endless_silence_is_heard_without_events_or_growing_memory(
    tmp_path: Path, runtime_name: str
) -> None:
    script = tmp_path / "endless.py"
    script.write_text(ENDLESS)
    listener = build_listener(AUDIO / "okay_nabu.json", ListenerOptions(runtime=runtime_name))  # type: ignore[arg-type]
    source = CommandPcmSource("mic", command=[sys.executable, str(script)], queue_chunks=8)
    try:
        wait_for(lambda: source.stats.dropped > 0)  # nobody read: the queue stays at 8 chunks
        events = 0

        def listen(chunks: int) -> None:
            nonlocal events
            for _ in range(chunks):
                chunk = source.read(timeout=10.0)
                assert chunk is not None
                events += sum(h.event is not None for h in listener.hear(chunk))

        listen(200)  # warm up: buffers, the interpreter, the logging machinery
        tracemalloc.start()
        listen(100)
        early, _ = tracemalloc.get_traced_memory()
        listen(600)  # 60 s of audio
        late, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        source.close()
    assert events == 0
    assert late - early < 64 * 1024  # flat: nothing accumulates per chunk
    assert source.stats.errors == 0

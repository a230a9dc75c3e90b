"""Interpreter workers: results reach the policy in frame order, whatever order the
workers finish in; several workers decide what one does; a hot swap lands on every
worker; a failing worker costs its frame, not the pipeline."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.app import wiring
from edge_agent.config.settings import load_settings
from edge_agent.model.runtime import Model
from edge_agent.mqtt.outbox import NewEvent, Outbox
from edge_agent.mqtt.payloads import ModelInfo
from edge_agent.pipeline.runner import Pipeline
from edge_agent.pipeline.workers import ReorderBuffer

from .conftest import DEMO_MODELS

SHAPES = DEMO_MODELS / "shapes_int8.tflite"
FRAMES = DEMO_MODELS / "samples" / "camera"


# -- the reorder buffer (pure) ---------------------------------------------------------------


def test_results_in_order_pass_straight_through() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer()
    assert [buffer.put(i, f"r{i}") for i in range(3)] == [["r0"], ["r1"], ["r2"]]
    assert buffer.next == 3
    assert buffer.waiting == 0


def test_a_later_frame_waits_for_the_older_one() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer()
    assert buffer.put(1, "r1") == []
    assert buffer.put(2, "r2") == []
    assert buffer.waiting == 2
    assert buffer.put(0, "r0") == ["r0", "r1", "r2"]
    assert buffer.next == 3


def test_a_frame_without_result_releases_the_ones_behind_it() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer()
    assert buffer.put(1, "r1") == []
    assert buffer.put(0, None) == ["r1"]  # frame 0 failed: nothing for it, frame 1 goes
    assert buffer.next == 2


def test_any_arrival_order_gives_frame_order() -> None:
    rng = np.random.default_rng(7)
    order = rng.permutation(200)
    buffer: ReorderBuffer[int] = ReorderBuffer()
    out: list[int] = []
    for number in order:
        out += buffer.put(int(number), None if number % 13 == 5 else int(number))
    assert out == [n for n in range(200) if n % 13 != 5]


def test_a_frame_filed_twice_is_refused() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer()
    buffer.put(0, "r0")
    buffer.put(2, "r2")
    with pytest.raises(ValueError, match="frame 0"):
        buffer.put(0, "again")
    with pytest.raises(ValueError, match="frame 2"):
        buffer.put(2, "again")


# -- real pipelines on the demo model ----------------------------------------------------------


class NullSink:
    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry: float | None = None,
    ) -> int:
        return 0


class Events:
    """The events a pipeline emits, decoded (their seq is not the point here)."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.changed = threading.Condition()

    def submit(self, event: NewEvent) -> None:
        with self.changed:
            self.payloads.append(json.loads(event.build(0)))
            self.changed.notify_all()

    def decisions(self) -> list[tuple[str, float, str | None]]:
        return [(e["decision"], round(e["score"], 6), e["previous"]) for e in self.payloads]


def camera(
    tmp_path: Path,
    image: dict[str, Any],
    threads: int,
    runtime: str,
    source: dict[str, Any] | None = None,
) -> tuple[Pipeline, Events]:
    config: dict[str, Any] = {
        "device_id": "d",
        "state_dir": str(tmp_path),
        "runtime": {"runtime": runtime, "num_threads": threads},
        "pipelines": [
            {
                "name": "cam",
                "model": str(SHAPES),
                "labels": str(DEMO_MODELS / "shapes_labels.txt"),
                "source": source or {"kind": "files", "pattern": str(FRAMES / "*.jpg")},
                "image": image,
                "policy": {"kind": "classification", "threshold": 0.6, "default_state": "empty"},
            }
        ],
    }
    settings = load_settings(None, config)
    events = Events()
    outbox = Outbox(tmp_path / "outbox.db")
    pipeline = wiring.build_pipeline(
        settings, settings.pipelines[0], sink=NullSink(), outbox=outbox, submit=events.submit
    )
    return pipeline, events


def run_to_end(pipeline: Pipeline) -> None:
    done = threading.Thread(target=pipeline.run, args=(threading.Event(),))
    done.start()
    done.join(60)
    assert not done.is_alive(), "the pipeline did not finish its frames"


@pytest.mark.runtime
@pytest.mark.parametrize(
    ("image", "threads"),
    [({"workers": 2, "decoders": 2}, 1), ({"workers": 3, "decoders": 1}, 1), ({}, 0)],
    ids=["2 workers", "3 workers", "auto"],
)
def test_workers_decide_what_one_interpreter_decides(
    tmp_path: Path, image: dict[str, Any], threads: int, runtime_name: str
) -> None:
    one, one_events = camera(tmp_path / "one", {"workers": 1, "decoders": 1}, 1, runtime_name)
    assert one.crew is None  # everything configured, one worker: the plain path
    run_to_end(one)
    many, many_events = camera(tmp_path / "many", image, threads, runtime_name)
    assert many.crew is not None
    run_to_end(many)
    assert len(one_events.decisions()) >= 4  # the samples change scene 4 times
    assert many_events.decisions() == one_events.decisions()
    assert many.stats.inferences == one.stats.inferences == 40
    assert many.stats.model_errors == 0
    if image:
        assert sum(many.crew.frames) == 40
        assert all(n > 0 for n in many.crew.frames)  # every worker took frames


@pytest.mark.runtime
def test_auto_sizing_reports_its_plan_and_the_numbers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, runtime_name: str
) -> None:
    pipeline, _ = camera(tmp_path, {}, 0, runtime_name)
    with caplog.at_level(logging.INFO, logger="edge_agent.pipeline.autosize"):
        run_to_end(pipeline)
    sizing = pipeline.sizing
    assert sizing is not None
    assert sizing.costs is not None
    assert sizing.costs.invoke_1 > 0
    assert sizing.costs.decode > 0  # measured on the first frames
    crew = pipeline.crew
    assert crew is not None
    assert crew.workers == sizing.plan.workers
    assert {m.num_threads for m in crew.models} == {sizing.plan.threads}
    assert "measured: invoke" in caplog.text
    assert sizing.describe() in caplog.text


def padded(extra: int) -> bytes:
    """shapes_int8 with zero bytes appended: the same network, other bytes."""
    return SHAPES.read_bytes() + b"\0" * extra


@pytest.mark.runtime
def test_a_hot_swap_lands_on_every_worker(tmp_path: Path, runtime_name: str) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(40):
        (frames / f"{i:03d}.jpg").write_bytes((FRAMES / f"frame_{i:03d}.jpg").read_bytes())
    source = {"kind": "files", "pattern": str(frames / "*.jpg"), "loop": True, "fps": 200}
    pipeline, events = camera(tmp_path, {"workers": 2, "decoders": 1}, 1, runtime_name, source)
    crew = pipeline.crew
    assert crew is not None
    stop = threading.Event()
    runner = threading.Thread(target=pipeline.run, args=(stop,))
    runner.start()
    try:
        with events.changed:
            assert events.changed.wait_for(lambda: len(events.payloads) >= 2, 30)
        new = Model.load(padded(64), runtime=pipeline.model.runtime, num_threads=1)  # type: ignore[arg-type]
        pipeline.swap_model(new, ModelInfo("shapes", "2", new.sha256))
        after = list(crew.frames)
        swapped_at = len(events.payloads)
        with events.changed:  # the looping scene changes again: events on the new model
            assert events.changed.wait_for(lambda: len(events.payloads) >= swapped_at + 4, 30)
    finally:
        stop.set()
        runner.join(30)
    assert [m.sha256 for m in crew.models] == [new.sha256, new.sha256]
    assert crew.models[0] is not crew.models[1]  # one interpreter each
    assert all(now > before for now, before in zip(crew.frames, after, strict=True))
    assert {e["model"]["version"] for e in events.payloads[swapped_at:]} == {"2"}
    assert pipeline.model_info.version == "2"
    assert pipeline.stats.model_errors == 0


class Broken(Exception):
    """What a bug inside one worker's inference raises."""


@pytest.mark.runtime
def test_a_failing_worker_costs_its_frame_not_the_pipeline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, runtime_name: str
) -> None:
    pipeline, events = camera(tmp_path, {"workers": 2, "decoders": 1}, 1, runtime_name)
    crew = pipeline.crew
    assert crew is not None

    def boom(*_inputs: np.ndarray) -> list[np.ndarray]:
        raise Broken("injected")

    crew.models[1].infer = boom  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        run_to_end(pipeline)
    assert "interpreter worker 1 failed" in caplog.text
    assert crew.lost == 1
    assert pipeline.stats.model_errors == 1
    assert pipeline.stats.inferences == 39  # worker 0 ran every other frame
    assert len(events.decisions()) >= 4


@pytest.mark.runtime
def test_when_every_worker_fails_the_pipeline_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, runtime_name: str
) -> None:
    pipeline, _ = camera(tmp_path, {"workers": 2, "decoders": 1}, 1, runtime_name)
    crew = pipeline.crew
    assert crew is not None

    def boom(*_inputs: np.ndarray) -> list[np.ndarray]:
        raise Broken("injected")

    for model in crew.models:
        model.infer = boom  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        run_to_end(pipeline)
    assert "every interpreter worker failed" in caplog.text
    assert crew.lost == 2
    assert pipeline.stats.model_errors == 2
    assert pipeline.stats.inferences == 0

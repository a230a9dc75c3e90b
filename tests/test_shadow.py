"""Shadow models on real models: the agreement rate is what independent inference
says it should be; a shadow that errors is dropped and says why."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.capture.shadow import ShadowJob, ShadowOptions, ShadowRunner, Top1, top1
from edge_agent.model.labels import read_labels
from edge_agent.model.preprocess import ImagePreprocessor
from edge_agent.model.runtime import Model
from edge_agent.sources.base import Frame, Item

from .conftest import DEMO_MODELS, IMAGENET_LABELS, MOBILENET

pytestmark = pytest.mark.runtime

SHAPES = DEMO_MODELS / "shapes_int8.tflite"
FRAMES = sorted((DEMO_MODELS / "samples" / "camera").glob("*.jpg"))


def load(path: Path, runtime_name: str) -> Model:
    return Model.load(path, runtime=runtime_name, num_threads=1)  # type: ignore[arg-type]


def preparer(model: Model) -> Any:
    image = ImagePreprocessor(model.inputs[0])
    return lambda item: image.prepare(item.data)


def serve(model: Model, labels: list[str], frame: Path) -> ShadowJob:
    data = frame.read_bytes()
    scores = model.infer(preparer(model)(Frame(data, str(frame), 0.0)))[0]
    return ShadowJob(Frame(data, str(frame), 0.0), top1(scores, labels), 1.0)


def test_agreement_is_counted_by_label_on_known_inputs(runtime_name: str, tmp_path: Path) -> None:
    """The shadow is the serving model with `circle` and `square` swapped in its labels:
    it agrees exactly on the frames whose top-1 is `empty`."""
    labels = read_labels(DEMO_MODELS / "shapes_labels.txt")
    swapped = [{"circle": "square", "square": "circle"}.get(x, x) for x in labels]
    serving, candidate = load(SHAPES, runtime_name), load(SHAPES, runtime_name)
    disagreements: list[tuple[str, str]] = []
    shadow = ShadowRunner(
        candidate,
        labels=swapped,
        prepare=preparer(candidate),
        options=ShadowOptions(every=1),
        publish=lambda _r: None,
        on_disagree=lambda job, theirs: disagreements.append((job.serving.label, theirs.label)),
    )
    jobs = [serve(serving, labels, f) for f in FRAMES]
    for job in jobs:
        shadow.compare(job)
    empties = sum(job.serving.label == "empty" for job in jobs)
    assert 0 < empties < len(jobs)  # the clip has both: the rate is not trivially 0 or 1
    report = shadow.report()
    assert report["compared"] == len(FRAMES)
    assert report["agreement"] == round(empties / len(FRAMES), 4)
    assert sorted(set(disagreements)) == [("circle", "square"), ("square", "circle")]
    assert len(disagreements) == len(jobs) - empties
    mean = sum(j.serving.score for j in jobs) / len(jobs)
    assert report["confidence"]["serving"] == pytest.approx(mean, abs=1e-4)
    # the same model on the same inputs: the same confidence
    assert report["confidence"]["shadow"] == pytest.approx(mean, abs=1e-4)
    assert report["latency_ms"]["shadow"] > 0
    assert (report["state"], report["errors"]) == ("running", 0)


def test_models_with_other_labels_compare_by_name(runtime_name: str) -> None:
    """MobileNet (ImageNet) serving, the shapes model in shadow: no label in common."""
    serving, candidate = load(MOBILENET, runtime_name), load(SHAPES, runtime_name)
    shadow = ShadowRunner(
        candidate,
        labels=read_labels(DEMO_MODELS / "shapes_labels.txt"),
        prepare=preparer(candidate),
        options=ShadowOptions(every=1),
        publish=lambda _r: None,
    )
    imagenet = read_labels(IMAGENET_LABELS)[1:]  # the file starts with `background`
    for frame in FRAMES[:5]:
        shadow.compare(serve(serving, imagenet, frame))
    assert shadow.report()["compared"] == 5
    assert shadow.report()["agreement"] == 0.0


def test_a_shadow_that_errors_is_dropped_with_its_reason(runtime_name: str) -> None:
    """An input the shadow cannot take (here: 7 values for an image model)."""
    candidate = load(SHAPES, runtime_name)
    reports: list[dict[str, Any]] = []

    def zeros(_item: Item) -> np.ndarray:
        return np.zeros(7, dtype=np.float32)

    shadow = ShadowRunner(
        candidate,
        labels=None,
        prepare=zeros,
        options=ShadowOptions(every=1),
        publish=reports.append,
    )
    job = ShadowJob(Frame(b"", "x", 0.0), Top1("a", 0.9), 1.0)
    shadow.compare(job)
    assert shadow.dropped is not None
    assert "InputError" in shadow.dropped
    assert "needs shape" in shadow.dropped
    assert reports[-1]["state"] == "dropped"
    assert reports[-1]["reason"] == shadow.dropped
    assert not shadow.due()  # dropped: never offered work again


def test_the_thread_compares_one_in_n_and_reports_periodically(runtime_name: str) -> None:
    labels = read_labels(DEMO_MODELS / "shapes_labels.txt")
    serving, candidate = load(SHAPES, runtime_name), load(SHAPES, runtime_name)
    reports: list[dict[str, Any]] = []
    shadow = ShadowRunner(
        candidate,
        labels=labels,
        prepare=preparer(candidate),
        options=ShadowOptions(every=4, queue=100, report_interval=1.0),
        publish=reports.append,
    )
    stop = threading.Event()
    thread = threading.Thread(target=shadow.run, args=(stop,))
    thread.start()
    try:
        for frame in FRAMES:  # 40 inputs, 1 in 4 due
            if shadow.due():
                shadow.offer(serve(serving, labels, frame))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (reports and reports[-1]["compared"] == 10):
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert reports[-1]["compared"] == 10
    assert reports[-1]["agreement"] == 1.0  # the same model and labels

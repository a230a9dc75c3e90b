"""Shared test fixtures: where the real models live, and which runtime to test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .broker import Mosquitto

PROJECT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("EDGE_AGENT_FIXTURES", PROJECT / "tests" / "fixtures"))
FIXTURE_MODELS = FIXTURES / "models"
FIXTURE_IMAGES = FIXTURES / "images"
DEMO_MODELS = PROJECT / "models"

MOBILENET = FIXTURE_MODELS / "mobilenet_v1_0.25_128_quant.tflite"
IMAGENET_LABELS = FIXTURE_MODELS / "imagenet_labels.txt"
HELLO_WORLD = FIXTURE_MODELS / "hello_world_int8.tflite"
LSTM = FIXTURE_MODELS / "keras_lstm_mnist_ptq.tflite"
BROKEN = FIXTURE_MODELS / "model_invoking_error.tflite"


def pytest_configure(config: pytest.Config) -> None:
    if not MOBILENET.is_file():
        raise pytest.UsageError(
            f"the test fixtures are missing at {FIXTURES}; set EDGE_AGENT_FIXTURES"
        )


@pytest.fixture(scope="session")
def runtime_name() -> str:
    """The backend under test: CI runs the runtime tests once per backend."""
    return os.environ.get("EDGE_AGENT_TEST_RUNTIME", "auto")


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A fresh mosquitto on a free port, stopped after the test."""
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    server.start()
    yield server
    server.stop()

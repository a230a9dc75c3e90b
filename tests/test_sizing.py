"""Thread sizing: what auto (0) means for each kind of pipeline, and that counts given are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_agent.app import wiring
from edge_agent.config.settings import load_settings
from edge_agent.model.runtime import default_threads
from edge_agent.model.sizing import SMALL_MODEL_BYTES, ThreadPlan, plan_threads

BIG = 4 * SMALL_MODEL_BYTES
SMALL = SMALL_MODEL_BYTES // 10


@pytest.mark.parametrize(
    ("cores", "expected"),
    [(1, ThreadPlan(1, 1)), (2, ThreadPlan(1, 1)), (4, ThreadPlan(3, 1)), (8, ThreadPlan(6, 2))],
)
def test_camera_decoders_and_interpreter_share_the_cores(cores: int, expected: ThreadPlan) -> None:
    assert plan_threads(cores, camera=True, model_bytes=BIG) == expected


def test_a_small_model_gets_one_thread_whatever_the_pipeline() -> None:
    assert plan_threads(8, camera=False, model_bytes=SMALL) == ThreadPlan(1, 0)
    assert plan_threads(8, camera=True, model_bytes=SMALL) == ThreadPlan(1, 2)


def test_a_big_sensor_model_gets_every_core() -> None:
    assert plan_threads(4, camera=False, model_bytes=BIG) == ThreadPlan(4, 0)


def test_counts_given_are_kept() -> None:
    plan = plan_threads(2, camera=True, model_bytes=BIG, interpreter=2, decoders=3)
    assert plan == ThreadPlan(2, 3)
    assert plan_threads(2, camera=True, model_bytes=BIG, decoders=2) == ThreadPlan(1, 2)
    assert plan_threads(4, camera=False, model_bytes=SMALL, interpreter=3).interpreter == 3


def test_no_cores_reported_still_means_one_thread() -> None:
    assert plan_threads(0, camera=True, model_bytes=BIG) == ThreadPlan(1, 1)


def test_wiring_plans_from_the_settings_and_the_model_file(tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0" * BIG)
    camera = {"kind": "files", "pattern": str(tmp_path / "*.jpg")}
    config: dict[str, Any] = {"device_id": "d", "state_dir": str(tmp_path)}
    config |= {
        "pipelines": [
            {
                "name": "cam",
                "model": str(model),
                "source": camera,
                "policy": {"kind": "classification"},
            }
        ]
    }
    settings = load_settings(None, config)
    auto = wiring.thread_plan(settings, settings.pipelines[0], model)
    assert auto == plan_threads(default_threads(), camera=True, model_bytes=BIG)
    config |= {"runtime": {"num_threads": 3}}
    config["pipelines"][0]["image"] = {"decoders": 2}
    settings = load_settings(None, config)
    assert wiring.thread_plan(settings, settings.pipelines[0], model) == ThreadPlan(3, 2)

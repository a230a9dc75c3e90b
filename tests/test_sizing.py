"""Thread sizing: what auto (0) means for each kind of pipeline, measured sizing from
(made-up) costs, and that counts given are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_agent.app import wiring
from edge_agent.config.settings import load_settings
from edge_agent.model.runtime import default_threads
from edge_agent.model.sizing import (
    MAX_WORKERS,
    SMALL_MODEL_BYTES,
    Costs,
    ThreadPlan,
    core_budget,
    plan_threads,
    plan_workers,
)
from edge_agent.pipeline.autosize import WorkerOptions

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
    sensor: dict[str, Any] = {"kind": "lines", "path": str(tmp_path / "x.csv")}
    sensor |= {"window": {"size": 4, "hop": 4, "channels": 1}}
    config: dict[str, Any] = {"device_id": "d", "state_dir": str(tmp_path)}
    config |= {
        "pipelines": [
            {
                "name": "cam",
                "model": str(model),
                "source": camera,
                "policy": {"kind": "classification"},
            },
            {
                "name": "vib",
                "model": str(model),
                "model_name": "vib",
                "source": sensor,
                "policy": {"kind": "classification"},
            },
        ]
    }
    settings = load_settings(None, config)
    cam, vib = settings.pipelines
    # A camera pipeline on auto loads its model on one thread and sizes itself running.
    assert wiring.thread_plan(settings, cam, model) == ThreadPlan(1, 1)
    assert wiring.worker_options(settings, cam) == WorkerOptions(0, 0, 0, default_threads())
    assert wiring.thread_plan(settings, vib, model) == plan_threads(
        default_threads(), camera=False, model_bytes=BIG
    )
    assert wiring.worker_options(settings, vib) is None
    config |= {"runtime": {"num_threads": 3}}
    config["pipelines"][0]["image"] = {"decoders": 2, "workers": 1}
    settings = load_settings(None, config)
    assert wiring.thread_plan(settings, settings.pipelines[0], model) == ThreadPlan(3, 2)
    assert wiring.worker_options(settings, settings.pipelines[0]) is None  # all configured


def test_camera_pipelines_split_the_cores(tmp_path: Path) -> None:
    camera = {"kind": "files", "pattern": str(tmp_path / "*.jpg")}
    pipelines = [
        {
            "name": f"cam{i}",
            "model": str(tmp_path / "m.tflite"),
            "model_name": f"m{i}",
            "source": camera,
            "policy": {"kind": "classification"},
        }
        for i in range(3)
    ]
    settings = load_settings(None, {"device_id": "d", "pipelines": pipelines})
    budgets = {wiring.worker_options(settings, p).budget for p in settings.pipelines}  # type: ignore[union-attr]
    assert budgets == {default_threads() / 3}
    assert core_budget(4, 2) == 2.0
    assert core_budget(0, 0) == 1.0


# -- measured sizing (pure, with made-up costs) ------------------------------------------------

MS = 1e-3


def costs(invoke: float, wide: float, decode: float, threads: int = 2) -> Costs:
    """`invoke` ms on one thread, `wide` ms on `threads`, `decode` ms per frame."""
    return Costs(invoke * MS, invoke * MS, wide * MS, threads, decode * MS)


def test_a_model_that_does_not_speed_up_with_threads_gets_workers() -> None:
    # The uint8 MobileNetV2 on 2 cores: 7.3 ms on 1 thread, 8.0 on 2, decode 3.9.
    plan = plan_workers(costs(7.3, 8.0, 3.9), budget=2)
    assert (plan.workers, plan.threads, plan.decoders) == (2, 1, 1)
    assert not plan.scales
    assert plan.infer_share == pytest.approx(2 * 7.3 / 11.2)
    assert plan.infer_share + plan.decode_share == pytest.approx(2)


def test_a_model_that_scales_gets_threads() -> None:
    plan = plan_workers(costs(8.0, 4.4, 2.0), budget=2)  # 1.8x on 2 threads
    assert plan.scales
    assert (plan.workers, plan.threads, plan.decoders) == (1, 2, 1)


def test_scaling_below_the_efficiency_bar_means_workers() -> None:
    # 4.3 ms -> 2.73 ms on 2 threads is 1.58x: 21% more CPU per frame on threads.
    plan = plan_workers(costs(4.3, 2.73, 2.0), budget=2)
    assert (plan.workers, plan.threads) == (2, 1)


def test_cores_for_decoding_follow_its_cost() -> None:
    # A tiny model and 1080p frames: decoding is nearly all the work.
    plan = plan_workers(costs(0.5, 0.6, 6.0), budget=2)
    assert (plan.workers, plan.threads, plan.decoders) == (1, 1, 2)
    plan = plan_workers(costs(0.5, 0.6, 6.0, threads=4), budget=4)
    assert (plan.workers, plan.decoders) == (1, 4)
    # A large model and small frames: one decoder, the rest inference.
    plan = plan_workers(costs(30.0, 31.0, 2.0, threads=4), budget=4)
    assert (plan.workers, plan.threads, plan.decoders) == (4, 1, 1)


def test_a_share_just_above_a_whole_core_does_not_take_another() -> None:
    # Inference needs 1.0955 cores: one worker still reaches 91% of the limit.
    plan = plan_workers(costs(4.3, 4.0, 3.55), budget=2)
    assert plan.workers == 1
    plan = plan_workers(costs(4.3, 4.0, 3.0), budget=2)  # 1.18 cores: one more
    assert plan.workers == 2


def test_a_shared_budget_of_one_core_means_one_of_each() -> None:
    plan = plan_workers(costs(7.3, 0.0, 3.9, threads=1), budget=1)
    assert (plan.workers, plan.threads, plan.decoders) == (1, 1, 1)
    assert plan.budget == 1.0


def test_configured_counts_are_kept() -> None:
    plan = plan_workers(costs(7.3, 8.0, 3.9), budget=2, workers=3, decoders=2)
    assert (plan.workers, plan.threads, plan.decoders) == (3, 1, 2)
    plan = plan_workers(costs(8.0, 4.4, 2.0), budget=2, threads=1)
    assert (plan.workers, plan.threads) == (2, 1)
    plan = plan_workers(costs(7.3, 8.0, 3.9), budget=2, workers=2, threads=2)
    assert (plan.workers, plan.threads) == (2, 2)


def test_no_decode_cost_yet_means_one_decoder() -> None:
    plan = plan_workers(costs(7.3, 8.0, 0.0), budget=2)
    assert plan.decoders == 1
    assert plan.workers == 2  # all the budget is inference until decoding is measured


def test_workers_are_capped() -> None:
    plan = plan_workers(costs(50.0, 60.0, 0.1, threads=64), budget=64)
    assert plan.workers == MAX_WORKERS

"""`edge-agent bench` on this machine: it runs and reports positive numbers.

No timing is asserted: the machine is shared, and the numbers are the point of
the command, not of the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from edge_agent.devtools.measure import LoopStats, cpu_bound_limit, make_frames

pytestmark = pytest.mark.integration


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "bench", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bench_reports_positive_numbers() -> None:
    child = bench("--seconds", "1", "--json")
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    base, pipeline, paced = report["base"], report["pipeline"], report["paced"]
    figures = {
        "invoke fps, 1 thread": base["invoke_1"]["fps"],
        "invoke p50, 1 thread": base["invoke_1"]["p50_ms"],
        "CPU per invoke, 1 thread": base["invoke_1"]["cpu_ms"],
        "CPU per invoke, every core": base["invoke_all"]["cpu_ms"],
        "CPU per decode": base["decode"]["cpu_ms"],
        "CPU-bound limit": report["limit_fps"],
        "pipeline fps": pipeline["fps"],
        "pipeline p50": pipeline["p50_ms"],
        "pipeline CPU%": pipeline["cpu_percent"],
        "peak RSS": pipeline["peak_rss_mb"],
        "pipeline / limit": report["pipeline_vs_limit"],
        "paced p50": paced["run"]["p50_ms"],
        "paced p50 ratio": paced["p50_ratio"],
        "paced CPU per frame": paced["cpu_ms_per_frame"],
        "decode + invoke alone": paced["alone_ms"],
    }
    assert {name: value for name, value in figures.items() if not value > 0} == {}
    assert pipeline["items"] > 0
    assert paced["run"]["items"] > 0
    sizing = pipeline["sizing"][0]  # auto: the plan and the measurements behind it
    assert sizing["workers"] >= 1
    assert sizing["costs"]["decode"] > 0
    assert "measured: invoke" in sizing["described"]


def test_frames_that_match_nothing_are_a_usage_error(tmp_path: Path) -> None:
    child = bench("--seconds", "1", "--frames", str(tmp_path / "*.jpg"))
    assert child.returncode == 78
    assert "no file matches" in child.stderr


def test_made_frames_are_720p_jpegs(tmp_path: Path) -> None:
    paths = make_frames(tmp_path, count=2)
    assert [Image.open(p).size for p in paths] == [(1280, 720), (1280, 720)]
    assert all(Image.open(p).format == "JPEG" for p in paths)


def test_the_cpu_bound_limit_is_the_cores_over_the_cpu_per_frame() -> None:
    invoke = LoopStats(items=100, wall=1.0, cpu=0.2, p50_ms=1, p99_ms=2)  # 2 ms CPU
    cheap = LoopStats(items=100, wall=0.1, cpu=0.1, p50_ms=1, p99_ms=1)  # 1 ms CPU
    dear = LoopStats(items=100, wall=3.0, cpu=3.0, p50_ms=30, p99_ms=30)  # 30 ms CPU
    # Not capped by one interpreter's rate (100/s here): workers can run several.
    assert cpu_bound_limit(invoke, cheap, cores=2) == pytest.approx(2 / 0.003)
    assert cpu_bound_limit(invoke, dear, cores=2) == pytest.approx(2 / 0.032)

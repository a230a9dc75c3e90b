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

from edge_agent.devtools.bench import LoopStats, cpu_bound_limit, make_frames

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
    figures = {
        "ceiling fps": report["ceiling"]["fps"],
        "ceiling p50": report["ceiling"]["p50_ms"],
        "ceiling p99": report["ceiling"]["p99_ms"],
        "CPU per invoke": report["ceiling"]["cpu_ms_per_invoke"],
        "CPU per decode": report["decode"]["cpu_ms_per_frame"],
        "CPU-bound limit": report["limit_fps"],
        "pipeline fps": report["pipeline"]["fps"],
        "pipeline p50": report["pipeline"]["p50_ms"],
        "pipeline CPU%": report["pipeline"]["cpu_percent"],
        "peak RSS": report["pipeline"]["peak_rss_mb"],
        "pipeline / limit": report["pipeline_vs_limit"],
        "pipeline / ceiling": report["pipeline_vs_ceiling"],
    }
    assert {name: value for name, value in figures.items() if not value > 0} == {}
    assert report["pipeline"]["items"] > 0


def test_frames_that_match_nothing_are_a_usage_error(tmp_path: Path) -> None:
    child = bench("--seconds", "1", "--frames", str(tmp_path / "*.jpg"))
    assert child.returncode == 78
    assert "no file matches" in child.stderr


def test_made_frames_are_720p_jpegs(tmp_path: Path) -> None:
    paths = make_frames(tmp_path, count=2)
    assert [Image.open(p).size for p in paths] == [(1280, 720), (1280, 720)]
    assert all(Image.open(p).format == "JPEG" for p in paths)


def test_the_cpu_bound_limit_never_exceeds_the_ceiling() -> None:
    ceiling = LoopStats(items=100, wall=1.0, cpu=0.2, p50_ms=1, p99_ms=2)  # 100/s, 2 ms CPU
    cheap = LoopStats(items=100, wall=0.1, cpu=0.1, p50_ms=1, p99_ms=1)  # 1 ms CPU
    dear = LoopStats(items=100, wall=3.0, cpu=3.0, p50_ms=30, p99_ms=30)  # 30 ms CPU
    assert cpu_bound_limit(ceiling, cheap, cores=2) == 100.0
    assert cpu_bound_limit(ceiling, dear, cores=2) == pytest.approx(2 / 0.032)

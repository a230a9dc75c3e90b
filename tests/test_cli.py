"""The command line as a user runs it: a real process, real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import BROKEN, FIXTURE_IMAGES, HELLO_WORLD, IMAGENET_LABELS, LSTM, MOBILENET

pytestmark = pytest.mark.runtime


def edge_agent(*args: str | Path, runtime: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    runtime = runtime or env.get("EDGE_AGENT_TEST_RUNTIME", "auto")
    command = [sys.executable, "-m", "edge_agent", *map(str, args)]
    if args and args[0] in ("infer", "inspect"):
        command += ["--runtime", runtime]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_infer_parrot_prints_macaw_top1() -> None:
    done = edge_agent(
        "infer", "--model", MOBILENET, "--labels", IMAGENET_LABELS, FIXTURE_IMAGES / "parrot.jpg"
    )
    assert done.returncode == 0, done.stderr
    (line,) = json_lines(done.stdout)
    top = line["top_k"]
    assert isinstance(top, list)
    assert top[0]["label"] == "macaw"
    assert len(top) == 3
    assert isinstance(line["latency_ms"], float)
    assert done.stderr == ""


def test_infer_numbers_inline_and_from_files(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.array([[1.5708]], dtype=np.float32))
    (tmp_path / "x.csv").write_text("3.1416\n", encoding="utf-8")
    done = edge_agent(
        "infer", "--model", HELLO_WORLD, "1.5708", tmp_path / "x.npy", tmp_path / "x.csv"
    )
    assert done.returncode == 0, done.stderr
    outputs = [line["outputs"] for line in json_lines(done.stdout)]
    assert outputs[0] == outputs[1]
    assert abs(outputs[0][0][0][0] - 1.0) < 0.1  # type: ignore[index]
    assert abs(outputs[2][0][0][0]) < 0.1  # type: ignore[index]


def test_infer_without_labels_reports_class_indices() -> None:
    done = edge_agent("infer", "--model", LSTM, "--top-k", "1", FIXTURE_IMAGES / "mnist_nine.bmp")
    assert done.returncode == 0, done.stderr
    assert json_lines(done.stdout)[0]["top_k"] == [
        {"label": "9", "score": pytest.approx(1, abs=0.01)}
    ]


def test_infer_keeps_going_past_a_bad_input_and_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    done = edge_agent("infer", "--model", MOBILENET, bad, FIXTURE_IMAGES / "parrot.jpg")
    assert done.returncode == 4
    assert len(json_lines(done.stdout)) == 1
    assert done.stderr.count("\n") == 1
    assert "broken.jpg: not a readable image" in done.stderr


def test_inspect_broken_model_is_one_line_naming_the_op() -> None:
    done = edge_agent("inspect", BROKEN)
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "fake-op-double" in done.stderr
    assert "Traceback" not in done.stderr


def test_inspect_json_reports_specs_and_checksum() -> None:
    done = edge_agent("inspect", "--json", MOBILENET)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["size"] == MOBILENET.stat().st_size
    assert len(report["sha256"]) == 64
    assert report["inputs"] == [
        {
            "name": "input",
            "shape": [1, 128, 128, 3],
            "dtype": "uint8",
            "scale": 0.0078125,
            "zero_point": 128,
        }
    ]
    assert report["outputs"][0]["shape"] == [1, 1001]


def test_inspect_table_is_readable() -> None:
    done = edge_agent("inspect", HELLO_WORLD)
    assert done.returncode == 0, done.stderr
    assert "sha256" in done.stdout
    assert "int8" in done.stdout
    assert "0.0244801" in done.stdout


def test_missing_model_is_a_one_line_error(tmp_path: Path) -> None:
    done = edge_agent("infer", "--model", tmp_path / "nope.tflite", "1.0")
    assert done.returncode == 3
    assert done.stderr.strip().endswith(
        "nope.tflite: cannot read model file: No such file or directory"
    )

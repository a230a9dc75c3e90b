"""`edge-agent samples list|export`: what a labelling tool gets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge_agent.capture.store import Sample, SampleStore, StoreOptions, new_stem
from edge_agent.cli import main

from .conftest import DEMO_MODELS

JPEG = (DEMO_MODELS / "samples" / "camera" / "frame_015.jpg").read_bytes()


def make_store(folder: Path) -> list[str]:
    store = SampleStore(StoreOptions(folder))
    stems = []
    for i, why in enumerate((["low_confidence"], ["wrong"])):
        stem = new_stem(time.time() + i, "cam")
        side = {
            "pipeline": "cam",
            "ts": "2026-12-02T05:00:00.000Z",
            "why": why,
            "decision": {"state": "circle"},
            "outputs": {"top": [{"index": 1, "label": "circle", "score": 0.4}]},
            "input": f"{stem}.jpg",
        }
        store.save(Sample(stem, JPEG, ".jpg", side))
        stems.append(stem)
    # a third sample whose input is already uploaded: listed, not exported
    stem = new_stem(time.time() + 5, "cam")
    store.save(Sample(stem, b"x", ".jpg", {"pipeline": "cam", "why": ["random"]}))
    (folder / f"{stem}.jpg").unlink()
    return stems


def test_export_writes_images_and_a_jsonl_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stems = make_store(tmp_path / "samples")
    out = tmp_path / "export"
    assert main(["samples", "export", str(out), "--dir", str(tmp_path / "samples")]) == 0
    lines = [json.loads(x) for x in (out / "index.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == [f"images/{s}.jpg" for s in stems]
    assert [line["why"] for line in lines] == [["low_confidence"], ["wrong"]]
    assert lines[0]["outputs"]["top"][0]["label"] == "circle"
    assert all((out / line["file"]).read_bytes() == JPEG for line in lines)
    assert "exported 2 sample(s)" in capsys.readouterr().out


def test_list_shows_every_sample_oldest_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stems = make_store(tmp_path / "samples")
    assert main(["samples", "list", "--json", "--dir", str(tmp_path / "samples")]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows[:2]] == stems
    assert [r["uploaded_input"] for r in rows] == [False, False, True]


def test_list_of_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    assert main(["samples", "list", "--dir", str(tmp_path / "nope")]) == 78

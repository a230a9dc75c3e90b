from pathlib import Path

from edge_agent.model.detection.labels import DetectionLabels

from .conftest import FIXTURE_MODELS


def test_a_leading_placeholder_shifts_ids_by_one() -> None:
    assert DetectionLabels(["???", "person", "bicycle"]).name(1) == "bicycle"
    assert DetectionLabels(["background", "cat"]).name(0) == "cat"


def test_ids_are_line_numbers_and_gaps_are_numbers() -> None:
    labels = DetectionLabels(["person", "n/a", "car"])
    assert [labels.name(i) for i in range(4)] == ["person", "1", "car", "3"]
    assert DetectionLabels().name(5) == "5"


def test_both_coco_label_layouts_agree() -> None:
    starter = DetectionLabels.read(FIXTURE_MODELS / "ssd_mobilenet_v1_coco_labelmap.txt")
    coral = DetectionLabels.read(FIXTURE_MODELS / "coco_labels.txt")
    assert starter.name(17) == coral.name(17) == "dog"
    assert starter.name(0) == coral.name(0) == "person"
    gaps = [i for i in range(90) if starter.name(i) == str(i)]
    assert gaps == [i for i in range(90) if coral.name(i) == str(i)]
    assert 11 in gaps  # no COCO class 11


def test_no_file_means_numbers(tmp_path: Path) -> None:
    assert DetectionLabels.read(None).name(3) == "3"
    (tmp_path / "l.txt").write_text("a\nb\n", encoding="utf-8")
    assert len(DetectionLabels.read(tmp_path / "l.txt")) == 2

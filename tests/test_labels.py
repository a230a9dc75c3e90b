from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import ModelError
from edge_agent.model.labels import align_labels, read_labels, top_k


def test_labels_with_a_leading_background_line_are_aligned() -> None:
    assert align_labels(["background", "cat", "dog"], 2) == ["cat", "dog"]
    assert align_labels(["background", "cat", "dog"], 3) == ["background", "cat", "dog"]


def test_no_labels_means_class_indices() -> None:
    assert align_labels(None, 3) == ["0", "1", "2"]


def test_label_count_mismatch_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="5 labels for a model with 2 classes"):
        align_labels(["a"] * 5, 2, "x.txt")


def test_read_labels_strips_lines(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("cat \ndog\n\n", encoding="utf-8")
    assert read_labels(path) == ["cat", "dog"]


def test_read_labels_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nope\.txt"):
        read_labels(tmp_path / "nope.txt")


def test_top_k_orders_best_first() -> None:
    result = top_k(np.array([[0.1, 0.7, 0.2]]), ["a", "b", "c"], 2)
    assert [(s.label, s.score) for s in result] == [("b", 0.7), ("c", 0.2)]

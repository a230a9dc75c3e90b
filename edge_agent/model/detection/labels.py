"""Detection label files: class id k is line k, unless the file starts with a
placeholder line (the TensorFlow starter label map's `???`), then it is line k+1."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edge_agent.model.labels import read_labels

PLACEHOLDERS = {"???", "background"}
GAPS = {"", "???", "n/a"}  # ids the model never gives (Coral's coco_labels.txt)


class DetectionLabels:
    """Names by class id; an id past the end, or an unnamed gap, is its number."""

    def __init__(self, lines: Sequence[str] | None = None) -> None:
        names = list(lines or [])
        if names and names[0].lower() in PLACEHOLDERS:
            names = names[1:]
        self.names = names

    @classmethod
    def read(cls, path: str | Path | None) -> DetectionLabels:
        return cls(read_labels(path) if path else None)

    def __len__(self) -> int:
        return len(self.names)

    def name(self, class_id: int) -> str:
        if 0 <= class_id < len(self.names) and self.names[class_id].lower() not in GAPS:
            return self.names[class_id]
        return str(class_id)

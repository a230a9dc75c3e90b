"""Label files and top-k over a classifier's scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.errors import ModelError


@dataclass(frozen=True)
class Scored:
    label: str
    score: float


def read_labels(path: str | Path) -> list[str]:
    """One label per line; blank trailing lines ignored."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read labels: {exc}") from exc
    return parse_labels(data, str(path))


def parse_labels(data: bytes, source: str = "labels") -> list[str]:
    """`read_labels` for a labels file's bytes already in memory (decrypted ones)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"{source}: cannot read labels: {exc}") from exc
    return [line.strip() for line in text.rstrip("\n").split("\n")]


def align_labels(labels: list[str] | None, classes: int, source: str = "labels") -> list[str]:
    """Labels for `classes` scores. A file with one line too many starts with a
    `background` line the model does not output; none at all means class indices."""
    if labels is None:
        return [str(i) for i in range(classes)]
    if len(labels) == classes:
        return labels
    if len(labels) == classes + 1:
        return labels[1:]
    raise ModelError(f"{source}: {len(labels)} labels for a model with {classes} classes")


def top_k(scores: np.ndarray, labels: list[str], k: int) -> list[Scored]:
    """The k best classes, best first; ties keep the lower class index first."""
    flat = np.asarray(scores, dtype=np.float32).reshape(-1)
    order = np.argsort(-flat, kind="stable")[: max(1, k)]
    return [Scored(labels[i], round(float(flat[i]), 6)) for i in order]

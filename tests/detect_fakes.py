"""Fake tensor specs for detector layout tests: shapes and names as real exports have them."""

from __future__ import annotations

import numpy as np

from edge_agent.model.runtime import TensorSpec


def spec(name: str, shape: tuple[int, ...], dtype: str = "float32", index: int = 0) -> TensorSpec:
    scale, zero_point = (0.0, 0) if dtype == "float32" else (1 / 255, -128)
    return TensorSpec(name, index, shape, np.dtype(dtype), scale, zero_point)


def image_input(width: int = 640, height: int = 640) -> list[TensorSpec]:
    return [spec("images", (1, height, width, 3), "int8")]


def ssd_tf1(n: int = 10) -> list[TensorSpec]:
    """The 2018 starter model's order: boxes, classes, scores, count."""
    op = "TFLite_Detection_PostProcess"
    return [
        spec(op, (1, n, 4), index=0),
        spec(f"{op}:1", (1, n), index=1),
        spec(f"{op}:2", (1, n), index=2),
        spec(f"{op}:3", (1,), index=3),
    ]


def ssd_tf2(n: int = 10) -> list[TensorSpec]:
    """A TF2 export's order: scores, boxes, count, classes, with names that do not say."""
    return [
        spec("StatefulPartitionedCall:1", (1, n), index=0),
        spec("StatefulPartitionedCall:3", (1, n, 4), index=1),
        spec("StatefulPartitionedCall:0", (1,), index=2),
        spec("StatefulPartitionedCall:2", (1, n), index=3),
    ]

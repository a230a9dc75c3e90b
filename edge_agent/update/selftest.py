"""The last gate before a verified model may serve: it must load, allocate, run on
a probe input and give finite outputs of the shapes the pipeline expects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_agent.errors import InputError, ModelError, SelfTestError
from edge_agent.model.labels import align_labels, top_k
from edge_agent.model.runtime import Model

# A model file (decrypted in memory if it is encrypted), or a model's bytes, loaded.
ModelLoader = Callable[[Path | bytes], Model]


def self_test(
    source: Path | bytes,
    load: ModelLoader,
    active: Model,
    *,
    golden: np.ndarray | None = None,
    golden_top1: str | None = None,
    labels: list[str] | None = None,
) -> Model:
    """The loaded candidate, or SelfTestError saying why it may not replace `active`.
    `source`: the downloaded file, or the plaintext of an encrypted one."""
    try:
        candidate = load(source)
    except ModelError as exc:
        raise SelfTestError(f"the new model does not load: {exc}") from exc
    _same_interface(candidate, active)
    probe = [np.zeros(spec.shape, dtype=spec.dtype) for spec in candidate.inputs]
    _finite(_run(candidate, probe), "a zero probe")
    if golden is not None and golden_top1 is not None:
        (scores,) = _run(candidate, [golden])[:1]
        classes = int(scores.shape[-1])
        names = align_labels(labels, classes)
        best = top_k(scores, names, 1)[0].label
        if best != golden_top1:
            raise SelfTestError(
                f"golden input gives {best!r}, the manifest expects {golden_top1!r}"
            )
    return candidate


def _run(model: Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    try:
        return model.infer(*inputs)
    except (ModelError, InputError) as exc:
        raise SelfTestError(f"the new model does not run: {exc}") from exc


def _finite(outputs: list[np.ndarray], what: str) -> None:
    if not all(np.all(np.isfinite(o)) for o in outputs):
        raise SelfTestError(f"the new model gives non-finite outputs on {what}")


def _same_interface(candidate: Model, active: Model) -> None:
    """The pipeline's preprocessing and policy were built for the active model's
    tensors; a model with other shapes would fail on every input."""
    want_in = [s.shape for s in active.inputs]
    got_in = [s.shape for s in candidate.inputs]
    want_out = [s.shape for s in active.outputs]
    got_out = [s.shape for s in candidate.outputs]
    if got_in != want_in or got_out != want_out:
        raise SelfTestError(
            f"the new model's tensors {got_in} -> {got_out} do not match the pipeline's "
            f"{want_in} -> {want_out}"
        )

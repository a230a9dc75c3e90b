"""The model runtime adapter: one `Model` over LiteRT, tflite-runtime or TensorFlow.

Every failure to load a model becomes one `ModelError` naming the model and the
reason; nothing a backend raises escapes this module.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_agent.errors import InputError, ModelError
from edge_agent.model.flatbuffer import check_tflite
from edge_agent.model.quant import Quantizer, check_params, dequantize, quantize

log = logging.getLogger(__name__)

RuntimeName = Literal["auto", "litert", "tflite-runtime", "tensorflow"]

# The order `auto` tries them in: the maintained runtime first.
BACKEND_MODULES: dict[str, str] = {
    "litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",
}


@dataclass(frozen=True)
class TensorSpec:
    """What a model's input or output tensor holds."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype.name,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


@dataclass(frozen=True)
class Backend:
    """A runtime's interpreter class and delegate loader."""

    name: str
    interpreter: Any
    load_delegate: Any


def available_runtimes() -> list[str]:
    """The runtimes that import on this machine, in `auto` order."""
    found = []
    for name in BACKEND_MODULES:
        try:
            resolve_backend(name)  # type: ignore[arg-type]
        except ModelError:
            continue
        found.append(name)
    return found


def resolve_backend(runtime: RuntimeName) -> Backend:
    """Import the named runtime, or the first installed one for `auto`."""
    names = list(BACKEND_MODULES) if runtime == "auto" else [runtime]
    if runtime != "auto" and runtime not in BACKEND_MODULES:
        raise ModelError(
            f"unknown runtime {runtime!r}; choose from auto, {', '.join(BACKEND_MODULES)}"
        )
    reasons = []
    for name in names:
        try:
            module = importlib.import_module(BACKEND_MODULES[name])
        except ImportError as exc:
            reasons.append(f"{name}: {exc}")
            continue
        loader = getattr(module, "load_delegate", None)
        if loader is None:  # tensorflow.lite keeps it under experimental
            loader = getattr(getattr(module, "experimental", None), "load_delegate", None)
        return Backend(name, module.Interpreter, loader)
    raise ModelError(
        "no TFLite runtime is installed (pip install 'edge-agent[litert]' or "
        f"'edge-agent[tflite]'): {'; '.join(reasons)}"
    )


def default_threads() -> int:
    """The cores this process may run on (respects CPU affinity and cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _one_line(exc: BaseException) -> str:
    """A backend's message on one line, without its links to documentation."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [line for line in lines if line and not line.startswith("See instructions")]
    return " ".join(kept) or type(exc).__name__


class Model:
    """A loaded, allocated model. `infer` is its one verb; not thread-safe by design
    of the interpreters, so a lock serialises callers."""

    def __init__(
        self,
        interpreter: Any,
        *,
        label: str,
        runtime: str,
        content: bytes,
        num_threads: int = 1,
        delegate: str | None = None,
    ) -> None:
        self._interpreter = interpreter
        self._lock = threading.Lock()
        self._content = content  # the interpreter reads from these bytes: no extra memory
        self.label = label
        self.runtime = runtime
        self.num_threads = num_threads
        self.delegate = delegate
        self.size = len(content)
        self.sha256 = hashlib.sha256(content).hexdigest()
        self.inputs = tuple(_spec(d, label) for d in interpreter.get_input_details())
        self.outputs = tuple(_spec(d, label) for d in interpreter.get_output_details())
        self._quantizers = tuple(_quantizer(spec) for spec in self.inputs)

    @classmethod
    def load(
        cls,
        source: str | Path | bytes,
        *,
        runtime: RuntimeName = "auto",
        num_threads: int | None = None,
        delegate: str | None = None,
        label: str | None = None,
    ) -> Model:
        """Load and allocate a model from a path or from its bytes."""
        name = label or ("<bytes>" if isinstance(source, bytes) else str(source))
        content = source if isinstance(source, bytes) else _read_model_file(Path(source))
        problem = check_tflite(content)
        if problem:
            raise ModelError(f"{name}: not a loadable TFLite model: {problem}")
        backend = resolve_backend(runtime)
        delegates = [_load_delegate(backend, delegate, name)] if delegate else None
        threads = num_threads or default_threads()
        with native_chatter_filtered():
            interpreter = _allocated(backend, content, threads, delegates, name)
        model = cls(
            interpreter,
            label=name,
            runtime=backend.name,
            content=content,
            num_threads=threads,
            delegate=delegate,
        )
        log.debug("loaded %s with %s (%d bytes)", name, backend.name, model.size)
        return model

    def copy(self, num_threads: int | None = None) -> Model:
        """Another interpreter over the same model bytes (shared, not copied), with
        `num_threads` threads (default: this one's): an interpreter runs one
        invoke() at a time, so parallel inference needs one per worker."""
        return Model.load(
            self._content,
            runtime=self.runtime,  # type: ignore[arg-type]
            num_threads=num_threads or self.num_threads,
            delegate=self.delegate,
            label=self.label,
        )

    def infer(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run one inference; float inputs are quantized, outputs dequantized."""
        if len(inputs) != len(self.inputs):
            raise InputError(f"{self.label}: expects {len(self.inputs)} inputs, got {len(inputs)}")
        interpreter = self._interpreter
        with self._lock:  # the quantizers' buffers are shared too
            for array, spec, quantizer in zip(inputs, self.inputs, self._quantizers, strict=True):
                interpreter.set_tensor(spec.index, to_tensor(array, spec, quantizer))
            try:
                interpreter.invoke()
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"{self.label}: inference failed: {_one_line(exc)}") from exc
            return [
                dequantize(interpreter.get_tensor(s.index), s.scale, s.zero_point)
                for s in self.outputs
            ]


def to_tensor(
    array: np.ndarray, spec: TensorSpec, quantizer: Quantizer | None = None
) -> np.ndarray:
    """Shape and type `array` for `spec`: floats are quantized (by `quantizer`, when
    given, into its reused buffer), the tensor's own dtype passes through, a missing
    batch dimension is added."""
    array = np.asarray(array)
    if array.shape != spec.shape:
        if array.size != math.prod(spec.shape):
            raise InputError(
                f"input {spec.name!r} needs shape {list(spec.shape)}, got {list(array.shape)}"
            )
        array = array.reshape(spec.shape)
    if array.dtype == spec.dtype:
        return array
    if array.dtype.kind == "f" or not spec.quantized:
        if quantizer is not None:
            return quantizer(array)
        return quantize(array, spec.scale, spec.zero_point, spec.dtype)
    raise InputError(f"input {spec.name!r} is {spec.dtype.name}; got {array.dtype.name} values")


def _quantizer(spec: TensorSpec) -> Quantizer | None:
    if not spec.quantized or spec.dtype.kind not in "iu":
        return None
    return Quantizer(spec.shape, spec.scale, spec.zero_point, spec.dtype)


def _allocated(
    backend: Backend, content: bytes, threads: int | None, delegates: list[Any] | None, name: str
) -> Any:
    try:
        interpreter = backend.interpreter(
            model_content=content,
            num_threads=threads or default_threads(),
            experimental_delegates=delegates,
        )
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{name}: not a loadable TFLite model: {_one_line(exc)}") from exc
    try:
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{name}: cannot allocate tensors: {_one_line(exc)}") from exc
    return interpreter


_STDERR_LOCK = threading.Lock()


@contextmanager
def native_chatter_filtered() -> Iterator[None]:
    """Drop the runtimes' own "INFO: ..." lines, which they print straight to file
    descriptor 2 with no switch to silence them; everything else written to
    stderr meanwhile (including other threads' log lines) is passed on."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [ln for ln in capture.read().splitlines(True) if not ln.startswith(b"INFO: ")]
            if kept:
                os.write(2, b"".join(kept))


def _read_model_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror or exc}") from exc


def _load_delegate(backend: Backend, library: str, name: str) -> Any:
    if backend.load_delegate is None:
        raise ModelError(f"{name}: runtime {backend.name} cannot load delegates")
    try:
        return backend.load_delegate(library)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"{name}: cannot load delegate {library}: {_one_line(exc)}") from exc


def _spec(detail: dict[str, Any], label: str) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    params = detail.get("quantization_parameters") or {}
    scales: Sequence[float] = params.get("scales", [])
    name = str(detail.get("name", detail["index"]))
    if len(scales) > 1:
        raise ModelError(f"{label}: tensor {name!r} is per-channel quantized at the model's edge")
    dtype = np.dtype(detail["dtype"])
    problem = check_params(float(scale), int(zero_point), dtype)
    if problem:
        raise ModelError(f"{label}: tensor {name!r} has invalid quantization: {problem}")
    shape = tuple(int(d) for d in detail["shape"])
    return TensorSpec(name, int(detail["index"]), shape, dtype, float(scale), int(zero_point))

"""The seams of the update manager: what it needs of the network and of a running
pipeline, as small protocols. `fetch.Fetcher` and `pipeline.Pipeline` satisfy them;
the manager's unit tests use fakes that do too."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # kept light: the manifest CLI imports this module
    import numpy as np

    from edge_agent.model.runtime import Model
    from edge_agent.mqtt.payloads import ModelInfo
    from edge_agent.pipeline.policy import Policy


@dataclass(frozen=True)
class Validators:
    """What the server said about a body last time, for a conditional GET."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Fetched:
    """A body in memory (`path` None), or streamed into `path` (`body` empty)."""

    body: bytes
    path: Path | None = None
    etag: str | None = None
    last_modified: str | None = None


class Fetch(Protocol):
    """Bytes from a URL, bounded and checked while they arrive."""

    def fetch(
        self,
        url: str,
        *,
        max_length: int,
        sha256: str | None = None,
        into: Path | None = None,
        since: Validators | None = None,
        cancel: threading.Event | None = None,
    ) -> Fetched | None:
        """At most `max_length` bytes; with `sha256`, exactly `max_length` bytes of
        that digest (LengthError, HashError). `into`: streamed to that file (a
        partial one is resumed; one that fails its hash is deleted), never held
        in memory. `since`: None when the server says it has not changed.
        `cancel`: set from another thread, it ends the transfer (FetchError)."""
        ...


class Health(Protocol):
    """The counters probation watches."""

    @property
    def inferences(self) -> int: ...

    @property
    def model_errors(self) -> int: ...


class SwapTarget(Protocol):
    """A running pipeline, as the update manager sees it: the model serving, its
    health, and the one verb that swaps a model in between two inferences."""

    @property
    def model(self) -> Model: ...

    @property
    def stats(self) -> Health: ...

    def swap_model(self, model: Model, info: ModelInfo, policy: Policy | None = None) -> None: ...


class Opener(Protocol):
    """Reads a stored or hand-installed model or labels file: decrypted in memory
    when it is encrypted (`ring.DeviceKeyring`), as it is otherwise. ModelError
    names the file and the reason."""

    def model_bytes(self, path: Path) -> bytes: ...

    def label_names(self, path: Path) -> list[str]: ...


@dataclass(frozen=True)
class Target:
    """A running pipeline whose model is the manifest's model `name`."""

    name: str
    pipeline: SwapTarget
    # A model file (decrypted in memory when encrypted), or a model's bytes, to a
    # loaded model (ModelError).
    load: Callable[[Path | bytes], Model]
    configured: tuple[Path, ModelInfo]  # what to fall back to when nothing installed is left
    # The pipeline's policy for a labels file (decrypted in memory when encrypted) or
    # for label names; None: the policy does not use labels.
    make_policy: Callable[[Path | Sequence[str] | None], Policy] | None = None
    # An encoded image to the model's input tensor, for golden inputs that are images.
    prepare: Callable[[bytes], np.ndarray] | None = None

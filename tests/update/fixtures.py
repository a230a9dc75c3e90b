"""An operator's update site and a device's update side, for the adversarial tests.

`Site` is the operator: keys and a manifest made with the real CLI, or rewritten
and signed by hand where the CLI (rightly) refuses. `Device` is what
`edge_agent.app.update_wiring` builds, made directly: a real `UpdateManager`,
`Fetcher` and `ModelStore`, and a real camera `Pipeline` serving shapes, built by
the agent's wiring but never started. `child_main` runs one check of such a
device in a child process, which the tests SIGKILL or starve of disk:

    python -c "from tests.update.fixtures import child_main; child_main()" CONFIG_JSON
"""

from __future__ import annotations

import hashlib
import itertools
import json
import resource
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.app import wiring
from edge_agent.cli import main as edge_agent
from edge_agent.config.settings import Settings, load_settings
from edge_agent.model.runtime import Model
from edge_agent.mqtt.outbox import NewEvent, Outbox
from edge_agent.mqtt.payloads import ModelInfo
from edge_agent.pipeline.policy import Policy
from edge_agent.update import keys
from edge_agent.update import store as store_module
from edge_agent.update.fetch import Fetcher, FetchOptions
from edge_agent.update.manager import UpdateManager, UpdateOptions
from edge_agent.update.protocols import Target
from edge_agent.update.ring import DeviceKeyring
from edge_agent.update.store import InstalledModel, ModelStore
from edge_agent.util.fs import atomic_write
from tests.conftest import DEMO_MODELS

NAME = "shapes"
SHAPES = DEMO_MODELS / "shapes_int8.tflite"
LABELS = DEMO_MODELS / "shapes_labels.txt"
MANIFEST = "/manifest.json"
_SERIAL = itertools.count()
# Device(..., **options): these go to UpdateOptions, the others to FetchOptions.
_MANAGER_OPTIONS = ("max_manifest_bytes", "interval", "mismatch_retry", "mismatch_retries")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def padded(extra: int) -> bytes:
    """shapes_int8 with `extra` zero bytes appended: the same network, other bytes."""
    return SHAPES.read_bytes() + bytes(extra)


class Site:
    """The operator's side, made with the real CLI like test_update_e2e's: signing
    keys (`<name>.pem` / `<name>.pub` in `keys`) and the directory a server publishes."""

    def __init__(self, root: Path, keys_dir: Path) -> None:
        self.root, self.keys = root, keys_dir
        root.mkdir(parents=True)
        keys_dir.mkdir(parents=True)
        self.keygen("key")

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def signature(self) -> Path:
        return self.root / "manifest.json.sig"

    def public(self, key: str = "key") -> Path:
        return self.keys / f"{key}.pub"

    def keygen(self, key: str) -> Path:
        """A new key pair; returns the public key, what a device is configured with."""
        private = str(self.keys / f"{key}.pem")
        cli(["manifest", "keygen", "--private", private, "--public", str(self.public(key))])
        return self.public(key)

    def publish(
        self,
        model: bytes,
        version: int,
        *options: str,
        key: str = "key",
        labels: bytes | None = None,
    ) -> str:
        """`model` as shapes-<version>.tflite in a manifest created and signed by the
        CLI (extra `options` go to `manifest create`), with `labels` if given;
        returns the model's URL path."""
        path = self.root / f"{NAME}-{version}.tflite"
        path.write_bytes(model)
        if labels is not None:
            (self.root / f"{NAME}-{version}.labels.txt").write_bytes(labels)
            options = (*options, "--labels", f"{NAME}={self.root / f'{NAME}-{version}.labels.txt'}")
        create = ["manifest", "create", str(path), "--name", f"{NAME}={path}"]
        cli([*create, "--version", str(version), "-o", str(self.manifest), *options])
        cli(["manifest", "sign", str(self.manifest), "--key", str(self.keys / f"{key}.pem")])
        return "/" + path.name

    def publish_encrypted(
        self,
        model: bytes,
        version: int,
        recipients: Path,
        *options: str,
        key: str = "key",
        labels: bytes | None = None,
    ) -> str:
        """`publish` with `manifest create --encrypt --recipients`: the plaintext stays
        in `plain/` beside the site, the site gets the .enc files and the group key
        files; returns the encrypted model's URL path."""
        plain = self.root.parent / "plain"
        plain.mkdir(exist_ok=True)
        path = plain / f"{NAME}-{version}.tflite"
        path.write_bytes(model)
        if labels is not None:
            (plain / f"{NAME}-{version}.labels.txt").write_bytes(labels)
            options = (*options, "--labels", f"{NAME}={plain / f'{NAME}-{version}.labels.txt'}")
        create = ["manifest", "create", str(path), "--name", f"{NAME}={path}"]
        encrypt = ["--encrypt", "--recipients", str(recipients)]
        cli([*create, "--version", str(version), "-o", str(self.manifest), *encrypt, *options])
        cli(["manifest", "sign", str(self.manifest), "--key", str(self.keys / f"{key}.pem")])
        return "/" + path.name + ".enc"

    def edit(self, change: Callable[[dict[str, Any]], None], key: str = "key") -> None:
        """Rewrite the manifest's JSON and sign it without the CLI, which refuses
        to write or sign what a device would reject."""
        document = json.loads(self.manifest.read_bytes())
        change(document)
        self.sign(json.dumps(document, indent=2).encode(), key)

    def sign(self, data: bytes, key: str = "key") -> None:
        """Publish `data` as the manifest, signed by `key`."""
        self.manifest.write_bytes(data)
        private = keys.load_private_key(self.keys / f"{key}.pem")
        self.signature.write_bytes(keys.sign(private, data))


def cli(args: list[str]) -> None:
    assert edge_agent(args) == 0, args


@dataclass(frozen=True)
class Trusted:
    """What an update that fails must leave exactly as it was."""

    model: Model  # compared by identity: the very object serving
    info: ModelInfo
    current: InstalledModel | None
    version: int | None
    files: dict[str, str]  # every file under models/, by path, with its sha256


class _NoBroker:
    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry: float | None = None,
    ) -> int:
        return 0


def _discard(event: NewEvent) -> None:
    pass


def _settings(state: Path) -> Settings:
    """An agent's settings for one camera pipeline serving shapes (never started)."""
    pipeline = {
        "name": "cam",
        "model": str(SHAPES),
        "model_name": NAME,
        "model_version": "1",
        "labels": str(LABELS),
        "source": {"kind": "files", "pattern": str(DEMO_MODELS / "samples/camera/*.jpg")},
        "policy": {"kind": "classification", "threshold": 0.6},
    }
    return load_settings(
        None, {"device_id": "dev1", "state_dir": str(state), "pipelines": [pipeline]}
    )


class Device:
    """A device's update side under `state`/updates, as a (re)started agent has it:
    the store recovered, a pipeline built by the agent's wiring (serving what the
    store says is current, never started), a manager built like
    edge_agent.app.update_wiring's, and every status report it sends in `reports`.
    With `device_key`, it opens encrypted models as an agent with that key does."""

    def __init__(
        self,
        state: Path,
        url: str,
        trusted: Sequence[Path],
        ca_file: Path,
        *,
        device_key: X25519PrivateKey | None = None,
        **fetch: Any,
    ) -> None:
        self.root = state / "updates"
        self.store = ModelStore(self.root)
        self.store.recover()  # as wiring.build_store does at start-up
        self.keys = DeviceKeyring(device_key, self.store.groups)
        self.outbox = Outbox(state / f"outbox-{next(_SERIAL)}.db")
        self.settings = _settings(state)
        self.pipeline = wiring.build_pipeline(
            self.settings,
            self.settings.pipelines[0],
            sink=_NoBroker(),
            outbox=self.outbox,
            submit=_discard,
            store=self.store,
            keys=self.keys,
        )
        self.reports: list[dict[str, Any]] = []
        self.url, self.trusted_keys, self.ca_file = url, tuple(trusted), ca_file
        self.configure(**fetch)

    def configure(
        self, *, url: str | None = None, trusted: Sequence[Path] | None = None, **fetch: Any
    ) -> None:
        """A new manager (other URL, keys or fetch options) over the same store and pipeline."""
        self.url = url or self.url
        self.trusted_keys = tuple(trusted or self.trusted_keys)
        managing = {k: fetch.pop(k) for k in _MANAGER_OPTIONS if k in fetch}
        options = UpdateOptions(
            manifest_url=self.url,
            keys=tuple(keys.load_public_key(path) for path in self.trusted_keys),
            device_id="dev1",
            probation_inferences=0,  # watch_probation() commits unless errors were counted
            device_key=self.keys.device_key,
            **managing,
        )
        fetch = {"read_timeout": 1.0, "connect_timeout": 1.0, **fetch}
        fetcher = Fetcher(FetchOptions(ca_file=str(self.ca_file), **fetch))
        configured = (SHAPES, ModelInfo(NAME, "1", ""))
        load = wiring.model_loader(self.settings, self.settings.pipelines[0], self.keys)
        target = Target(NAME, self.pipeline, load, configured, self._make_policy)
        self.manager = UpdateManager(options, fetcher, self.store, [target], self.reports.append)

    def _make_policy(self, labels: Path | Sequence[str] | None) -> Policy:
        """As edge_agent.app.update_wiring's: the configured policy, with an update's labels."""
        classes = int(self.pipeline.model.outputs[0].shape[-1])
        return wiring.build_policy(self.settings.pipelines[0], classes, labels, self.keys)

    def check(self) -> str:
        return self.manager.check()

    def reason(self) -> str:
        """The reason of the last report (check's final state)."""
        return str(self.reports[-1]["reason"])

    def states(self) -> list[str]:
        return [report["state"] for report in self.reports]

    def trusted(self) -> Trusted:
        models = self.root / "models"
        files = {
            path.relative_to(models).as_posix(): sha256(path.read_bytes())
            for path in sorted(models.rglob("*"))
            if path.is_file()
        }
        current = self.store.current(NAME)
        version = self.store.trusted_version()
        return Trusted(self.pipeline.model, self.pipeline.model_info, current, version, files)

    def close(self) -> None:
        self.outbox.close()


# -- the child process ----------------------------------------------------------------


def _pause() -> None:
    print("paused", flush=True)
    time.sleep(60)  # the parent SIGKILLs us here


def _pause_in_atomic_write(suffix: str) -> None:
    """Stop where the store's atomic_write has written its temp file for a path
    ending in `suffix`, before the rename."""

    def write(path: Path, data: bytes) -> None:
        if not path.name.endswith(suffix):
            atomic_write(path, data)
            return
        path.with_name(f".{path.name}.tmp").write_bytes(data)
        _pause()

    mock.patch.object(store_module, "atomic_write", write).start()  # for good: we get killed


def _pause_after(method: str) -> None:
    """Stop right after ModelStore.`method` returns."""
    original = getattr(ModelStore, method)

    def patched(self: ModelStore, *args: Any) -> Any:
        result = original(self, *args)
        _pause()
        return result

    mock.patch.object(ModelStore, method, patched).start()


PAUSES: dict[str, Callable[[], None]] = {
    "labels-temp": lambda: _pause_in_atomic_write(".labels.txt"),
    "model-moved": lambda: _pause_after("_move"),
    "state-temp": lambda: _pause_in_atomic_write("state.json"),
    "activated": lambda: _pause_after("activate"),
}


def child_main() -> None:
    """One check by a device in this process; prints its final state, its reports
    and the sha256 of the model serving, as JSON. CONFIG (JSON): state, url,
    trusted, ca_file, read_timeout; optional fsize (RLIMIT_FSIZE, as a full disk)
    and pause (a PAUSES step where to stop and say "paused")."""
    config = json.loads(sys.argv[1])
    if config.get("pause"):
        PAUSES[config["pause"]]()
    device = Device(
        Path(config["state"]),
        config["url"],
        [Path(path) for path in config["trusted"]],
        Path(config["ca_file"]),
        read_timeout=config["read_timeout"],
    )
    if config.get("fsize"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (config["fsize"], config["fsize"]))
    state = device.check()
    result = {"state": state, "reports": device.reports, "serving": device.pipeline.model.sha256}
    print(json.dumps(result), flush=True)
    device.close()

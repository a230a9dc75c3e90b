"""Settings -> the update manager, its store, its targets, and the device's keys."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.app import wiring
from edge_agent.config import settings as cfg
from edge_agent.errors import ConfigError
from edge_agent.model.preprocess import ImagePreprocessor
from edge_agent.mqtt.payloads import ModelInfo
from edge_agent.pipeline.policy import Policy
from edge_agent.pipeline.runner import Pipeline
from edge_agent.update import devicekey
from edge_agent.update.fetch import Fetcher, FetchOptions
from edge_agent.update.keys import load_public_key
from edge_agent.update.manager import Reporter, UpdateManager, UpdateOptions
from edge_agent.update.protocols import Target
from edge_agent.update.ring import DeviceKeyring
from edge_agent.update.store import ModelStore

log = logging.getLogger(__name__)

QUIET_STATES = ("checking", "unchanged", "up_to_date")


def build_store(settings: cfg.Settings) -> ModelStore | None:
    """The model store, after rolling back whatever was on probation when the
    agent last stopped (a crash or a reboot before the commit)."""
    if not settings.update.enabled:
        return None
    store = ModelStore(settings.state_dir / "updates")
    for name in store.recover():
        log.warning("update: %s was on probation when the agent stopped; rolled back", name)
    return store


def build_keyring(
    settings: cfg.Settings, store: ModelStore | None, environ: Mapping[str, str] | None = None
) -> DeviceKeyring:
    """The device key (systemd's credential first, then `update.device_key`, by
    default `<state_dir>/device-key.pem`) and the group keys cached in `store`. No
    key at the default place is not an error: encrypted models are then rejected
    with "no device key". A key named in the settings must be there."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    credentials = Path(env["CREDENTIALS_DIRECTORY"]) if env.get("CREDENTIALS_DIRECTORY") else None
    u = settings.update
    path = devicekey.key_path(
        settings.state_dir, credentials, key_file=u.device_key, credential=u.device_key_credential
    )
    groups = store.groups if store is not None else None
    if u.device_key is None and not path.exists():
        log.info("no device key at %s: encrypted models cannot be opened", path)
        return DeviceKeyring(None, groups)
    try:
        key = devicekey.load_device_key(
            settings.state_dir,
            credentials,
            key_file=u.device_key,
            credential=u.device_key_credential,
        )
    except ConfigError as exc:
        raise ConfigError(f"update.device_key: {exc}") from exc
    keyring = DeviceKeyring(key, groups)
    log.info("device key %s from %s", keyring.key_id, path)
    return keyring


def build_manager(
    settings: cfg.Settings,
    store: ModelStore,
    pipelines: Sequence[Pipeline],
    publish: Callable[[dict[str, Any]], None],
    keys: DeviceKeyring | None = None,
) -> UpdateManager:
    """`keys`: what `build_keyring` made (None: no device key, as if there were none)."""
    u = settings.update
    assert u.manifest_url is not None  # the settings validator makes sure
    options = UpdateOptions(
        manifest_url=u.manifest_url,
        keys=tuple(load_public_key(path) for path in u.keys),
        device_id=settings.device_id,
        interval=u.interval,
        jitter=u.jitter,
        probation_inferences=u.probation_inferences,
        probation_seconds=u.probation_seconds,
        max_manifest_bytes=u.max_manifest_bytes,
        tags=dict(settings.fleet.tags),
        device_key=keys.device_key if keys is not None else None,
    )
    return UpdateManager(
        options,
        Fetcher(fetch_options(u)),
        store,
        _targets(settings, pipelines, keys),
        quiet_reporter(publish),
    )


def fetch_options(u: cfg.UpdateSettings) -> FetchOptions:
    """The fetcher's options, from `[update]`."""
    return FetchOptions(
        connect_timeout=u.connect_timeout,
        read_timeout=u.read_timeout,
        deadline=u.deadline,
        min_rate=u.min_rate,
        rate_window=u.rate_window,
        allow_http=u.allow_http,
        ca_file=_str(u.ca_file),
        client_cert=_str(u.client_cert),
        client_key=_str(u.client_key),
    )


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _targets(
    settings: cfg.Settings, pipelines: Sequence[Pipeline], keys: DeviceKeyring | None
) -> list[Target]:
    by_name = {p.name: p for p in pipelines}
    targets: dict[str, Target] = {}
    for p in settings.pipelines:
        name = wiring.model_name(p)
        if name in targets:
            raise ConfigError(
                f"pipelines.{p.name}.model_name: {name!r} is used by two pipelines; "
                "updates need one model name per pipeline"
            )
        if p.name in by_name:  # a pipeline whose model failed to load takes no updates
            pipeline = by_name[p.name]
            info = ModelInfo(name, p.model_version, "")
            targets[name] = Target(
                name,
                pipeline,
                wiring.model_loader(settings, p, keys),
                (p.model, info),
                _policy_maker(p, pipeline, keys),
                _preparer(pipeline),
            )
    return list(targets.values())


def _policy_maker(
    p: cfg.PipelineSettings, pipeline: Pipeline, keys: DeviceKeyring | None
) -> Callable[[Path | Sequence[str] | None], Policy]:
    def make(labels: Path | Sequence[str] | None) -> Policy:
        classes = int(pipeline.model.outputs[0].shape[-1]) if pipeline.model.outputs[0].shape else 1
        return wiring.build_policy(p, classes, labels, keys)

    return make


def _preparer(pipeline: Pipeline) -> Callable[[bytes], np.ndarray]:
    """Golden images become tensors the way the serving model's input wants them."""

    def prepare(data: bytes) -> np.ndarray:
        return ImagePreprocessor(pipeline.model.inputs[0]).prepare(data)

    return prepare


def quiet_reporter(publish: Callable[[dict[str, Any]], None]) -> Reporter:
    """Publish the update status without repeating "nothing new" every poll (an
    hourly checking/unchanged pair adds up on a metered link): after a quiet
    outcome, the next "checking" and the same quiet outcome are not sent again."""
    last: list[str | None] = [None]

    def report(status: dict[str, Any]) -> None:
        state = status["state"]
        if last[0] in QUIET_STATES and (state == "checking" or state == last[0]):
            return
        publish(status)
        last[0] = state

    return report

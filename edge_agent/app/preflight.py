"""`config check`: everything `run` checks before it starts, without starting anything.

The settings' own validation covers types and ranges; this adds what needs the
files the settings name: the state directory, the device key (when encrypted models
may be met), each pipeline's model and labels (decrypted in memory if encrypted),
the broker's password file and TLS files, the update keys. Nothing is created,
connected or started.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge_agent.app import mqtt_wiring, wiring
from edge_agent.config import settings as cfg
from edge_agent.errors import EdgeAgentError
from edge_agent.update.protocols import Opener
from edge_agent.util.tls import mqtt_tls_context


def problems(settings: cfg.Settings) -> list[str]:
    """One line per problem, each led by the offending key."""
    found = []
    state = _state_dir_problem(settings.state_dir)
    if state:
        found.append(f"state_dir: {state}")
    keys = None
    if wiring.needs_device_key(settings):
        from edge_agent.app.update_wiring import build_keyring  # noqa: PLC0415 - cryptography

        try:
            keys = build_keyring(settings, None)
        except EdgeAgentError as exc:
            found.append(str(exc))
    for p in settings.pipelines:
        found.extend(_pipeline_problems(settings, p, keys))
    try:
        options = mqtt_wiring.mqtt_options(settings)  # reads password_file
        if options.tls is not None:
            mqtt_tls_context(options.tls)  # reads the CA, certificate and key
    except EdgeAgentError as exc:
        found.append(str(exc))
    if settings.update.enabled:
        found.extend(_key_problems(settings.update.keys))
    return found


def _state_dir_problem(path: Path) -> str | None:
    """Why `run` could not create or write `path`, or None."""
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            return f"cannot create {path}"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "write to" if existing == path else f"create {path} in"
        return f"cannot {what} {existing} (permission denied for uid {os.getuid()})"
    return None


def _pipeline_problems(
    settings: cfg.Settings, p: cfg.PipelineSettings, keys: Opener | None
) -> list[str]:
    try:
        wiring.check_pipeline(settings, p, keys)
    except EdgeAgentError as exc:
        return [str(exc)]
    return []


def _key_problems(keys: list[Path]) -> list[str]:
    from edge_agent.update.keys import load_public_key  # noqa: PLC0415 - cryptography

    found = []
    for index, key in enumerate(keys):
        try:
            load_public_key(key)
        except EdgeAgentError as exc:
            found.append(f"update.keys.{index}: {exc}")
    return found

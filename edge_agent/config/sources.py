"""Where settings come from: pydantic-settings' TOML and environment sources, set up
for edge-agent, with their failures translated into ConfigError.

The file to read is chosen per load (a context variable), so one Settings class
serves `run`, `config check` and a SIGHUP reload without building classes at run
time. Values from code (the demo and bench build their configurations as data) go
through pydantic-settings' init source, never as TOML keys: a key in a file can
never name a file to read (`_env_file`) or change how settings are loaded.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
)

from edge_agent.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "EDGE_AGENT_"
DELIMITER = "__"  # EDGE_AGENT_MQTT__TLS__CA_FILE = mqtt.tls.ca_file


@dataclass
class Origin:
    """What one load reads: the file, values from code, and (after the load) the
    dotted keys that the environment set, to name the right culprit in errors."""

    path: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    env_keys: set[str] = field(default_factory=set)

    def describe(self, key: str) -> str:
        """`environment (EDGE_AGENT_MQTT__PORT)` or the file's path, for the key `key`."""
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in self.env_keys:
                return f"environment ({ENV_PREFIX}{DELIMITER.join(parts[:n]).upper()})"
        return str(self.path) if self.path is not None else "configuration"


SOURCE: ContextVar[Origin] = ContextVar("edge_agent_settings_source", default=Origin())  # noqa: B039


@contextlib.contextmanager
def reading(origin: Origin) -> Iterator[Origin]:
    token = SOURCE.set(origin)
    try:
        yield origin
    finally:
        SOURCE.reset(token)


class TomlFile(TomlConfigSettingsSource):
    """The TOML source, whose read errors name the file and say what is wrong."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        path = Path(file_path)
        try:
            with path.open("rb") as handle:
                return tomllib.load(handle)
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such config file") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); TOML files are UTF-8"
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc

    @classmethod
    def _existing_files(cls, paths: Any) -> list[Any]:
        # A missing file is an error here (pydantic-settings would skip it silently).
        return [paths] if paths is not None else []


def env_source(settings_cls: type[BaseSettings]) -> EnvSettingsSource:
    return EnvSettingsSource(
        settings_cls,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=DELIMITER,
        case_sensitive=False,
    )


def loading_sources(
    settings_cls: type[BaseSettings],
) -> tuple[PydanticBaseSettingsSource, ...]:
    """Highest priority first: the environment, values from code, the file."""
    origin = SOURCE.get()
    env = env_source(settings_cls)
    origin.env_keys = set(_dotted(env()))
    sources: list[PydanticBaseSettingsSource] = [env]
    if origin.overrides:
        sources.append(InitSettingsSource(settings_cls, dict(origin.overrides)))
    if origin.path is not None:
        sources.append(TomlFile(settings_cls, toml_file=origin.path))
    return tuple(sources)


def _dotted(data: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """The dotted keys of the values the environment set (leaves: a table's own
    key is not one, or every error in that table would be blamed on it)."""
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            yield from _dotted(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"

"""Settings: a TOML file plus EDGE_AGENT_* environment overrides, validated once.

pydantic-settings does the reading: a TOML source and the `EDGE_AGENT_` environment
source (`__` between nested keys, JSON for tables and lists), the environment
winning key by key. This module only translates what goes wrong into one
ConfigError that names the offending key and where it came from (the file or the
variable). Everything else receives the validated values.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from edge_agent.config.base import DAY, Qos, Strict
from edge_agent.config.inputs import (
    AudioSourceSettings,
    CameraSource,
    SensorSource,
    WindowSettings,
)
from edge_agent.config.kinds import SOURCE_KINDS
from edge_agent.config.loop import (
    SamplesSettings,
)
from edge_agent.config.pipelines import AudioSettings, DriftSettings, ModelKind, PipelineSettings
from edge_agent.config.policies import (
    ClassificationPolicySettings,
    DetectionPolicySettings,
    ThresholdPolicySettings,
    WakeWordPolicySettings,
)
from edge_agent.config.sources import ENV_PREFIX, Origin, loading_sources, reading
from edge_agent.errors import ConfigError

# The whole configuration model, as the rest of the package reads it (`cfg.X`);
# the tables are defined in base, inputs, policies and pipelines.
__all__ = [
    "AudioSettings",
    "AudioSourceSettings",
    "CameraSource",
    "ClassificationPolicySettings",
    "DetectionPolicySettings",
    "DriftSettings",
    "FleetSettings",
    "ModelKind",
    "MqttSettings",
    "MqttTlsSettings",
    "PipelineSettings",
    "SensorSource",
    "Settings",
    "ThresholdPolicySettings",
    "UpdateSettings",
    "WakeWordPolicySettings",
    "WindowSettings",
    "changed_keys",
    "json_schema",
    "load_settings",
    "redacted",
]
FleetTagValue = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class MqttTlsSettings(Strict):
    """The `[mqtt.tls]` table; present (even empty) means TLS to the broker."""

    ca_file: Path | None = Field(
        None, description="PEM CA certificate(s) of the broker; replaces the system CAs"
    )
    cert_file: Path | None = Field(None, description="client certificate (PEM), for mutual TLS")
    key_file: Path | None = Field(
        None, description="its unencrypted private key (PEM); default: inside cert_file"
    )
    insecure: bool = Field(
        False,
        description="skip the hostname check (the certificate chain is still verified); "
        "needs ca_file",
    )
    alpn: list[str] = Field(
        default_factory=list, description='ALPN protocols, e.g. ["x-amzn-mqtt-ca"] (AWS IoT, 443)'
    )
    min_version: Literal["1.2", "1.3"] = "1.2"

    @model_validator(mode="after")
    def _consistent(self) -> MqttTlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        if self.insecure and self.ca_file is None:
            raise ValueError(
                "insecure needs ca_file (a private CA): with the public CAs, anyone with a "
                "certificate for any name could pose as the broker"
            )
        return self


class MqttSettings(Strict):
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535, description="usually 8883 with tls")
    prefix: str = Field("edge", min_length=1, pattern=r"^[^#+]+$")
    protocol: Literal["5", "3.1.1"] = "5"
    qos: Qos = 1
    keepalive: int = Field(30, ge=5, le=3600, description="seconds")
    client_id: str | None = Field(None, description="default: the device id")
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(
        None, description="read the password from this file (systemd: %d/mqtt-password)"
    )
    tls: MqttTlsSettings | None = Field(None, description="TLS to the broker; none: plain TCP")
    reconnect_min: float = Field(1.0, gt=0, le=3600, description="first reconnect delay, seconds")
    reconnect_max: float = Field(
        60.0, gt=0, le=3600, description="longest reconnect delay, seconds"
    )
    first_retry_window: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="seconds the first retry after a drop is spread over (<= reconnect_max)",
    )
    will_delay: int = Field(
        30, ge=0, le=86_400, description="seconds the broker waits before the `offline` will"
    )

    @model_validator(mode="after")
    def _consistent(self) -> MqttSettings:
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min must not exceed reconnect_max")
        # Left at its default, the window shrinks to a shorter reconnect_max (the
        # publisher clamps it); set explicitly beyond it is a mistake worth naming.
        if "first_retry_window" in self.model_fields_set and (
            self.first_retry_window > self.reconnect_max
        ):
            raise ValueError("first_retry_window must not exceed reconnect_max")
        if self.password is not None and self.password_file is not None:
            raise ValueError("password and password_file are mutually exclusive")
        if self.password_file is not None and not self.username:
            raise ValueError("password_file needs username")
        return self


class OutboxSettings(Strict):
    max_events: int = Field(10_000, ge=1, le=100_000_000, description="oldest dropped beyond this")
    max_bytes: int = Field(
        10_000_000, ge=1_000, le=1 << 40, description="oldest dropped beyond this"
    )
    durability: Literal["power-loss", "crash"] = Field(
        "power-loss", description="power-loss: fsync every event; crash: survive a killed process"
    )
    ttl: float = Field(
        0.0, ge=0, le=365 * DAY, description="seconds an event may wait; 0 = forever"
    )
    inflight: int = Field(100, ge=1, le=65_000, description="events awaiting PUBACK at once")


class UpdateSettings(Strict):
    enabled: bool = False
    manifest_url: str | None = Field(None, description="https://.../manifest.json")
    keys: list[Path] = Field(default_factory=list, description="trusted Ed25519 public keys (PEM)")
    interval: float = Field(3600.0, ge=10, le=30 * DAY, description="seconds between checks")
    jitter: float = Field(0.1, ge=0, le=0.5, description="+/- fraction of the interval")
    allow_http: bool = Field(False, description="accept a plain http:// manifest_url")
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    connect_timeout: float = Field(10.0, gt=0, le=600)
    read_timeout: float = Field(30.0, gt=0, le=3600, description="seconds for one socket read")
    deadline: float = Field(
        3600.0,
        gt=0,
        le=DAY,
        description="seconds for one whole download; resumed at the next check",
    )
    min_rate: float = Field(
        1024.0, ge=0, le=1e9, description="bytes/s below which a download is given up; 0 = off"
    )
    rate_window: float = Field(60.0, gt=0, le=3600, description="seconds min_rate is measured over")
    max_manifest_bytes: int = Field(1_000_000, ge=1_000, le=100_000_000)
    probation_inferences: int = Field(
        20, ge=1, le=1_000_000, description="healthy inferences to commit"
    )
    probation_seconds: float = Field(
        300.0, gt=0, le=30 * DAY, description="or this long without errors"
    )
    nudge_jitter: float = Field(
        60.0, ge=0, le=DAY, description="seconds a fleet-wide nudge's check is spread over"
    )
    device_key: Path | None = Field(
        None,
        description="the X25519 key encrypted models open with (default: "
        "<state_dir>/device-key.pem, made by `edge-agent keys init`)",
    )
    device_key_credential: str = Field(
        "edge-agent-device-key",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="systemd credential read before device_key (LoadCredentialEncrypted=)",
    )

    @model_validator(mode="after")
    def _complete(self) -> UpdateSettings:
        if self.enabled and not self.manifest_url:
            raise ValueError("manifest_url is required when updates are enabled")
        if self.enabled and not self.keys:
            raise ValueError("keys: at least one public key is required when updates are enabled")
        url = self.manifest_url or ""
        if (
            url
            and not url.startswith("https://")
            and not (self.allow_http and url.startswith("http://"))
        ):
            raise ValueError("manifest_url must be https:// (or http:// with allow_http = true)")
        return self


TAG_KEY = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_TAGS = 16


class FleetSettings(Strict):
    """The `[fleet]` table: operator tags, published on `info` and matched by a
    manifest's `targets`."""

    tags: dict[Annotated[str, StringConstraints(pattern=TAG_KEY)], FleetTagValue] = Field(
        default_factory=dict,
        max_length=MAX_TAGS,
        description='e.g. {site = "lab", hw = "pi4"}',
    )


class HomeAssistantSettings(Strict):
    """The `[homeassistant]` table: MQTT discovery of each pipeline's entities."""

    enabled: bool = Field(False, description="announce entities to Home Assistant")
    discovery_prefix: str = Field(
        "homeassistant", min_length=1, pattern=r"^[^#+]+$", description="HA's discovery prefix"
    )


class TelemetrySettings(Strict):
    """The `[telemetry]` table: device and pipeline health, see edge_agent/telemetry.py."""

    interval: float = Field(
        60.0,
        ge=0,
        le=DAY,
        description="seconds between messages on <prefix>/<device>/telemetry; 0 = off",
    )
    prometheus_port: int = Field(
        0, ge=0, le=65535, description="serve http://127.0.0.1:PORT/metrics; 0 = off"
    )

    @model_validator(mode="after")
    def _not_flooding(self) -> TelemetrySettings:
        if 0 < self.interval < 1:
            raise ValueError("interval must be 0 (off) or at least 1 second")
        return self


class RuntimeSettings(Strict):
    runtime: Literal["auto", "litert", "tflite-runtime", "tensorflow"] = "auto"
    num_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="interpreter threads (per worker in a camera pipeline); 0 = auto: a camera "
        "pipeline measures its model at start (see image.workers); a sensor pipeline gets 1 "
        "for models under 1 MB, else every core",
    )
    delegate: str | None = Field(None, description="delegate library, e.g. libedgetpu.so.1")


class Settings(BaseSettings):
    # Defaults are validated too: the hostname must be a valid device_id.
    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True
    )

    device_id: str = Field(default_factory=socket.gethostname, pattern=r"^[^/#+\s]+$")
    state_dir: Path = Path("/var/lib/edge-agent")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    mqtt: MqttSettings = MqttSettings()
    outbox: OutboxSettings = OutboxSettings()
    update: UpdateSettings = UpdateSettings()
    homeassistant: HomeAssistantSettings = HomeAssistantSettings()
    fleet: FleetSettings = FleetSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    runtime: RuntimeSettings = RuntimeSettings()
    samples: SamplesSettings = SamplesSettings()
    pipelines: list[PipelineSettings] = Field(min_length=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Never the constructor's keywords, a .env file or a secrets directory:
        # only what `load_settings` was asked to read.
        return loading_sources(settings_cls)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        names = [p.name for p in self.pipelines]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"pipeline names must be unique: {', '.join(duplicates)}")
        return self


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read `path` (TOML) and values from code, apply EDGE_AGENT_* variables, validate;
    ConfigError on any problem, naming the key and where its value came from."""
    with reading(Origin(path, overrides or {})) as origin:
        try:
            return Settings()
        except ValidationError as exc:
            raise ConfigError(describe(exc, origin)) from exc
        except SettingsError as exc:
            raise ConfigError(_env_json_error(exc)) from exc


def _env_json_error(exc: SettingsError) -> str:
    """pydantic-settings' message for a table or list variable that is not JSON."""
    match = re.search(r'field "(\w+)"', str(exc))
    key = match.group(1) if match else "?"
    cause = exc.__cause__ or exc
    return (
        f"environment: {ENV_PREFIX}{key.upper()} ({key}) is not valid JSON: {cause} (a table "
        f'or a list takes JSON, e.g. {ENV_PREFIX}RUNTIME=\'{{"runtime": "litert"}}\', or set '
        f"one key of a table: {ENV_PREFIX}RUNTIME__RUNTIME=litert)"
    )


def describe(exc: ValidationError, origin: Origin) -> str:
    """One line per problem, each led by where the value came from and its dotted key."""
    lines = []
    for error in exc.errors():
        key = ".".join(_key_parts(error["loc"])) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{origin.describe(key)}: {key}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _key_parts(loc: tuple[int | str, ...]) -> list[str]:
    """The key path without the union tags pydantic inserts (source.files.fps -> source.fps)."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        # Only the tag right after `source`/`policy`: `policy.threshold` is also a tag name.
        if i and loc[i - 1] in ("source", "policy") and part in _UNION_TAGS:
            continue
        parts.append(str(part))
    return parts


_UNION_TAGS = set(SOURCE_KINDS)
_UNION_TAGS |= {"classification", "threshold", "detection", "wakeword"}


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """Dotted paths of every value that differs between two configurations."""
    return sorted(_diff(redacted(old), redacted(new), ""))


def _diff(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys for k in _diff(old.get(key), new.get(key), f"{prefix}{key}.")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            k
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for k in _diff(a, b, f"{prefix}{i}.")
        ]
    return [] if old == new else [prefix.rstrip(".")]


def redacted(settings: Settings) -> dict[str, Any]:
    """The resolved settings as JSON-ready data, secrets shown as '**********'."""
    return settings.model_dump(mode="json")


def json_schema() -> dict[str, Any]:
    return Settings.model_json_schema()

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
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from edge_agent.config.kinds import SOURCE_KINDS
from edge_agent.config.loop import (
    CaptureSettings,
    FeedbackSettings,
    SamplesSettings,
    ShadowSettings,
)
from edge_agent.config.sources import ENV_PREFIX, Origin, loading_sources, reading
from edge_agent.config.zones import parse_lines, parse_zones
from edge_agent.errors import ConfigError

# An int in 0..2 rather than Literal[0, 1, 2]: an EDGE_AGENT_* variable arrives as a
# string, which pydantic converts to an int but never to a literal.
Qos = Annotated[int, Field(ge=0, le=2)]
DAY = 86_400.0


class Strict(BaseModel):
    # No NaN or infinity anywhere: `threshold = nan` is refused at its own key.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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

    @model_validator(mode="after")
    def _consistent(self) -> MqttSettings:
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min must not exceed reconnect_max")
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


class FilesSourceSettings(Strict):
    kind: Literal["files"]
    pattern: str = Field(description="glob of image files, read in sorted order")
    loop: bool = False
    fps: float = Field(0.0, ge=0, le=1000)


class DirSourceSettings(Strict):
    kind: Literal["dir"]
    path: str
    pattern: str = "*.jpg"
    delete_after: bool = False
    fps: float = Field(0.0, ge=0, le=1000)
    poll_interval: float = Field(0.5, gt=0, le=3600)
    settle: float = Field(
        1.0, gt=0, le=3600, description="seconds a file's size and mtime must hold still"
    )
    incomplete_timeout: float = Field(
        30.0, gt=0, le=86_400, description="seconds to wait for a cut-short image to be finished"
    )


class HttpSourceSettings(Strict):
    kind: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    fps: float = Field(1.0, gt=0, le=1000)
    timeout: float = Field(5.0, gt=0, le=3600, description="seconds for the whole snapshot")
    username: str | None = None
    password: SecretStr | None = None


class MjpegSourceSettings(Strict):
    kind: Literal["mjpeg"]
    url: str = Field(pattern=r"^https?://")
    fps: float = Field(0.0, ge=0, le=1000)
    timeout: float = Field(10.0, gt=0, le=3600)


class CommandSourceSettings(Strict):
    kind: Literal["command"]
    command: list[str] = Field(min_length=1)
    fps: float = Field(0.0, ge=0, le=1000)


class WindowSettings(Strict):
    size: int = Field(ge=1, le=1_000_000, description="samples per window")
    hop: int = Field(ge=1, le=1_000_000, description="samples between window starts")
    channels: int = Field(ge=1, le=4096)
    mean: list[float] | None = None
    std: list[float] | None = None

    @model_validator(mode="after")
    def _lengths(self) -> WindowSettings:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.channels:
                raise ValueError(f"{name} needs {self.channels} values, one per channel")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError("std values must be > 0")
        return self


class LinesSourceSettings(Strict):
    kind: Literal["lines"]
    path: str = Field(description='file, FIFO, serial device, or "-" for stdin')
    fields: list[str] | None = Field(None, description="JSON keys, for JSON lines")
    follow: bool = False
    rate: float = Field(
        0.0, ge=0, le=10_000_000, description="replay pacing, samples/s; 0 = as read"
    )
    window: WindowSettings


class IioSourceSettings(Strict):
    kind: Literal["iio"]
    device: str = Field(description="e.g. iio:device0")
    channels: list[str] = Field(min_length=1, description="e.g. in_accel_x")
    rate: float = Field(gt=0, le=10_000_000, description="samples per second")
    root: str = "/sys/bus/iio/devices"
    window: WindowSettings


class MqttSourceSettings(Strict):
    kind: Literal["mqtt"]
    topic: str
    fields: list[str] = Field(min_length=1)
    host: str | None = Field(None, description="default: the agent's broker")
    port: int | None = Field(None, ge=1, le=65535)
    window: WindowSettings


class AudioSourceSettings(Strict):
    """Mono 16-bit PCM: WAV files (replay, tests) or a command's stdout (a microphone)."""

    kind: Literal["audio"]
    pattern: str | None = Field(None, description="glob of WAV files, read in sorted order")
    command: list[str] | None = Field(
        None,
        min_length=1,
        description="raw S16_LE mono PCM on stdout, e.g. "
        '["arecord", "-D", "plughw:1,0", "-f", "S16_LE", "-r", "16000", "-c", "1", "-t", "raw"]',
    )
    rate: int = Field(16000, ge=8000, le=192_000, description="samples per second")
    loop: bool = Field(False, description="pattern: start over after the last file")
    realtime: bool = Field(False, description="pattern: pace the files as if recorded live")
    chunk_ms: int = Field(
        100, ge=10, le=10_000, multiple_of=10, description="audio per chunk, milliseconds"
    )
    queue_chunks: int = Field(
        50, ge=1, le=100_000, description="command: chunks kept for a slow pipeline at most"
    )

    @model_validator(mode="after")
    def _one_input(self) -> AudioSourceSettings:
        if (self.pattern is None) == (self.command is None):
            raise ValueError("give exactly one of pattern (WAV files) or command (raw PCM)")
        if self.command is not None and (self.loop or self.realtime):
            raise ValueError("loop and realtime apply to WAV files (pattern), not a command")
        return self


CameraSource = (
    FilesSourceSettings
    | DirSourceSettings
    | HttpSourceSettings
    | MjpegSourceSettings
    | CommandSourceSettings
)
SensorSource = LinesSourceSettings | IioSourceSettings | MqttSourceSettings
SourceSettings = Annotated[
    CameraSource | SensorSource | AudioSourceSettings, Field(discriminator="kind")
]


class ImageSettings(Strict):
    resize: Literal["stretch", "crop", "letterbox"] | None = Field(
        None, description="default: letterbox for YOLO detectors, else stretch"
    )
    draft: bool = Field(True, description="JPEG reduced-scale decoding for large frames")
    max_pixels: int = Field(40_000_000, ge=1, le=1_000_000_000)
    decoders: int = Field(
        0,
        ge=0,
        le=8,
        description="threads decoding frames ahead of the model; 0 = auto: the cores the "
        "measured decode cost needs, at least 1",
    )
    workers: int = Field(
        0,
        ge=0,
        le=8,
        description="interpreter instances running consecutive frames (one model copy each); "
        "0 = auto: measured at start, more than 1 when the model does not speed up with "
        "threads and has more than a core's worth of work",
    )


class DecisionTiming(Strict):
    smoothing: int = Field(1, ge=1, le=10_000, description="average over the last K results")
    debounce: int = Field(1, ge=1, le=10_000, description="results a new state must persist for")
    heartbeat: float = Field(
        0.0, ge=0, le=30 * DAY, description="re-publish the state every N s; 0 = off"
    )
    min_interval: float = Field(
        0.0, ge=0, le=DAY, description="seconds between two events at least"
    )


class ClassificationPolicySettings(DecisionTiming):
    kind: Literal["classification"]
    threshold: float = Field(0.5, ge=0, le=1)
    off_threshold: float | None = Field(None, ge=0, le=1)
    states: dict[str, str] | None = Field(None, description="label -> state; default: label")
    default_state: str = "none"


class ThresholdPolicySettings(DecisionTiming):
    kind: Literal["threshold"]
    index: int = Field(0, ge=0, le=1_000_000, description="which output value (or class score)")
    on_threshold: float = 0.5
    off_threshold: float | None = None
    on_state: str = "on"
    off_state: str = "off"


Fraction = Annotated[float, Field(ge=0, le=1)]
Point = tuple[Fraction, Fraction]


class LineSettings(Strict):
    """A counting line: two points; `in` is a crossing from left to right of A->B."""

    points: list[Point] = Field(min_length=2, max_length=2, description="[[x1, y1], [x2, y2]]")
    directions: tuple[str, str] = Field(("in", "out"), description="left->right, right->left")
    margin: float = Field(0.02, ge=0, lt=0.5, description="dead band around the line")


class DetectionPolicySettings(Strict):
    """Counts per (zone, label), zone entries/exits and line crossings
    (edge_agent/pipeline/detection/policy.py)."""

    kind: Literal["detection"]
    labels: list[str] | None = Field(None, min_length=1, description="default: every label")
    min_score: Fraction = 0.5
    min_score_by_label: dict[str, Fraction] = Field(default_factory=dict)
    score_hysteresis: Fraction = Field(0.0, description="a tracked object is kept this far below")
    min_area: Fraction = Field(0.0, description="fraction of the frame")
    max_area: Fraction = 1.0
    debounce: int = Field(2, ge=1, le=10_000, description="frames a higher count must hold")
    absent_frames: int = Field(5, ge=1, le=10_000, description="frames a lower count must hold")
    absent_seconds: float = Field(0.0, ge=0, le=DAY, description="and seconds")
    max_missed: int | None = Field(
        None, ge=0, le=10_000, description="frames a track coasts; default absent_frames - 1"
    )
    min_iou: float = Field(0.3, gt=0, le=1, description="tracker: overlap that continues a track")
    max_distance: float = Field(0.1, ge=0, le=1.5, description="tracker: else centre distance")
    count_events: bool = Field(True, description="false: only presence changes, not counts")
    zone_events: bool = True
    heartbeat: float = Field(0.0, ge=0, le=30 * DAY, description="seconds; 0 = off")
    min_interval: float = Field(0.0, ge=0, le=DAY, description="seconds between two events")
    max_objects: int = Field(10, ge=1, le=1000, description="objects listed in one event")
    zones: dict[str, list[Point]] = Field(
        default_factory=dict, description="name -> polygon [[x, y], ...], normalized"
    )
    lines: dict[str, LineSettings] = Field(default_factory=dict)
    iou: Fraction = Field(0.45, description="decoding: NMS overlap threshold (raw YOLO heads)")
    max_detections: int = Field(100, ge=1, le=10_000, description="decoding: per frame")

    @field_validator("zones")
    @classmethod
    def _zones(cls, zones: dict[str, list[Point]]) -> dict[str, list[Point]]:
        parse_zones(zones)  # ValueError naming the zone: a bow tie, no area, a bad name
        return zones

    @field_validator("lines")
    @classmethod
    def _lines(cls, lines: dict[str, LineSettings]) -> dict[str, LineSettings]:
        parse_lines({name: line.model_dump() for name, line in lines.items()})
        return lines

    @model_validator(mode="after")
    def _consistent(self) -> DetectionPolicySettings:
        if self.min_area > self.max_area:
            raise ValueError("min_area must not exceed max_area")
        unknown = sorted(set(self.min_score_by_label) - set(self.labels or self.min_score_by_label))
        if unknown:
            raise ValueError(f"min_score_by_label names labels not in labels: {unknown}")
        return self


class WakeWordPolicySettings(Strict):
    """microWakeWord's rule (mean of the last N probabilities >= cutoff), one event per
    utterance; unset values come from the model's JSON manifest."""

    kind: Literal["wakeword"]
    word: str | None = Field(None, min_length=1, description="default: the manifest's")
    probability_cutoff: float | None = Field(None, gt=0, le=1, description="default: manifest")
    sliding_window_size: int | None = Field(None, ge=1, le=1000, description="default: manifest")
    refractory: float = Field(
        2.0, ge=0, le=3600, description="seconds of audio after an event without another"
    )


PolicySettings = Annotated[
    ClassificationPolicySettings
    | ThresholdPolicySettings
    | DetectionPolicySettings
    | WakeWordPolicySettings,
    Field(discriminator="kind"),
]


class AudioSettings(Strict):
    """The `[pipelines.audio]` table: the frontend that turns samples into features."""

    frontend: Literal["micro", "logmel"] = Field(
        "micro", description="micro: TFLite Micro frontend (microWakeWord); logmel: plain numpy"
    )
    channels: int = Field(40, ge=1, le=256, description="logmel only: mel channels")
    lower_hz: float = Field(125.0, ge=0, le=96_000, description="lowest mel band edge")
    upper_hz: float = Field(7500.0, gt=0, le=96_000, description="highest mel band edge")
    hop: int = Field(
        1, ge=1, le=10_000, description="window models: 10 ms feature rows between two runs"
    )

    @model_validator(mode="after")
    def _band(self) -> AudioSettings:
        if self.lower_hz >= self.upper_hz:
            raise ValueError("lower_hz must be below upper_hz")
        return self


ModelKind = Literal["auto", "classifier", "ssd", "yolov8", "yolov5", "yolo-e2e"]
DETECTOR_KINDS = ("ssd", "yolov8", "yolov5", "yolo-e2e")


class DriftSettings(Strict):
    enabled: bool = True
    sample_every: int = Field(
        10, ge=1, le=1_000_000, description="feed one input in N to the monitor"
    )
    reference_size: int = Field(
        500, ge=10, le=1_000_000, description="inputs that form the reference"
    )
    window: int = Field(500, ge=10, le=1_000_000, description="recent inputs compared with it")
    check_every: int = Field(50, ge=1, le=1_000_000, description="inputs between two comparisons")
    threshold: float = Field(0.25, gt=0, le=100, description="PSI that raises an alert")
    clear_threshold: float = Field(0.1, gt=0, le=100, description="PSI under which it clears")
    confidence_drop: float = Field(0.2, gt=0, le=1, description="mean top-1 drop that alerts")

    @model_validator(mode="after")
    def _order(self) -> DriftSettings:
        if self.clear_threshold > self.threshold:
            raise ValueError("clear_threshold must not exceed threshold")
        return self


class PipelineSettings(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="used in MQTT topics")
    model: Path
    labels: Path | None = None
    model_name: str | None = Field(None, description="default: the model file's stem")
    model_version: str = "local"
    model_kind: ModelKind = Field(
        "auto", description="auto: recognised from the model's tensors; or name the family"
    )
    source: SourceSettings
    image: ImageSettings = ImageSettings()
    audio: AudioSettings | None = Field(None, description="audio sources: the frontend")
    policy: PolicySettings
    drift: DriftSettings = DriftSettings()
    qos: Qos | None = Field(None, description="default: mqtt.qos")
    capture: CaptureSettings = CaptureSettings()
    shadow: ShadowSettings | None = None
    feedback: FeedbackSettings = FeedbackSettings()

    @model_validator(mode="after")
    def _parts_fit(self) -> PipelineSettings:
        audio, kind = self.source.kind == "audio", self.policy.kind
        if kind == "wakeword" and not audio:
            raise ValueError("policy.kind = 'wakeword' needs an audio source")
        if audio and kind not in ("wakeword", "classification"):
            raise ValueError(
                f"an audio source takes policy.kind 'wakeword' or 'classification', not {kind!r}"
            )
        if self.audio is not None and not audio:
            raise ValueError("the [audio] table applies to audio sources only")
        if kind == "detection" and self.model_kind not in ("auto", *DETECTOR_KINDS):
            raise ValueError(f"policy.kind = 'detection' needs a detector, not {self.model_kind!r}")
        if self.model_kind in DETECTOR_KINDS and kind != "detection":
            raise ValueError(f"a {self.model_kind} detector needs policy.kind = 'detection'")
        return self


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

"""The `[pipelines.source]` tables: one model per source kind."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from edge_agent.config.base import Strict


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

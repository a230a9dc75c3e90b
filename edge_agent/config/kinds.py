"""The source kinds, in one place: settings validate against them, wiring picks a
builder by them. Plain strings only, so importing this loads nothing else."""

from __future__ import annotations

from typing import Final

CAMERA_KINDS: Final = ("files", "dir", "http", "mjpeg", "command")
SENSOR_KINDS: Final = ("lines", "iio", "mqtt")
AUDIO_KINDS: Final = ("audio",)
SOURCE_KINDS: Final = CAMERA_KINDS + SENSOR_KINDS + AUDIO_KINDS

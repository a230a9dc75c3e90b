"""Settings -> sources: one builder per source kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge_agent.app.mqtt_wiring import mqtt_password, mqtt_tls, secret
from edge_agent.config import settings as cfg
from edge_agent.sources.base import Source

if TYPE_CHECKING:
    from edge_agent.sources.sensor.window import SlidingWindow


def build_window(w: cfg.WindowSettings) -> SlidingWindow:
    from edge_agent.sources.sensor.window import SlidingWindow  # noqa: PLC0415 - see _files

    return SlidingWindow(w.size, w.hop, w.channels, w.mean, w.std)


def build_source(settings: cfg.Settings, p: cfg.PipelineSettings) -> Source:
    builder = _SOURCE_BUILDERS[p.source.kind]
    return builder(p.name, p.source, settings)


# Each builder imports its source's module: a camera device never loads the sensor
# sources (0.6 MB resident), a sensor device never loads the camera ones (1.2 MB).


def _files(name: str, s: Any, _: cfg.Settings) -> Source:
    from edge_agent.sources.camera.files import FilesSource  # noqa: PLC0415

    return FilesSource(name, pattern=s.pattern, loop=s.loop, fps=s.fps)


def _dir(name: str, s: Any, _: cfg.Settings) -> Source:
    from edge_agent.sources.camera.directory import DirectorySource  # noqa: PLC0415

    return DirectorySource(
        name,
        path=s.path,
        pattern=s.pattern,
        delete_after=s.delete_after,
        fps=s.fps,
        poll_interval=s.poll_interval,
        settle=s.settle,
        incomplete_timeout=s.incomplete_timeout,
    )


def _http(name: str, s: Any, _: cfg.Settings) -> Source:
    from edge_agent.sources.camera.http import HttpSnapshotSource  # noqa: PLC0415

    return HttpSnapshotSource(
        name,
        url=s.url,
        fps=s.fps,
        timeout=s.timeout,
        username=s.username,
        password=secret(s.password),
    )


def _mjpeg(name: str, s: Any, _: cfg.Settings) -> Source:
    from edge_agent.sources.camera.mjpeg import MjpegSource  # noqa: PLC0415

    return MjpegSource(name, url=s.url, timeout=s.timeout, fps=s.fps)


def _command(name: str, s: Any, _: cfg.Settings) -> Source:
    from edge_agent.sources.camera.command import CommandSource  # noqa: PLC0415

    return CommandSource(name, command=s.command, fps=s.fps)


def _lines(name: str, s: Any, _: cfg.Settings) -> Source:
    from edge_agent.sources.sensor.lines import LinesSource  # noqa: PLC0415

    return LinesSource(
        name,
        path=s.path,
        window=build_window(s.window),
        channels=s.window.channels,
        fields=s.fields,
        follow=s.follow,
        rate=s.rate,
    )


def _iio(name: str, s: Any, _: cfg.Settings) -> Source:
    from edge_agent.sources.sensor.iio import IioSource  # noqa: PLC0415

    return IioSource(
        name,
        device=s.device,
        channels=s.channels,
        window=build_window(s.window),
        rate=s.rate,
        root=s.root,
    )


def _mqtt(name: str, s: Any, settings: cfg.Settings) -> Source:
    from edge_agent.sources.sensor.mqtt import MqttSensorSource  # noqa: PLC0415

    m = settings.mqtt
    return MqttSensorSource(
        name,
        host=s.host or m.host,
        port=s.port or m.port,
        topic=s.topic,
        fields=s.fields,
        window=build_window(s.window),
        username=m.username,
        password=mqtt_password(m),
        client_id=f"{settings.device_id}-{name}",
        tls=mqtt_tls(m.tls),
    )


def _audio(name: str, s: Any, _: cfg.Settings) -> Source:
    from edge_agent.sources.audio.streams import CommandPcmSource, WavFilesSource  # noqa: PLC0415

    if s.pattern is not None:
        return WavFilesSource(
            name,
            pattern=s.pattern,
            rate=s.rate,
            loop=s.loop,
            realtime=s.realtime,
            chunk_ms=s.chunk_ms,
        )
    return CommandPcmSource(
        name, command=s.command, rate=s.rate, chunk_ms=s.chunk_ms, queue_chunks=s.queue_chunks
    )


_SOURCE_BUILDERS: dict[str, Callable[[str, Any, cfg.Settings], Source]] = {
    "files": _files,
    "dir": _dir,
    "http": _http,
    "mjpeg": _mjpeg,
    "command": _command,
    "lines": _lines,
    "iio": _iio,
    "mqtt": _mqtt,
    "audio": _audio,
}

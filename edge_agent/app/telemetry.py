"""Telemetry: how the device and each pipeline are doing, published every
`[telemetry] interval` seconds on `<prefix>/<device>/telemetry` (QoS 0, not
retained: a missed sample is replaced by the next) and optionally served as
Prometheus text on `http://127.0.0.1:<prometheus_port>/metrics`.

The payload (compact JSON; `null` where a value cannot be known or read):

- `v`: 1, the telemetry schema version.
- `device`: the device id; `ts`: when the sample was taken, UTC ISO 8601 with ms.
- `uptime_s`: seconds since the agent started.
- `load`: the 1, 5 and 15 minute load averages.
- `memory`: `{"total_mb", "available_mb"}` of the board in MiB (MemTotal,
  MemAvailable); `rss_mb`: resident memory of the agent process in MiB (VmRSS).
- `cpu_temp_c`: the hottest thermal zone, °C with one decimal.
- `outbox`: `depth` (events waiting for the broker), `bytes` (their payload
  size), and since the outbox was created: `dropped` (oldest removed to stay
  within bounds), `expired` (TTL ran out), `dead` (refused by the broker).
- `pipelines`: by pipeline name, counters since the agent started:
  - `inputs`: items the source delivered; `dropped`: items it discarded
    unconsumed (stale frames); `errors`: bad or failed inputs, model errors.
  - `inferences`: successful model runs; `latency_ms`: `p50`, `p95`, `p99` of
    the last 1000 inference times (`{}` before the first).
  - `decisions`: decisions published (the same count as `events` today);
    `state`: the current decision; `events`: events published.
  - `bytes_in`: bytes read by the source; `bytes_out`: bytes published
    (topics and payloads); `bandwidth_ratio`: in / out, one decimal.
  - `model`: `{"name", "version", "sha256"}` (first 12 hex digits).
  - `drift`: the input drift status, or null where not measured.
  - `capture`, `shadow`, `accuracy`: only where configured (README "Closing the loop").
- `samples`: the captured-sample store, where capture is on: `kept`, `bytes`,
  `queued`, `written`, `dropped`, `failed`, `evicted`, `uploaded`, `stopped`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edge_agent.mqtt.outbox import OutboxStats
from edge_agent.mqtt.payloads import encode, utc_timestamp
from edge_agent.pipeline.runner import Pipeline
from edge_agent.util.logs import RateLimitedLog
from edge_agent.util.percentile import percentiles

if TYPE_CHECKING:  # http.server (~0.5 MB resident) is imported only if /metrics is served
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)
limited = RateLimitedLog(log)

TELEMETRY_VERSION = 1
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
COUNTERS = ("inputs", "dropped", "errors", "inferences", "events", "bytes_in", "bytes_out")


def pipeline_metrics(pipeline: Pipeline) -> dict[str, Any]:
    """One pipeline's entry; the counters come from `state_payload` so the
    telemetry and the retained state can never disagree."""
    state = pipeline.state_payload()
    return {
        **{key: state[key] for key in COUNTERS},
        "latency_ms": latency_percentiles(pipeline.stats.latencies_ms),
        "decisions": state["events"],
        "state": state["state"],
        "bandwidth_ratio": state["bandwidth_ratio"],
        "model": state["model"],
        "drift": getattr(pipeline, "drift_status", None),
        # `capture`, `shadow`, `accuracy` where the loop is on (README "Closing the loop")
        **getattr(getattr(pipeline, "tap", None), "status", {}),
    }


def latency_percentiles(samples_ms: Iterable[float]) -> dict[str, float]:
    """`p50`, `p95` and `p99` of the samples, in ms with two decimals; {} if none."""
    values = percentiles(samples_ms, (50, 95, 99))
    if not values:
        return {}
    return {f"p{q}": round(v, 2) for q, v in zip((50, 95, 99), values, strict=True)}


def device_metrics(
    started: float,
    *,
    now: float,
    proc: Path = Path("/proc"),
    thermal: Path = Path("/sys/class/thermal"),
) -> dict[str, Any]:
    """The board's health. Each value is read on its own and is null when it
    cannot be: boards lack thermal zones, containers hide /proc files, and
    telemetry must never be what takes the agent down."""
    meminfo = _kb_fields(proc / "meminfo")
    return {
        "uptime_s": round(now - started, 1),
        "load": _load(),
        "memory": None
        if meminfo is None
        else {
            "total_mb": _mb(meminfo.get("MemTotal")),
            "available_mb": _mb(meminfo.get("MemAvailable")),
        },
        "rss_mb": _mb((_kb_fields(proc / "self" / "status") or {}).get("VmRSS")),
        "cpu_temp_c": _cpu_temp(thermal),
    }


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None


def _kb_fields(path: Path) -> dict[str, int] | None:
    """`Name:   1234 kB` lines (meminfo, status) as {name: kB}; None if unreadable."""
    text = _read(path)
    if text is None:
        return None
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[name] = int(parts[0])
    return fields


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this platform
        return None


def _cpu_temp(thermal: Path) -> float | None:
    """The hottest zone: the one that throttles first. Zones that cannot be
    read (some report EINVAL or ENODATA while their sensor sleeps) are skipped."""
    readings = []
    for zone in thermal.glob("thermal_zone*/temp"):
        text = _read(zone)
        try:
            readings.append(int(text or ""))
        except ValueError:
            continue
    return round(max(readings) / 1000, 1) if readings else None


def snapshot(
    device_id: str,
    pipelines: Sequence[Pipeline],
    outbox: OutboxStats,
    started: float,
    now: float,
) -> dict[str, Any]:
    """The telemetry payload documented above; `started` and `now` are time.time()."""
    return {
        "v": TELEMETRY_VERSION,
        "device": device_id,
        "ts": utc_timestamp(now),
        **device_metrics(started, now=now),
        "outbox": asdict(outbox),
        "pipelines": {p.name: pipeline_metrics(p) for p in pipelines},
    }


class TelemetryPublisher:
    """`run` is the thread body: one `collect` -> `publish` every `interval`
    seconds until `stop` is set. A failing sample is logged (rate-limited) and
    skipped: telemetry is best effort and must not stop because a file or the
    broker misbehaved once."""

    def __init__(
        self,
        interval: float,
        collect: Callable[[], dict[str, Any]],
        publish: Callable[[bytes], object],
    ) -> None:
        self.interval = interval
        self._collect = collect
        self._publish = publish

    def run(self, stop: threading.Event) -> None:
        if self.interval <= 0:
            return
        # Scheduled on a fixed grid, so a slow sample does not shift every later one.
        deadline = time.monotonic() + self.interval
        while not stop.wait(max(0.0, deadline - time.monotonic())):
            self.publish_once()
            deadline += self.interval
            if deadline < time.monotonic():  # fell behind (suspended?): skip, do not burst
                deadline = time.monotonic() + self.interval

    def publish_once(self) -> bool:
        """One sample; False (and a rate-limited log line) if it failed."""
        try:
            self._publish(encode(self._collect()))
        except Exception as exc:
            limited.error("telemetry", "telemetry not sent: %s: %s", type(exc).__name__, exc)
            return False
        return True


# Prometheus text exposition, written by hand: prometheus-client would add a
# dependency and its registry/collector model for some twenty values that already
# sit in the snapshot, while the format is just HELP, TYPE and `name{labels} value`.
# Latency percentiles are gauges with a `quantile` label, not a summary: they
# cover the last 1000 inferences, and there is no `_sum` to go with them.

Labels = dict[str, str]
Sample = tuple[str, Labels, Any]

METRICS = {  # name -> (type, help), in exposition order
    "edge_agent_uptime_seconds": ("gauge", "Seconds since the agent started."),
    "edge_agent_load_average": ("gauge", "Load average of the board."),
    "edge_agent_memory_total_mb": ("gauge", "Memory of the board, MiB."),
    "edge_agent_memory_available_mb": ("gauge", "Memory available for new work, MiB."),
    "edge_agent_rss_mb": ("gauge", "Resident memory of the agent process, MiB."),
    "edge_agent_cpu_temp_celsius": ("gauge", "Temperature of the hottest thermal zone."),
    "edge_agent_outbox_depth": ("gauge", "Events waiting for the broker."),
    "edge_agent_outbox_bytes": ("gauge", "Payload bytes waiting for the broker."),
    "edge_agent_outbox_dropped_total": ("counter", "Oldest events dropped to stay in bounds."),
    "edge_agent_outbox_expired_total": ("counter", "Events whose TTL ran out."),
    "edge_agent_outbox_dead_total": ("counter", "Events the broker refused."),
    "edge_agent_inputs_total": ("counter", "Items the source delivered."),
    "edge_agent_dropped_total": ("counter", "Items the source discarded unconsumed."),
    "edge_agent_errors_total": ("counter", "Bad or failed inputs and model errors."),
    "edge_agent_inferences_total": ("counter", "Successful model runs."),
    "edge_agent_events_total": ("counter", "Decision events published."),
    "edge_agent_bytes_in_total": ("counter", "Bytes read by the source."),
    "edge_agent_bytes_out_total": ("counter", "Bytes published, topics and payloads."),
    "edge_agent_inference_latency_ms": ("gauge", "Inference time over the last 1000, ms."),
    "edge_agent_bandwidth_ratio": ("gauge", "Bytes read per byte published."),
    "edge_agent_model_info": ("gauge", "The model a pipeline runs."),
    "edge_agent_state": ("gauge", "The current decision of a pipeline."),
}
QUANTILES = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}


def prometheus_text(snap: dict[str, Any]) -> str:
    """The snapshot in the Prometheus text format 0.0.4; null values are left out."""
    samples = list(_device_samples(snap))
    for name, metrics in snap["pipelines"].items():
        samples += _pipeline_samples(name, metrics)
    lines: dict[str, list[str]] = {name: [] for name in METRICS}
    for name, labels, value in samples:
        if value is not None:
            lines[name].append(f"{name}{_labels(labels)} {_number(value)}")
    text = []
    for name, body in lines.items():
        if body:
            kind, doc = METRICS[name]
            text += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}", *body]
    return "\n".join(text) + "\n"


def _device_samples(snap: dict[str, Any]) -> Iterator[Sample]:
    memory = snap["memory"] or {}
    yield "edge_agent_uptime_seconds", {}, snap["uptime_s"]
    for period, load in zip(("1m", "5m", "15m"), snap["load"] or [None] * 3, strict=True):
        yield "edge_agent_load_average", {"period": period}, load
    yield "edge_agent_memory_total_mb", {}, memory.get("total_mb")
    yield "edge_agent_memory_available_mb", {}, memory.get("available_mb")
    yield "edge_agent_rss_mb", {}, snap["rss_mb"]
    yield "edge_agent_cpu_temp_celsius", {}, snap["cpu_temp_c"]
    for key, value in snap["outbox"].items():
        suffix = "" if key in ("depth", "bytes") else "_total"
        yield f"edge_agent_outbox_{key}{suffix}", {}, value


def _pipeline_samples(name: str, metrics: dict[str, Any]) -> Iterator[Sample]:
    on = {"pipeline": name}
    for key in COUNTERS:
        yield f"edge_agent_{key}_total", on, metrics[key]
    for q, ms in metrics["latency_ms"].items():
        yield "edge_agent_inference_latency_ms", {**on, "quantile": QUANTILES[q]}, ms
    yield "edge_agent_bandwidth_ratio", on, metrics["bandwidth_ratio"]
    yield "edge_agent_model_info", {**on, **metrics["model"]}, 1
    yield "edge_agent_state", {**on, "state": str(metrics["state"])}, 1


def _labels(labels: Labels) -> str:
    """`{k="v",...}` with backslash, double quote and newline escaped in values."""
    if not labels:
        return ""
    escaped = {
        k: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        for k, v in labels.items()
    }
    return "{" + ",".join(f'{k}="{v}"' for k, v in escaped.items()) + "}"


def _number(value: Any) -> str:
    """Integers (and booleans) as integers, floats as Python writes them, which
    the format accepts; the snapshot holds no NaN or infinity."""
    return str(int(value)) if isinstance(value, int) else repr(float(value))


class MetricsServer:
    """GET /metrics for a Prometheus scraper (or node_exporter's textfile
    collector via curl). Bound to 127.0.0.1 by default: the numbers reveal what
    the device sees, so exposing them beyond the board is a deliberate choice."""

    def __init__(
        self, port: int, snapshot: Callable[[], dict[str, Any]], host: str = "127.0.0.1"
    ) -> None:
        self._address = (host, port)
        self._snapshot = snapshot
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0); the configured one before `start`."""
        return int(self._server.server_address[1]) if self._server else self._address[1]

    def start(self) -> None:
        """Bind (OSError if the port is taken) and serve on a daemon thread."""
        from http.server import ThreadingHTTPServer  # noqa: PLC0415 - only when serving

        self._server = ThreadingHTTPServer(self._address, self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics: serving http://%s:%d/metrics", self._address[0], self.port)

    def close(self) -> None:
        """Stop serving and release the port; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        from http.server import BaseHTTPRequestHandler  # noqa: PLC0415 - only when serving

        snapshot = self._snapshot

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if urlsplit(self.path).path != "/metrics":
                    self._reply(404, b"not found: try /metrics\n", "text/plain; charset=utf-8")
                    return
                try:
                    body = prometheus_text(snapshot()).encode("utf-8")
                except Exception as exc:
                    limited.error(
                        "metrics", "metrics: no snapshot: %s: %s", type(exc).__name__, exc
                    )
                    self._reply(500, b"no snapshot\n", "text/plain; charset=utf-8")
                    return
                self._reply(200, body, CONTENT_TYPE)

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Scrapes every 15 s would flood the journal; errors are logged above."""

        return Handler

"""Telemetry: device readings from a fake /proc and /sys, a real agent's
pipeline counters, the Prometheus text, its HTTP endpoint, and the periodic
publisher against a real mosquitto."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.app import telemetry
from edge_agent.app.agent import Agent
from edge_agent.app.telemetry import (
    MetricsServer,
    TelemetryPublisher,
    device_metrics,
    latency_percentiles,
    pipeline_metrics,
    prometheus_text,
    snapshot,
)
from edge_agent.config.settings import load_settings
from edge_agent.mqtt.outbox import OutboxStats
from edge_agent.pipeline.runner import Pipeline
from edge_agent.util.logs import RateLimitedLog
from edge_agent.util.percentile import percentiles

from .broker import Mosquitto, free_port
from .subscriber import Subscriber
from .test_agent import FRAMES, TS, camera_config

MEMINFO = """\
MemTotal:        3884032 kB
MemFree:          123456 kB
MemAvailable:    2097152 kB
HugePages_Total:       0
"""
STATUS = "Name:\tpython3\nVmPeak:\t  300000 kB\nVmRSS:\t   51712 kB\nThreads:\t9\n"

# One sample line of the text format 0.0.4: name, optional labels with escaped
# values, a number.
LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
LABEL = rf"[a-zA-Z_][a-zA-Z0-9_]*={LABEL_VALUE}"
SAMPLE = re.compile(
    rf"^[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{{{LABEL}(?:,{LABEL})*\}})? "
    r"(?:NaN|[+-]Inf|-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)$"
)
COMMENT = re.compile(r"^# (?:HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* "
                     r"(?:counter|gauge|summary|histogram|untyped))$")  # fmt: skip


def fake_board(root: Path) -> tuple[Path, Path]:
    proc, thermal = root / "proc", root / "thermal"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(MEMINFO)
    (proc / "self" / "status").write_text(STATUS)
    for zone, temp in (("thermal_zone0", "48312\n"), ("thermal_zone2", "41000\n")):
        (thermal / zone).mkdir(parents=True)
        (thermal / zone / "temp").write_text(temp)
    # Unreadable zones: a read error (a directory: EISDIR, whoever runs the
    # test, root included) and a sensor that answers garbage.
    (thermal / "thermal_zone1" / "temp").mkdir(parents=True)
    (thermal / "thermal_zone3").mkdir()
    (thermal / "thermal_zone3" / "temp").write_text("n/a\n")
    return proc, thermal


def test_device_metrics_from_proc_and_sys(tmp_path: Path) -> None:
    proc, thermal = fake_board(tmp_path)
    metrics = device_metrics(1000.0, now=1042.0, proc=proc, thermal=thermal)
    assert metrics["uptime_s"] == 42.0
    assert metrics["memory"] == {"total_mb": 3793.0, "available_mb": 2048.0}
    assert metrics["rss_mb"] == 50.5
    assert metrics["cpu_temp_c"] == 48.3  # the hottest readable zone
    assert len(metrics["load"]) == 3
    assert all(isinstance(x, float) for x in metrics["load"])


def test_device_metrics_are_null_where_files_are_missing(tmp_path: Path) -> None:
    metrics = device_metrics(0.0, now=5.0, proc=tmp_path / "proc", thermal=tmp_path / "sys")
    assert metrics["memory"] is None
    assert metrics["rss_mb"] is None
    assert metrics["cpu_temp_c"] is None
    assert metrics["uptime_s"] == 5.0
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "meminfo").write_text("MemTotal:  2048 kB\n")  # no MemAvailable
    (tmp_path / "proc" / "self" / "status").write_bytes(b"VmRSS:\t\xff kB\n")  # not text
    (tmp_path / "sys" / "thermal_zone0" / "temp").mkdir(parents=True)  # EISDIR on read
    metrics = device_metrics(0.0, now=5.0, proc=tmp_path / "proc", thermal=tmp_path / "sys")
    assert metrics["memory"] == {"total_mb": 2.0, "available_mb": None}
    assert metrics["rss_mb"] is None
    assert metrics["cpu_temp_c"] is None


@pytest.fixture
def finished_agent(broker: Mosquitto, tmp_path: Path) -> Agent:
    """The demo camera pipeline run over its 40 frames to the end."""
    source = {"kind": "files", "pattern": str(FRAMES / "*.jpg")}
    agent = Agent(
        load_settings(None, camera_config(broker, tmp_path / "state", source, debounce=2))
    )
    agent.run(threading.Event(), until_done=True)
    return agent


@pytest.mark.parametrize("count", [1, 2, 3, 10, 999, 1000])
def test_percentiles_are_numpys(count: int) -> None:
    """numpy's default (linear) percentiles, without numpy.percentile: it imports
    numpy.ma, which the agent would then carry for good."""
    samples = list(np.random.default_rng(count).lognormal(1.0, 0.8, size=count))
    qs = (0, 1, 50, 95, 99, 99.9, 100)
    expected = np.percentile(np.asarray(samples), qs)
    assert percentiles(samples, qs) == pytest.approx(expected, rel=1e-15, abs=0)
    assert percentiles([], qs) == []


def test_latency_percentiles_round_to_hundredths() -> None:
    assert latency_percentiles([]) == {}
    assert latency_percentiles([1.0, 2.0, 4.0]) == {"p50": 2.0, "p95": 3.8, "p99": 3.96}
    assert latency_percentiles([7.123456]) == {"p50": 7.12, "p95": 7.12, "p99": 7.12}


@pytest.mark.integration
def test_snapshot_of_a_real_agent(finished_agent: Agent) -> None:
    pipeline = finished_agent.pipelines[0]
    now = time.time()
    snap = snapshot("dev1", finished_agent.pipelines, finished_agent.outbox.stats(), now - 3, now)
    assert json.loads(json.dumps(snap)) == snap  # JSON all the way down
    assert (snap["v"], snap["device"], snap["uptime_s"]) == (1, "dev1", 3.0)
    assert TS.match(snap["ts"])
    assert snap["outbox"] == {"depth": 0, "bytes": 0, "dropped": 0, "expired": 0, "dead": 0}
    assert list(snap["pipelines"]) == ["cam"]
    cam = snap["pipelines"]["cam"]
    assert cam == pipeline_metrics(pipeline)
    assert (cam["inputs"], cam["inferences"], cam["errors"], cam["dropped"]) == (40, 40, 0, 0)
    assert cam["events"] == cam["decisions"] == 4
    assert cam["state"] == "square"
    assert set(cam["latency_ms"]) == {"p50", "p95", "p99"}
    assert 0 < cam["latency_ms"]["p50"] <= cam["latency_ms"]["p99"]
    assert cam["model"]["name"] == "shapes_int8"
    assert cam["bytes_in"] == sum(p.stat().st_size for p in FRAMES.glob("*.jpg"))
    assert cam["bandwidth_ratio"] > 10
    state = pipeline.state_payload()  # the retained state tells the same story
    assert {k: state[k] for k in ("inputs", "events", "bytes_out")} == {
        k: cam[k] for k in ("inputs", "events", "bytes_out")
    }
    lines = prometheus_text(snap).splitlines()
    assert 'edge_agent_inputs_total{pipeline="cam"} 40' in lines
    assert all(SAMPLE.match(line) or COMMENT.match(line) for line in lines)


@pytest.mark.integration
def test_drift_status_is_included_when_a_pipeline_has_one(
    finished_agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = finished_agent.pipelines[0]
    drift = {"score": 0.12, "drifting": False}
    monkeypatch.setattr(Pipeline, "drift_status", property(lambda _: drift), raising=False)
    assert pipeline_metrics(pipeline)["drift"] == drift


def synthetic_snapshot() -> dict[str, Any]:
    cam = {
        "inputs": 40,
        "dropped": 1,
        "errors": 2,
        "inferences": 37,
        "latency_ms": {"p50": 1.2, "p95": 3.25, "p99": 4.0},
        "decisions": 4,
        "state": 'say "hi"\\\n',
        "events": 4,
        "bytes_in": 123456,
        "bytes_out": 2048,
        "bandwidth_ratio": 60.3,
        "model": {"name": "shapes", "version": "2", "sha256": "0123456789ab"},
        "drift": None,
    }
    idle = dict(cam, latency_ms={}, bandwidth_ratio=None, state="none")
    return {
        "v": 1,
        "device": "dev1",
        "ts": "2026-11-28T08:50:38.123Z",
        "uptime_s": 12.5,
        "load": [0.5, 0.25, 0.1],
        "memory": {"total_mb": 3793.0, "available_mb": 2048.0},
        "rss_mb": 50.5,
        "cpu_temp_c": 48.3,
        "outbox": {"depth": 0, "bytes": 0, "dropped": 0, "expired": 0, "dead": 3},
        "pipelines": {"cam": cam, "idle": idle},
    }


def test_prometheus_text_follows_the_exposition_format() -> None:
    text = prometheus_text(synthetic_snapshot())
    assert text.endswith("\n")
    lines = text.splitlines()
    bad = [line for line in lines if not (SAMPLE.match(line) or COMMENT.match(line))]
    assert bad == []
    for expected in (
        'edge_agent_inputs_total{pipeline="cam"} 40',
        'edge_agent_inference_latency_ms{pipeline="cam",quantile="0.5"} 1.2',
        'edge_agent_inference_latency_ms{pipeline="cam",quantile="0.99"} 4.0',
        "edge_agent_outbox_depth 0",
        "edge_agent_outbox_dead_total 3",
        "edge_agent_cpu_temp_celsius 48.3",
        'edge_agent_load_average{period="15m"} 0.1',
        'edge_agent_model_info{pipeline="cam",name="shapes",version="2",sha256="0123456789ab"} 1',
        'edge_agent_state{pipeline="cam",state="say \\"hi\\"\\\\\\n"} 1',  # escaped
        'edge_agent_bandwidth_ratio{pipeline="cam"} 60.3',
        "# TYPE edge_agent_inputs_total counter",
        "# TYPE edge_agent_outbox_depth gauge",
    ):
        assert expected in lines
    # Nulls are left out, not written as 0: the idle pipeline has no latency yet.
    assert not any(line.startswith('edge_agent_bandwidth_ratio{pipeline="idle"') for line in lines)
    assert not any('pipeline="idle",quantile' in line for line in lines)
    # One HELP and one TYPE per family, before its samples.
    types = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(types) == len(set(types))
    for name in types:
        first = next(
            i for i, line in enumerate(lines) if line.startswith((f"{name}{{", f"{name} "))
        )
        assert lines[first - 1] == next(x for x in lines if x.startswith(f"# TYPE {name} "))


def test_prometheus_text_leaves_out_what_the_board_could_not_tell() -> None:
    snap = dict(synthetic_snapshot(), load=None, memory=None, rss_mb=None, cpu_temp_c=None)
    text = prometheus_text(snap)
    for name in ("load_average", "memory_total_mb", "rss_mb", "cpu_temp_celsius"):
        assert f"edge_agent_{name}" not in text
    assert "edge_agent_uptime_seconds 12.5" in text.splitlines()


@pytest.mark.integration
def test_metrics_server_serves_metrics_and_nothing_else() -> None:
    server = MetricsServer(free_port(), synthetic_snapshot)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert response.read().decode() == prometheus_text(synthetic_snapshot())
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/", timeout=5)
        assert missing.value.code == 404
    finally:
        server.close()
        server.close()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/metrics", timeout=2)


@pytest.fixture
def paho_publish(broker: Mosquitto) -> Iterator[Any]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="telemetry-test")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    yield lambda payload: client.publish("edge/dev1/telemetry", payload, qos=0)
    client.disconnect()
    client.loop_stop()


def run_for(publisher: TelemetryPublisher, seconds: float) -> threading.Thread:
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop,))
    thread.start()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    return thread


@pytest.mark.integration
def test_publisher_sends_every_interval(broker: Mosquitto, paho_publish: Any) -> None:
    sub = Subscriber(broker.port, "edge/dev1/telemetry")
    try:
        thread = run_for(TelemetryPublisher(1.0, synthetic_snapshot, paho_publish), 2.5)
        thread.join(timeout=5)
        assert not thread.is_alive()
        sub.wait_for(lambda s: len(s.messages) >= 2, timeout=2)
        assert len(sub.messages) == 2
        assert sub.messages[0].json() == synthetic_snapshot()
        assert not sub.messages[0].retain
    finally:
        sub.close()


@pytest.mark.integration
def test_publisher_survives_failures_and_logs_them_rate_limited(
    broker: Mosquitto,
    paho_publish: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0

    def flaky() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise OSError("meminfo vanished")
        return synthetic_snapshot()

    monkeypatch.setattr(telemetry, "limited", RateLimitedLog(telemetry.log))  # a fresh memory
    sub = Subscriber(broker.port, "edge/dev1/telemetry")
    try:
        with caplog.at_level(logging.ERROR, logger="edge_agent.app.telemetry"):
            run_for(TelemetryPublisher(0.1, flaky, paho_publish), 1.0).join(timeout=5)
        sub.wait_for(lambda s: len(s.messages) >= 2, timeout=2)
    finally:
        sub.close()
    failures = [r for r in caplog.records if "telemetry not sent" in r.getMessage()]
    assert len(failures) == 1  # three failures, one line
    assert "OSError: meminfo vanished" in failures[0].getMessage()


def test_interval_zero_means_off() -> None:
    collected: list[float] = []

    def collect() -> dict[str, Any]:
        collected.append(time.monotonic())
        return {}

    stop = threading.Event()
    thread = threading.Thread(
        target=TelemetryPublisher(0, collect, lambda _: None).run, args=(stop,)
    )
    thread.start()
    thread.join(timeout=2)  # returns at once although never stopped
    stop.set()
    assert not thread.is_alive()
    assert collected == []


def test_outbox_stats_keep_their_documented_names() -> None:
    snap = snapshot("d", [], OutboxStats(1, 2, 3, 4, 5), 0.0, 1.0)
    assert snap["outbox"] == {"depth": 1, "bytes": 2, "dropped": 3, "expired": 4, "dead": 5}
    assert snap["pipelines"] == {}

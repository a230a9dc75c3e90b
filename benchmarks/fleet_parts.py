"""The parts of benchmarks/fleet.py: the operator's site, a counting HTTP server,
a measured broker, and the fleet (real agents + a simulated-device process)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from edge_agent.devtools.localbroker import Mosquitto
from edge_agent.util.percentile import percentiles

PROJECT = Path(__file__).resolve().parents[1]
MODELS = PROJECT / "models"
VIBRATION = MODELS / "vibration_int8.tflite"
PYTHON = sys.executable


def percentile(values: list[float], q: float) -> float:
    return percentiles(values, [q])[0]


def run_cli(
    args: list[str], check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [PYTHON, "-m", "edge_agent", *args], capture_output=True, text=True, timeout=timeout,
        cwd=PROJECT, check=False,
    )  # fmt: skip
    if check and done.returncode != 0:
        raise RuntimeError(f"edge-agent {args[:2]} exited {done.returncode}: {done.stderr[-800:]}")
    return done


class Site:
    """Keys, model files v1..v3 (the same network, other bytes), manifest v1 signed."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="edge-agent-fleet-bench-"))
        self.root, self.work = self.base / "site", self.base / "work"
        self.root.mkdir()
        self.work.mkdir()
        self.private, self.public = self.base / "key.pem", self.base / "key.pub"
        run_cli(
            ["manifest", "keygen", "--private", str(self.private), "--public", str(self.public)]
        )
        self.sha = {n: self._model(n) for n in (1, 2, 3)}
        manifest = self.root / "manifest.json"
        run_cli(self._create(1, manifest))
        run_cli(["manifest", "sign", str(manifest), "--key", str(self.private)])

    def _model(self, n: int) -> str:
        data = VIBRATION.read_bytes() + b"\0" * (64 * (n - 1))
        (self.root / f"vibration-{n}.tflite").write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def _create(self, n: int, output: Path) -> list[str]:
        model = self.root / f"vibration-{n}.tflite"
        return ["manifest", "create", str(model), "--name", f"vibration={model}",
                "--version", str(n), "-o", str(output)]  # fmt: skip

    def new_manifest(self, n: int) -> Path:
        path = self.work / f"new-{n}.json"
        run_cli(self._create(n, path))
        return path

    def published(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.root / "manifest.json").read_bytes())
        return document

    def __enter__(self) -> Site:
        return self

    def __exit__(self, *_: object) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = (self.server.root / unquote(urlsplit(self.path).path).lstrip("/")).resolve()
        request = len(getattr(self, "raw_requestline", b"")) + len(str(self.headers))
        if not path.is_relative_to(self.server.root) or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            size = self._end()
            self.server.count(path.name, 304, request + size)
            return
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        size = self._end()
        self.wfile.write(data)
        self.server.count(path.name, 200, request + size + len(data))

    def _end(self) -> int:
        size = sum(len(line) for line in getattr(self, "_headers_buffer", [])) + 2
        self.end_headers()
        return size


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root.resolve()
        self.lock = threading.Lock()
        self.totals = {"manifest": 0, "304": 0, "bytes_304": 0, "requests": 0}

    def count(self, name: str, status: int, size: int) -> None:
        with self.lock:
            self.totals["requests"] += 1
            if name == "manifest.json":
                self.totals["manifest"] += 1
            if status == 304:
                self.totals["304"] += 1
                self.totals["bytes_304"] += size


class StaticSite:
    def __init__(self, root: Path) -> None:
        self.server = _Server(root)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def counts(self) -> dict[str, int]:
        with self.server.lock:
            return dict(self.server.totals)

    def bytes_per_304(self) -> float:
        c = self.counts()
        return round(c["bytes_304"] / c["304"], 1) if c["304"] else 0.0

    def __enter__(self) -> StaticSite:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class Broker:
    """mosquitto without persistence (a SIGKILL loses its retained messages, as a
    crash between autosaves does), its CPU sampled from /proc."""

    def __init__(self, work: Path) -> None:
        (work / "broker").mkdir()
        self.mosquitto = Mosquitto(work / "broker", persistence=False)
        self.port = self.mosquitto.port
        self.peak_cpu = 0.0
        self._last: tuple[float, float] | None = None

    def kill(self) -> None:
        self.mosquitto.kill()

    def start_measured(self) -> float:
        self.mosquitto.start()
        self.peak_cpu, self._last = 0.0, None
        return time.time()

    def _pid(self) -> int:
        assert self.mosquitto.process is not None
        return self.mosquitto.process.pid

    def sample(self) -> None:
        """CPU % over at least 0.5 s windows (100 % = one core)."""
        try:
            fields = Path(f"/proc/{self._pid()}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        now = time.monotonic()
        if self._last is None:
            self._last = (now, cpu)
        elif now - self._last[0] >= 0.5:
            self.peak_cpu = max(
                self.peak_cpu, round(100 * (cpu - self._last[1]) / (now - self._last[0]), 1)
            )
            self._last = (now, cpu)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self._pid()}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return 0.0

    def __enter__(self) -> Broker:
        self.mosquitto.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.mosquitto.stop()

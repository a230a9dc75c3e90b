import logging
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.util.logs import JournalFormatter, RateLimitedLog


def record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("edge_agent.x", level, __file__, 1, msg, (), None)


def test_journal_lines_carry_syslog_priorities_and_no_timestamp() -> None:
    formatter = JournalFormatter()
    assert formatter.format(record(logging.ERROR, "camera gone")) == "<3>edge_agent.x: camera gone"
    assert formatter.format(record(logging.WARNING, "w")).startswith("<4>")
    assert formatter.format(record(logging.INFO, "i")).startswith("<6>")
    assert formatter.format(record(logging.DEBUG, "d")).startswith("<7>")
    two = formatter.format(record(logging.ERROR, "a\nb"))
    assert two == "<3>edge_agent.x: a\n<3>b"  # journald reads each line on its own


def test_repeats_are_rate_limited_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    logger = logging.getLogger("test.rate")
    limited = RateLimitedLog(logger, interval=60.0, clock=lambda: now[0])
    logged = [limited.error("cam", "camera %s gone", "porch") for _ in range(100)]
    assert logged.count(True) == 1
    now[0] = 61.0
    assert limited.error("cam", "camera %s gone", "porch")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["camera porch gone", "camera porch gone (99 similar messages suppressed)"]


def test_under_journald_errors_are_prefixed(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"JOURNAL_STREAM": "8:1234", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 78
    assert done.stderr.startswith("<3>edge-agent: error: ")

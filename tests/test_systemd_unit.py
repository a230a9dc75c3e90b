"""The systemd unit and its drop-in example, checked by systemd's own tools.

`systemd-analyze verify` insists that ExecStart's program exists and is
executable; /opt/edge-agent/bin/edge-agent exists only on an installed device.
So the unit is verified as a copy, in a temporary directory, whose ExecStart
points at this virtualenv's `edge-agent` (the same console script the device
runs); everything else is byte for byte the shipped file. Drop-ins in
`<copy>.d/` beside it are read by both `verify` and `security`, as systemd
would read /etc/systemd/system/edge-agent.service.d/.

Neither command needs systemd as PID 1. Without systemd-analyze the tests skip,
except in CI, where they fail: there it must be installed (apt-get install systemd).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.errors import EXIT_CONFIG

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1]
UNIT = PROJECT / "systemd" / "edge-agent.service"
DROP_IN = PROJECT / "systemd" / "camera-serial.conf.example"
AUDIO_DROP_IN = PROJECT / "systemd" / "audio.conf.example"
DROP_INS = pytest.mark.parametrize("drop_in", [DROP_IN, AUDIO_DROP_IN], ids=["camera", "audio"])
SHIPPED_EXEC = "ExecStart=/opt/edge-agent/bin/edge-agent "
MAX_EXPOSURE = 2.0
OFFLINE_SINCE = 250  # `systemd-analyze security --offline=` first appeared in systemd 250


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing; CI must install it (apt-get install systemd)")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout
    found = re.match(r"systemd (\d+)", version)
    assert found, version
    if int(found.group(1)) < OFFLINE_SINCE:
        pytest.fail(f"systemd {found.group(1)} is too old: security --offline needs >= 250")
    return path


def stage(directory: Path, *, drop_in: Path | None = None, extra: str = "") -> Path:
    """A copy of the unit that `verify` accepts anywhere: see the module docstring."""
    executable = Path(sys.executable).with_name("edge-agent")
    if not os.access(executable, os.X_OK):
        executable = Path(shutil.which("true") or "/bin/true")
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(SHIPPED_EXEC) == 1
    text = text.replace(SHIPPED_EXEC, f"ExecStart={executable} ") + extra
    unit = directory / UNIT.name
    unit.write_text(text, encoding="utf-8")
    if drop_in is not None:
        dropins = directory / f"{UNIT.name}.d"
        dropins.mkdir()
        shutil.copyfile(drop_in, dropins / "devices.conf")
    return unit


def verify(analyze: str, unit: Path) -> list[str]:
    """What `systemd-analyze verify` has to say about our unit: unknown keys and
    bad values are only warnings (exit status 0), so they are returned too."""
    done = run(analyze, "verify", unit)
    ours = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if str(unit.parent) in line or UNIT.name in line
    ]
    if done.returncode != 0:
        ours.append(f"exit status {done.returncode}: {done.stderr.strip()}")
    return ours


def exposure(analyze: str, unit: Path) -> float:
    done = run(analyze, "security", "--offline=true", unit)
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert found, f"no exposure level in:\n{done.stdout}\n{done.stderr}"
    return float(found.group(1))


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_the_unit_verifies_clean(analyze: str, tmp_path: Path) -> None:
    assert verify(analyze, stage(tmp_path)) == []


def test_verify_would_report_a_bad_key(analyze: str, tmp_path: Path) -> None:
    """The check above is not vacuous: a typo in the unit is caught."""
    unit = stage(tmp_path, extra="[Service]\nProtectSytem=strict\nRestartSec=5x\n")
    problems = verify(analyze, unit)
    assert any("ProtectSytem" in line for line in problems), problems
    assert any("5x" in line for line in problems), problems


@DROP_INS
def test_the_unit_with_the_device_drop_in_verifies_clean(
    analyze: str, tmp_path: Path, drop_in: Path
) -> None:
    assert verify(analyze, stage(tmp_path, drop_in=drop_in)) == []


def test_exposure_level(analyze: str, tmp_path: Path) -> None:
    level = exposure(analyze, stage(tmp_path))
    assert level <= MAX_EXPOSURE
    print(f"exposure: {level}")


@DROP_INS
def test_exposure_level_with_devices_enabled(analyze: str, tmp_path: Path, drop_in: Path) -> None:
    assert exposure(analyze, stage(tmp_path, drop_in=drop_in)) <= MAX_EXPOSURE


def settings(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values, keeping repeated keys (SystemCallFilter=...)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


def test_the_unit_keeps_its_contract_with_the_agent() -> None:
    unit = settings(UNIT.read_text(encoding="utf-8"))
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["ExecStart"] == (
        "/opt/edge-agent/bin/edge-agent run --config /etc/edge-agent/config.toml"
    )
    assert service["RestartPreventExitStatus"] == str(EXIT_CONFIG)
    assert service["Restart"] == "on-failure"
    assert service["WatchdogSec"] == "30"
    assert service["User"] == "edge-agent"
    # numpy's OpenBLAS calls mbind() at import: SIGSYS without this
    assert service["SystemCallErrorNumber"] == "EPERM"
    assert unit["Service"]["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    # [Unit] settings: systemd ignores StartLimitIntervalSec= in [Service]
    assert unit["Unit"]["StartLimitIntervalSec"] == ["300"]
    assert unit["Unit"]["StartLimitBurst"] == ["5"]
    assert "ProcSubset" not in service  # would hide /proc/cpuinfo from XNNPACK on ARM


@DROP_INS
def test_the_drop_in_only_touches_devices(drop_in: Path) -> None:
    found = settings(drop_in.read_text(encoding="utf-8"))
    assert set(found) == {"Service"}
    assert set(found["Service"]) == {"PrivateDevices", "DeviceAllow", "SupplementaryGroups"}
    assert found["Service"]["PrivateDevices"] == ["no"]


def test_the_audio_drop_in_opens_the_sound_cards_only() -> None:
    service = settings(AUDIO_DROP_IN.read_text(encoding="utf-8"))["Service"]
    assert service["DeviceAllow"] == ["char-alsa rw"]
    assert service["SupplementaryGroups"] == ["audio"]

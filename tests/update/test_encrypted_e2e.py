"""An encrypted model update as an operator and a device live it: the device makes
its key (`keys init`), the operator files its `keys show` output in a group and
publishes with `manifest create --encrypt --recipients` on a real HTTPS server; a
running agent, told over MQTT (a real mosquitto) to check, downloads ciphertext,
decrypts it in memory, swaps it in and commits it. Nothing on the card is ever
the plaintext model or labels; a restart loads the stored ciphertext."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.app.agent import Agent
from edge_agent.cli import main as edge_agent
from edge_agent.config.settings import load_settings
from edge_agent.sources.base import Frame
from tests.broker import Mosquitto
from tests.conftest import DEMO_MODELS
from tests.subscriber import Subscriber
from tests.update.fixtures import Site, sha256
from tests.update.servers import CA, StaticServer
from tests.update.test_update_e2e import Running, agent_config, ask_for_update, statuses

pytestmark = [pytest.mark.integration, pytest.mark.runtime]

SHAPES = DEMO_MODELS / "shapes_int8.tflite"
V2 = SHAPES.read_bytes() + b"\0" * 16  # the same network, other bytes
LABELS = b"nothing\nball\nbox\n"


def enroll(capsys: pytest.CaptureFixture[str], state: Path, recipients: Path) -> str:
    """`keys init` on the device, its `keys show` filed by the operator; the key id."""
    assert edge_agent(["keys", "init", "--state-dir", str(state)]) == 0
    capsys.readouterr()
    assert edge_agent(["keys", "show", "--state-dir", str(state)]) == 0
    shown = capsys.readouterr().out
    recipients.mkdir(parents=True, exist_ok=True)
    (recipients / "dev1.pub").write_text(shown)
    return shown.split("device key ")[1].split()[0]


def update_reports(sub: Subscriber) -> list[dict[str, object]]:
    return [m.json() for m in sub.on("dev1/update")]


def test_an_encrypted_update_end_to_end_leaves_no_plaintext_on_the_card(
    broker: Mosquitto,
    tmp_path: Path,
    site: Site,
    server: StaticServer,
    ca: CA,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = agent_config(broker, tmp_path, server, site, ca)
    config["update"]["probation_inferences"] = 5
    state = tmp_path / "state"
    state.mkdir()
    recipients = tmp_path / "recipients"
    enroll(capsys, state, recipients / "porch.group")
    sub = Subscriber(broker.port, "edge/dev1/#")
    running = Running(config)
    try:
        sub.wait_for(lambda s: len(s.on("/cam/event")) >= 1)
        site.publish_encrypted(V2, 2, recipients, labels=LABELS)
        ask_for_update(broker)
        sub.wait_for(lambda s: "committed" in statuses(s), timeout=30)
        pipeline = running.agent.pipelines[0]
        assert pipeline.model_info.version == "2"
        assert pipeline.model_info.sha256 == sha256(V2)
        assert pipeline.stats.model_errors == 0
        sub.wait_for(lambda s: bool(_labels_of_version(s, "2")))
        assert _labels_of_version(sub, "2") <= {"nothing", "ball", "box"}
    finally:
        running.close()
        sub.close()
    states = statuses(sub)
    assert states.index("downloading") < states.index("verifying") < states.index("committed")
    committed = next(r for r in update_reports(sub) if r["state"] == "committed")
    assert committed["model"] == {"name": "shapes", "version": "2", "sha256": sha256(V2)[:12]}

    files = [path for path in sorted(state.rglob("*")) if path.is_file()]
    assert any(path.suffix == ".tflite" for path in files)  # the stored (encrypted) model
    for path in files:  # outbox, state.json, the store, group key files, the device key
        data = path.read_bytes()
        assert data != V2, path
        assert V2 not in data, path
        assert LABELS not in data, path

    again = Agent(load_settings(None, config))  # a restart: from the stored ciphertext
    try:
        assert again.pipelines[0].model_info.version == "2"
        assert again.pipelines[0].model.sha256 == sha256(V2)
        frame = Frame((DEMO_MODELS / "samples/camera/frame_015.jpg").read_bytes(), "test", 0.0)
        again.pipelines[0].process(frame)  # debounce = 2: the second one decides
        decision = again.pipelines[0].process(frame)
        assert decision is not None
        assert decision.label == "ball"  # the update's labels, decrypted in memory
    finally:
        again.outbox.close()
        again.state_lock.release()


def test_a_device_that_is_not_a_recipient_keeps_its_model_and_says_so(
    broker: Mosquitto,
    tmp_path: Path,
    site: Site,
    server: StaticServer,
    ca: CA,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = agent_config(broker, tmp_path, server, site, ca)
    (tmp_path / "state").mkdir()
    assert edge_agent(["keys", "init", "--state-dir", str(tmp_path / "state")]) == 0
    other = tmp_path / "other-device"
    other.mkdir()
    enroll(capsys, other, tmp_path / "recipients")  # the release is for another device only
    sub = Subscriber(broker.port, "edge/dev1/#")
    running = Running(config)
    try:
        sub.wait_for(lambda s: len(s.on("/cam/event")) >= 1)
        site.publish_encrypted(V2, 2, tmp_path / "recipients", labels=LABELS)
        ask_for_update(broker)
        sub.wait_for(lambda s: "rejected" in statuses(s), timeout=30)
        pipeline = running.agent.pipelines[0]
        served = pipeline.stats.inferences
        sub.wait_for(lambda s: pipeline.stats.inferences > served + 10)
        assert pipeline.model_info.version == "1"
    finally:
        running.close()
        sub.close()
    assert server.count("/shapes-2.tflite.enc") == 0
    retained = Subscriber(broker.port, "edge/dev1/update", client_id="late-reader")
    try:
        retained.wait_for(lambda s: len(s.messages) >= 1)
        last = retained.messages[0]
    finally:
        retained.close()
    assert last.retain
    assert last.json()["state"] == "rejected"
    assert str(last.json()["reason"]).startswith("not a recipient")
    assert list((tmp_path / "state/updates/models").rglob("*.tflite")) == []


def _labels_of_version(sub: Subscriber, version: str) -> set[str]:
    events = [m.json() for m in sub.on("/cam/event")]
    return {e["label"] for e in events if e["model"]["version"] == version}

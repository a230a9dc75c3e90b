"""The retained info payload (edge_agent.mqtt.fleetinfo): fields, size, board reading."""

import json
import platform
from pathlib import Path

from edge_agent.mqtt.fleetinfo import Board, info_payload, info_topic, read_board
from edge_agent.mqtt.payloads import ModelInfo, encode

SHA = "ab" * 32


def payload(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "device": "gate-2",
        "agent_version": "0.4.0",
        "runtime": "litert",
        "board": Board("aarch64", "Raspberry Pi 4 Model B Rev 1.4"),
        "models": {"porch": ModelInfo("shapes", "3", SHA)},
        "manifest_version": 7,
        "bucket": 42.1666,
        "tags": {"site": "lab", "hw": "pi4"},
        "epoch": 1_800_000_000.5,
    }
    fields.update(overrides)
    return info_payload(**fields)  # type: ignore[arg-type]


def test_fields_of_schema_1() -> None:
    info = payload()
    assert info["v"] == 1
    assert info["models"] == {"porch": {"name": "shapes", "version": "3", "sha256": SHA[:12]}}
    assert (info["manifest"], info["bucket"]) == (7, 42.17)
    assert info["tags"] == {"hw": "pi4", "site": "lab"}
    assert (info["arch"], info["board"]) == ("aarch64", "Raspberry Pi 4 Model B Rev 1.4")
    assert info["ts"] == "2027-01-15T08:00:00.500Z"


def test_small_enough_for_thin_links() -> None:
    assert len(encode(payload())) < 320
    assert info_topic("edge", "gate-2") == "edge/gate-2/info"


def test_nothing_trusted_yet_is_null() -> None:
    info = json.loads(encode(payload(manifest_version=None, bucket=None)))
    assert info["manifest"] is None
    assert info["bucket"] is None


def test_board_from_the_device_tree(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    board = read_board(model)
    assert board == Board(platform.machine(), "Raspberry Pi 5 Model B Rev 1.0")


def test_no_device_tree_means_no_board_model(tmp_path: Path) -> None:
    assert read_board(tmp_path / "missing").model is None

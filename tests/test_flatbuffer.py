import pytest

from edge_agent.model.flatbuffer import check_tflite

from .conftest import BROKEN, HELLO_WORLD, LSTM, MOBILENET


@pytest.mark.parametrize("path", [HELLO_WORLD, LSTM, MOBILENET, BROKEN], ids=lambda p: p.name)
def test_intact_models_pass(path: object) -> None:
    assert check_tflite(path.read_bytes()) is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", [HELLO_WORLD, LSTM, BROKEN], ids=lambda p: p.name)
def test_every_truncation_is_caught(path: object) -> None:
    data = path.read_bytes()  # type: ignore[attr-defined]
    passed = [n for n in range(len(data)) if check_tflite(data[:n]) is None]
    assert passed == []


def test_mobilenet_truncations_are_caught_up_to_its_appended_label_zip() -> None:
    data = MOBILENET.read_bytes()
    flatbuffer_end = data.index(b"tench, Tinca tinca")  # the labels zip the runtime never reads
    lengths = range(0, flatbuffer_end, 997)
    assert all(check_tflite(data[:n]) is not None for n in lengths)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"\x00" * 64, "identifier"),
        (b"\x10\x00\x00\x00TFL3" + b"\xff" * 8, "truncated or corrupt"),
    ],
)
def test_garbage_is_named(data: bytes, reason: str) -> None:
    message = check_tflite(data)
    assert message is not None
    assert reason in message

"""Encrypted models: the file format, its failure reasons, group keys, and the device's
decryption into memory, on the real MobileNet fixture."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.errors import (
    DecryptError,
    HashError,
    ModelError,
    NotRecipientError,
    TamperedError,
    TruncatedError,
    WrongKeyError,
)
from edge_agent.model.labels import align_labels, read_labels, top_k
from edge_agent.model.preprocess import ImagePreprocessor
from edge_agent.model.runtime import Model
from edge_agent.update import envelope
from edge_agent.update.decrypt import (
    decrypt_model,
    device_keyring,
    load_model_bytes,
    recipient_groups,
)
from edge_agent.update.envelope import MAGIC, key_id, keyring, seal
from edge_agent.update.groupkey import open_group_key, seal_group_key
from edge_agent.update.manifest import Encryption, FileRef, GroupRef

from .conftest import FIXTURE_IMAGES, IMAGENET_LABELS, MOBILENET

PLAINTEXT = MOBILENET.read_bytes()
CHUNKS = -(-len(PLAINTEXT) // envelope.CHUNK_SIZE)  # 64 KiB each


@pytest.fixture(scope="module")
def device() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


@pytest.fixture(scope="module")
def sealed(device: X25519PrivateKey) -> bytes:
    return seal(PLAINTEXT, [device.public_key()])


def ref_for(
    data: bytes, plaintext: bytes = PLAINTEXT, cipher: str = "chacha20-poly1305"
) -> FileRef:
    header = envelope.read_header(io.BytesIO(data))
    encryption = Encryption(
        cipher, tuple(header.wrapped), len(plaintext), hashlib.sha256(plaintext).hexdigest()
    )
    return FileRef("m.tflite.enc", len(data), hashlib.sha256(data).hexdigest(), encryption)


def write(tmp_path: Path, data: bytes, name: str = "m.tflite.enc") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def header_end(data: bytes) -> int:
    return len(MAGIC) + 4 + int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "big")


@pytest.mark.runtime
def test_decrypted_model_loads_from_bytes_and_still_sees_a_macaw(
    tmp_path: Path, device: X25519PrivateKey, sealed: bytes, runtime_name: str
) -> None:
    path = write(tmp_path, sealed)
    plaintext = decrypt_model(path, ref_for(sealed), device)
    assert plaintext == PLAINTEXT
    model = Model.load(plaintext, runtime=runtime_name, label="mobilenet (decrypted)")  # type: ignore[arg-type]
    assert model.sha256 == hashlib.sha256(PLAINTEXT).hexdigest()
    tensor = ImagePreprocessor(model.inputs[0]).prepare(
        (FIXTURE_IMAGES / "parrot.jpg").read_bytes()
    )
    labels = align_labels(read_labels(IMAGENET_LABELS), model.outputs[0].shape[-1])
    assert top_k(model.infer(tensor)[0], labels, 1)[0].label == "macaw"


def test_the_ciphertext_holds_no_plaintext(sealed: bytes) -> None:
    assert sealed.startswith(MAGIC)
    for offset in range(0, len(PLAINTEXT) - 32, 50_000):
        assert PLAINTEXT[offset : offset + 32] not in sealed
    assert len(sealed) == header_end(sealed) + len(PLAINTEXT) + CHUNKS * envelope.TAG_LENGTH


@pytest.mark.parametrize("cipher", sorted(envelope.CIPHERS))
@pytest.mark.parametrize("size", [1, 65536, 65537, 200_000])
def test_round_trip_for_each_cipher_and_chunk_boundary(
    tmp_path: Path, device: X25519PrivateKey, cipher: str, size: int
) -> None:
    plaintext = PLAINTEXT[:size]
    data = seal(plaintext, [device.public_key()], cipher=cipher)
    assert (
        decrypt_model(write(tmp_path, data), ref_for(data, plaintext, cipher), device) == plaintext
    )


def test_two_seals_of_one_model_differ(device: X25519PrivateKey, sealed: bytes) -> None:
    """A fresh content key every time: equal ciphertexts would reveal equal models."""
    assert seal(PLAINTEXT, [device.public_key()]) != sealed


def test_a_device_that_is_not_a_recipient_is_told_so(
    tmp_path: Path, sealed: bytes, device: X25519PrivateKey
) -> None:
    other = X25519PrivateKey.generate()
    with pytest.raises(NotRecipientError, match="not a recipient") as caught:
        decrypt_model(write(tmp_path, sealed), ref_for(sealed), other)
    assert key_id(device) in str(caught.value)
    assert key_id(other) in str(caught.value)


def test_a_rotated_device_key_no_longer_opens_old_files(
    tmp_path: Path, device: X25519PrivateKey, sealed: bytes
) -> None:
    rotated = X25519PrivateKey.generate()  # keys init --force: the device must be re-enrolled
    with pytest.raises(NotRecipientError, match=f"encrypted for key\\(s\\) {key_id(device)}"):
        decrypt_model(write(tmp_path, sealed), ref_for(sealed), rotated)
    again = seal(PLAINTEXT, [rotated.public_key()])  # re-wrapped for the new key
    assert decrypt_model(write(tmp_path, again), ref_for(again), rotated) == PLAINTEXT


def test_a_tampered_tag_fails_authentication(
    tmp_path: Path, device: X25519PrivateKey, sealed: bytes
) -> None:
    data = bytearray(sealed)
    data[-1] ^= 0x01  # the last chunk's GCM/Poly1305 tag
    with pytest.raises(
        TamperedError,
        match=rf"authentication failed \(tampered ciphertext\) in chunk {CHUNKS} of {CHUNKS}$",
    ):
        decrypt_model(write(tmp_path, bytes(data)), ref_for(sealed), device)


def test_a_flipped_bit_in_the_middle_names_its_chunk(
    tmp_path: Path, device: X25519PrivateKey, sealed: bytes
) -> None:
    data = bytearray(sealed)
    data[header_end(sealed) + 3 * (envelope.CHUNK_SIZE + 16) + 100] ^= 0x80
    with pytest.raises(TamperedError, match=f"in chunk 4 of {CHUNKS}$"):
        decrypt_model(write(tmp_path, bytes(data)), ref_for(sealed), device)


def test_reordered_chunks_fail(tmp_path: Path, device: X25519PrivateKey, sealed: bytes) -> None:
    start, size = header_end(sealed), envelope.CHUNK_SIZE + 16
    first, second = sealed[start : start + size], sealed[start + size : start + 2 * size]
    swapped = sealed[:start] + second + first + sealed[start + 2 * size :]
    with pytest.raises(TamperedError, match=f"in chunk 1 of {CHUNKS}$"):
        decrypt_model(write(tmp_path, swapped), ref_for(sealed), device)


def test_a_tampered_wrapped_key_is_named(
    tmp_path: Path, device: X25519PrivateKey, sealed: bytes
) -> None:
    end = header_end(sealed)
    header = json.loads(sealed[len(MAGIC) + 4 : end])
    wrapped = bytearray(envelope.parse_wrapped(header["recipients"][0]["wrapped_key"], "test"))
    wrapped[40] ^= 0x01  # inside the sealed content key, after HPKE's 32-byte enc
    header["recipients"][0]["wrapped_key"] = envelope.b64(bytes(wrapped))
    encoded = json.dumps(header, separators=(",", ":")).encode()
    data = MAGIC + struct.pack(">I", len(encoded)) + encoded + sealed[end:]
    with pytest.raises(TamperedError, match="tampered wrapped key"):
        decrypt_model(write(tmp_path, data), ref_for(sealed), device)


@pytest.mark.parametrize("cut", [1, 70_000, 10])
def test_a_truncated_file_is_named_truncated(
    tmp_path: Path, device: X25519PrivateKey, sealed: bytes, cut: int
) -> None:
    data = sealed[:cut] if cut < 100 else sealed[:-cut]
    with pytest.raises(TruncatedError, match="truncated"):
        decrypt_model(write(tmp_path, data), ref_for(sealed), device)


def test_appended_bytes_are_refused(
    tmp_path: Path, device: X25519PrivateKey, sealed: bytes
) -> None:
    with pytest.raises(TamperedError, match="appended"):
        decrypt_model(write(tmp_path, sealed + b"x"), ref_for(sealed), device)


def test_a_file_that_does_not_match_its_manifest_entry_is_refused(
    tmp_path: Path, device: X25519PrivateKey, sealed: bytes
) -> None:
    ref = ref_for(sealed)
    assert ref.encryption is not None
    wrong = FileRef(
        ref.url,
        ref.length,
        ref.sha256,
        Encryption(
            ref.encryption.cipher,
            ref.encryption.recipients,
            ref.encryption.plaintext_length,
            "0" * 64,
        ),
    )
    with pytest.raises(HashError, match="does not match its manifest entry"):
        decrypt_model(write(tmp_path, sealed), wrong, device)


def test_not_our_format_is_refused(tmp_path: Path, device: X25519PrivateKey) -> None:
    with pytest.raises(DecryptError, match="not an edge-agent encrypted file"):
        decrypt_model(
            write(tmp_path, PLAINTEXT), ref_for(seal(b"x", [device.public_key()]), b"x"), device
        )


def test_the_flatbuffer_check_runs_on_decrypted_bytes(
    tmp_path: Path, device: X25519PrivateKey
) -> None:
    """A truncated model, encrypted intact: decryption succeeds, loading refuses it
    before any runtime parses it."""
    cut = PLAINTEXT[: len(PLAINTEXT) // 2]
    path = write(tmp_path, seal(cut, [device.public_key()]))
    with pytest.raises(ModelError, match="truncated or corrupt"):
        Model.load(load_model_bytes(path, keyring([device])), label="half a model")


def test_model_loader_reads_plain_and_encrypted_files(
    tmp_path: Path, device: X25519PrivateKey, sealed: bytes
) -> None:
    assert load_model_bytes(MOBILENET, None) == PLAINTEXT
    path = write(tmp_path, sealed)
    assert load_model_bytes(path, keyring([device])) == PLAINTEXT
    with pytest.raises(ModelError, match="no device key"):
        load_model_bytes(path, None)
    with pytest.raises(ModelError, match="not a recipient"):
        load_model_bytes(path, keyring([X25519PrivateKey.generate()]))


# -- groups ------------------------------------------------------------------------


def group_ref(name: str, key: X25519PrivateKey) -> GroupRef:
    raw = envelope.raw_public(key.public_key())
    return GroupRef(name, key_id(key), raw, f"groups/{name}/{key_id(key)}/")


def test_a_group_member_opens_a_file_wrapped_to_its_group(
    tmp_path: Path, device: X25519PrivateKey
) -> None:
    group = X25519PrivateKey.generate()
    data = seal(PLAINTEXT, [group.public_key()])
    ref = ref_for(data)
    files = {
        f"groups/porch/{key_id(group)}/{key_id(device)}.json": seal_group_key(
            "porch", group, device.public_key()
        )
    }
    assert ref.encryption is not None
    ring = device_keyring(ref.encryption, device, [group_ref("porch", group)], files.get)
    assert set(ring) == {key_id(device), key_id(group)}
    assert decrypt_model(write(tmp_path, data), ref, ring) == PLAINTEXT


def test_a_device_removed_from_a_rotated_group_cannot_open_the_next_release(
    device: X25519PrivateKey,
) -> None:
    stays = X25519PrivateKey.generate()
    old_group, new_group = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    old_file = seal_group_key("porch", old_group, device.public_key())
    # Rotation: a new group key, wrapped to the remaining member only.
    files = {
        f"groups/porch/{key_id(new_group)}/{key_id(stays)}.json": seal_group_key(
            "porch", new_group, stays.public_key()
        )
    }
    release = seal(PLAINTEXT, [new_group.public_key()])
    encryption = ref_for(release).encryption
    assert encryption is not None
    groups = [group_ref("porch", new_group)]
    with pytest.raises(NotRecipientError, match="not a member of group\\(s\\) porch"):
        device_keyring(encryption, device, groups, files.get)
    # The old group key it still holds opens nothing new.
    ring = keyring([device, open_group_key(old_file, device, old_group.public_key())])
    with pytest.raises(NotRecipientError, match="not a recipient"):
        envelope.open_stream(io.BytesIO(release), len(release), ring)
    assert key_id(new_group) in device_keyring(encryption, stays, groups, files.get)


def test_recipients_are_checked_before_any_download(device: X25519PrivateKey) -> None:
    group = X25519PrivateKey.generate()
    encryption = Encryption("chacha20-poly1305", (key_id(group),), 1, "0" * 64)
    assert recipient_groups(encryption, key_id(device), [group_ref("porch", group)]) == [
        group_ref("porch", group)
    ]
    with pytest.raises(NotRecipientError, match="not a recipient"):
        recipient_groups(encryption, key_id(device), [])
    direct = Encryption("chacha20-poly1305", (key_id(device),), 1, "0" * 64)
    assert recipient_groups(direct, key_id(device), []) == []


def test_a_stale_group_file_is_the_wrong_key(device: X25519PrivateKey) -> None:
    old_group, new_group = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    stale = seal_group_key("porch", old_group, device.public_key())  # a CDN's cached copy
    with pytest.raises(WrongKeyError, match="stale group file"):
        open_group_key(stale, device, new_group.public_key())


def test_a_forged_group_file_cannot_inject_a_key(device: X25519PrivateKey) -> None:
    """Anyone can wrap a key to the device's public key; it must be the group's."""
    group, forged = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    document = json.loads(seal_group_key("porch", forged, device.public_key()))
    document["group_key_id"] = key_id(group)
    with pytest.raises(TamperedError, match="tampered wrapped key"):
        open_group_key(json.dumps(document).encode(), device, group.public_key())


def test_a_tampered_group_file_is_named(device: X25519PrivateKey) -> None:
    group = X25519PrivateKey.generate()
    document = json.loads(seal_group_key("porch", group, device.public_key()))
    wrapped = bytearray(envelope.parse_wrapped(document["wrapped_key"], "test"))
    wrapped[-1] ^= 0x01
    document["wrapped_key"] = envelope.b64(bytes(wrapped))
    with pytest.raises(TamperedError, match="tampered wrapped key"):
        open_group_key(json.dumps(document).encode(), device, group.public_key())
    with pytest.raises(NotRecipientError):
        open_group_key(
            seal_group_key("porch", group, device.public_key()),
            X25519PrivateKey.generate(),
            group.public_key(),
        )

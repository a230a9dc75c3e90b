"""The store's cache of group key files: pure file I/O, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_agent.update.groupcache import KEPT, GroupCache

DEVICE = "0123456789abcdef"
OTHER = "fedcba9876543210"


def group_id(index: int) -> str:
    return f"{index:016x}"


def test_saved_files_are_read_back_per_device_key(tmp_path: Path) -> None:
    cache = GroupCache(tmp_path / "groups")
    cache.save("porch", group_id(1), bytes(32), DEVICE, b'{"member": 1}\n')
    cache.save("porch", group_id(2), bytes(range(32)), OTHER, b"{}")
    got = cache.get(group_id(1), DEVICE)
    assert got is not None
    assert (got.name, got.public_key, got.data) == ("porch", bytes(32), b'{"member": 1}\n')
    assert [g.key_id for g in cache.load(DEVICE)] == [group_id(1)]
    assert cache.get(group_id(2), DEVICE) is None  # another device key's file
    assert cache.load("1111111111111111") == []


def test_at_most_kept_files_per_device_key_the_newest(tmp_path: Path) -> None:
    cache = GroupCache(tmp_path / "groups")
    for index in range(KEPT + 3):
        cache.save("porch", group_id(index), bytes(32), DEVICE, b"{}")
        path = tmp_path / "groups" / f"{group_id(index)}-{DEVICE}.json"
        os.utime(path, (1000 + index, 1000 + index))  # distinct times on coarse clocks
    assert {g.key_id for g in cache.load(DEVICE)} == {group_id(i) for i in range(3, KEPT + 3)}
    cache.save("porch", group_id(99), bytes(32), DEVICE, b"{}")  # the oldest goes
    kept = {g.key_id for g in cache.load(DEVICE)}
    assert kept == {group_id(i) for i in range(4, KEPT + 3)} | {group_id(99)}


def test_unreadable_and_misnamed_files_are_skipped_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = GroupCache(tmp_path / "groups")
    cache.save("porch", group_id(1), bytes(32), DEVICE, b"{}")
    good = tmp_path / "groups" / f"{group_id(1)}-{DEVICE}.json"
    (tmp_path / "groups" / f"{group_id(2)}-{DEVICE}.json").write_text("{not json")
    good.rename(tmp_path / "groups" / f"{group_id(3)}-{DEVICE}.json")  # name and content differ
    assert cache.load(DEVICE) == []
    assert "unreadable" in caplog.text
    assert "does not match its name" in caplog.text


def test_key_ids_are_checked_before_they_become_file_names(tmp_path: Path) -> None:
    cache = GroupCache(tmp_path / "groups")
    with pytest.raises(ValueError, match="not key ids"):
        cache.save("porch", "../../etc/passwd", bytes(32), DEVICE, b"{}")

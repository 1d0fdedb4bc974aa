"""hfd._atomic_files: a file or link is replaced whole or not at all, and a crash's leftovers are
recognisable by name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hfd import _atomic_files as af


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    af.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), af.atomic_file(target) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("the writer failed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


@pytest.mark.parametrize(("durable", "syncs"), [(True, 2), (False, 0)])
def test_durable_writes_sync_the_file_and_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool, syncs: int
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(af.os, "fsync", counting_fsync)
    target = tmp_path / "sub" / "value.bin"
    af.atomic_write_bytes(target, b"\x00\x01", durable=durable)
    assert target.read_bytes() == b"\x00\x01"
    assert len(synced) == syncs  # the file, then the directory holding the rename


def test_a_private_file_is_created_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        af.atomic_write_text(tmp_path / "private", "conversation", mode=0o600)
        af.atomic_write_text(tmp_path / "shared", "record")
    finally:
        os.umask(old)
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o644  # the umask's, as open() gives


def test_temporary_names_are_recognised(tmp_path: Path) -> None:
    tmp = af.tmp_name(tmp_path / "aliases.json")
    assert tmp.parent == tmp_path and af.is_tmp_name(tmp.name)
    assert tmp != af.tmp_name(tmp_path / "aliases.json")  # two writers never share one
    assert af.is_tmp_name(".tmp-k3x9q")  # an older release's mkstemp name
    for ordinary in ["aliases.json", "resp_" + "a" * 32 + ".json", "notes.tmp", ".hidden"]:
        assert not af.is_tmp_name(ordinary), ordinary


def test_a_link_is_replaced_in_one_step(tmp_path: Path) -> None:
    link = tmp_path / "current"
    af.atomic_symlink("a", link)
    af.atomic_symlink("b", link)
    assert os.readlink(link) == "b"
    assert [p.name for p in tmp_path.iterdir()] == ["current"]

"""core/io/atomic.py: the one writer. An error mid-write leaves the old file as it was and no temporary."""

from __future__ import annotations

import json
import os

import pytest

from ganvas.core.io import atomic


class DiskFull(OSError):
    pass


def _only(folder, name):
    return sorted(p.name for p in folder.iterdir()) == [name]


def test_writes_bytes_text_and_json_and_replaces_an_older_file(tmp_path):
    target = tmp_path / "out.bin"
    atomic.write_bytes(target, b"old")
    atomic.write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and _only(tmp_path, "out.bin")
    atomic.write_text(tmp_path / "t.txt", "café")
    assert (tmp_path / "t.txt").read_bytes() == "café".encode()
    atomic.write_json(tmp_path / "c.json", {"name": "émoji", "n": 1})
    text = (tmp_path / "c.json").read_text(encoding="utf-8")
    assert json.loads(text) == {"name": "émoji", "n": 1} and text.endswith("\n") and "émoji" in text


def test_an_error_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(DiskFull):
        with atomic.atomic_open(target) as fh:
            fh.write(b"half of the new")
            raise DiskFull("no space left")
    assert target.read_text(encoding="utf-8") == "old" and _only(tmp_path, "config.json")


def test_a_failing_fsync_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("old", encoding="utf-8")

    def fail(fd):
        raise DiskFull("fsync failed")

    monkeypatch.setattr(atomic.os, "fsync", fail)
    with pytest.raises(DiskFull):
        atomic.write_json(target, {"new": True})
    assert target.read_text(encoding="utf-8") == "old" and _only(tmp_path, "state.json")


def test_a_path_writer_that_fails_after_writing_leaves_the_old_file(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old weights")
    with pytest.raises(DiskFull):
        with atomic.atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".model.safetensors.") and tmp.name.endswith(".tmp")
            tmp.write_bytes(b"half")
            raise DiskFull("writer died")
    assert target.read_bytes() == b"old weights" and _only(tmp_path, "model.safetensors")
    with atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"new weights")
    assert target.read_bytes() == b"new weights" and _only(tmp_path, "model.safetensors")


def test_temporaries_are_hidden_unique_and_follow_the_umask(tmp_path):
    names = {atomic.temp_path(tmp_path / "a.png").name for _ in range(50)}
    assert len(names) == 50 and all(n.startswith(".a.png.") and n.endswith(atomic.TMP_SUFFIX) for n in names)
    atomic.write_bytes(tmp_path / "a.png", b"x")
    if os.name == "posix":
        mask = os.umask(0)
        os.umask(mask)
        assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_named_temporary_is_used_and_removed_on_error(tmp_path):
    temp = tmp_path / ".partial-x"
    with pytest.raises(DiskFull):
        with atomic.atomic_open(tmp_path / "x.png", fsync=False, temp=temp) as fh:
            assert temp.exists()
            fh.write(b"half")
            raise DiskFull("no space")
    assert list(tmp_path.iterdir()) == []
    with atomic.atomic_open(tmp_path / "x.png", fsync=False, temp=temp) as fh:
        fh.write(b"png")
    assert _only(tmp_path, "x.png")

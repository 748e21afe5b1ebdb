"""Atomic writes: a failure keeps the previous complete result and leaves no temporary behind."""

from __future__ import annotations

import os

import pytest

from magicflow.io import atomic_dir, atomic_path


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.tsv"
    target.write_text("complete\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.name.endswith(".tmp.tsv") and tmp.parent == tmp_path
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "complete\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tsv"]
    with atomic_path(target) as tmp:
        tmp.write_text("new\n")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "new\n" and target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_dir_replaces_only_on_success_with_normal_permissions(tmp_path):
    target = tmp_path / "folds"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("2")
            raise ValueError("bad input")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folds"]

"""Atomic file writes (``chainrule._files``), used by checkpoints, metrics.csv and the plots."""

from __future__ import annotations

import os

import pytest

from chainrule import _files
from chainrule.plots import plot_curves


def test_write_atomically_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_bytes(b"old")
    _files.write_atomically(path, b"new contents")
    assert path.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch):
    path = tmp_path / "curves.png"
    path.write_bytes(b"old")

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(_files.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        _files.write_atomically(path, b"new")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_plots_are_written_whole_through_a_unique_temporary(tmp_path, monkeypatch):
    """Two runs writing the same plot never share a temporary name (the old fixed
    ``.curves.png.tmp`` did), and the result is a complete PNG."""
    temporaries = []
    real = os.replace
    monkeypatch.setattr(_files.os, "replace",
                        lambda src, dst: temporaries.append(os.path.basename(src)) or real(src, dst))
    history = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5},
               {"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.8}]
    for _ in range(2):
        plot_curves(history, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(temporaries) == 2 and len(set(temporaries)) == 2
    assert all(name.startswith(".curves.png.") and name.endswith(".tmp") for name in temporaries)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


@pytest.mark.skipif(_files.fcntl is None, reason="needs POSIX file locks")
def test_the_next_write_removes_temporaries_of_dead_writers_only(tmp_path):
    path = tmp_path / "last.safetensors"
    dead = tmp_path / ".last.safetensors.0123456789abcdef.tmp"     # its writer was killed
    dead.write_bytes(b"half a checkpoint")
    live = tmp_path / ".last.safetensors.fedcba9876543210.tmp"     # still being written
    live.write_bytes(b"being written")
    other = tmp_path / ".best.safetensors.0123456789abcdef.tmp"    # another file's
    other.write_bytes(b"x")
    with open(live, "rb") as held:
        _files.fcntl.flock(held.fileno(), _files.fcntl.LOCK_EX)   # as its writer does
        _files.write_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name, live.name, other.name])


@pytest.mark.skipif(_files.fcntl is None, reason="needs POSIX file locks")
def test_a_writer_holds_the_lock_on_its_temporary_until_the_rename(tmp_path, monkeypatch):
    path = tmp_path / "m.bin"
    locked = []
    real = os.replace

    def replace(src, dst):  # another process's cleanup, right before the rename
        locked.append(_files.remove_stale_temporaries(path) == [] and os.path.exists(src))
        return real(src, dst)

    monkeypatch.setattr(_files.os, "replace", replace)
    _files.write_atomically(path, b"data")
    assert locked == [True] and path.read_bytes() == b"data"

"""rcl.fileio (atomic writes of checkpoints and results): permissions, stale temporaries, a full disk."""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch

import rcl.fileio
from rcl.checkpoint import load_checkpoint, save_checkpoint
from rcl.fileio import DiskFullError, clean_stale_temporaries
from rcl.models import resnet18
from rcl.results import save_json


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_atomic_writes_honour_the_umask(tmp_path: Path, umask_022):
    save_checkpoint(tmp_path / "last.pt", resnet18(width=4))
    save_json({"a": 1}, tmp_path / "metrics.json")
    (tmp_path / "figure.png").write_bytes(b"png")  # how any other file comes out
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    assert modes == {"last.pt": "0o644", "metrics.json": "0o644", "figure.png": "0o644"}
    os.umask(0o077)
    save_json({"a": 2}, tmp_path / "private.json")
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600


def _dead_pid() -> int:
    return 2**22 + 12345  # above Linux's largest pid_max: never a running process


def test_stale_temporaries_of_the_target_are_removed_on_the_next_save(tmp_path: Path):
    names = {
        "dead_writer": f".last.pt.{_dead_pid()}.0a1b2c3d.tmp",  # killed mid-write
        "old_mkstemp": ".last.pt.k2j_x9ab.tmp",  # left by rcl before pids were in the name, 2 hours ago
        "live_writer": f".last.pt.{os.getppid()}.0a1b2c3d.tmp",  # another process still writing
        "fresh_mkstemp": ".last.pt.ab12cd34.tmp",  # no pid, recent: could be live
        "other_target": f".best.pt.{_dead_pid()}.0a1b2c3d.tmp",  # not this target's
        "lookalike": f".last.pt.bak.{_dead_pid()}.0a1b2c3d.tmp",  # a temporary of 'last.pt.bak'
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"PK\x03\x04 half a checkpoint")
    two_hours_ago = time.time() - 7200
    os.utime(tmp_path / names["old_mkstemp"], (two_hours_ago, two_hours_ago))

    save_checkpoint(tmp_path / "last.pt", resnet18(width=4), epoch=1)
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"last.pt"} | {names[k] for k in ("live_writer", "fresh_mkstemp", "other_target", "lookalike")}
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert clean_stale_temporaries(tmp_path / "best.pt") == [tmp_path / names["other_target"]]


def _usage(free: int):
    return namedtuple("usage", "total used free")(10**12, 10**12 - free, free)


def test_full_disk_during_a_checkpoint_save_says_so(tmp_path: Path, monkeypatch):
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, resnet18(width=4), epoch=1)
    before = path.read_bytes()

    def short_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 part of the file")
        raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos 4160 vs 4096")

    monkeypatch.setattr(torch, "save", short_write)
    monkeypatch.setattr(rcl.fileio.shutil, "disk_usage", lambda folder: _usage(free=1000))
    with pytest.raises(DiskFullError) as info:
        save_checkpoint(path, resnet18(width=4), epoch=2)
    message = str(info.value)
    assert f"the disk holding {path.parent} is full: writing last.pt needs about " in message
    assert "KiB, and only 1000 bytes is free there" in message and "last.pt was left as it was" in message
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_full_disk_reported_by_the_os_during_a_results_write(tmp_path: Path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rcl.fileio.os, "fsync", no_space)
    with pytest.raises(DiskFullError, match=r"metrics\.json needs about 1\.1 KiB, and only"):
        save_json({"history": "x" * 1100}, tmp_path / "metrics.json")
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_pass_through_unchanged(tmp_path: Path, monkeypatch):
    def broken(obj, f, *args, **kwargs):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="^some other failure$"):
        save_checkpoint(tmp_path / "x.pt", resnet18(width=4))
    assert shutil.disk_usage(tmp_path).free > 0 and list(tmp_path.iterdir()) == []


def test_a_file_size_limit_names_the_file_and_the_limit_not_memory(tmp_path):
    import subprocess
    import sys

    script = (
        "import resource, sys; from pathlib import Path; from rcl.fileio import write_atomic\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        f"write_atomic(Path({str(tmp_path / 'big.csv')!r}), lambda f: f.write(bytes(10000)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode != 0
    assert (
        f"writing {tmp_path / 'big.csv'} went past this process's file-size limit (4.0 KiB, ulimit -f)" in done.stderr
    )
    assert not (tmp_path / "big.csv").exists()

"""Atomic writes survive SIGKILL mid-write; the temporary files killed writes leave are cleaned up."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from voxprint.fileio import atomic_write, remove_orphaned_temps, temp_path

REPO = Path(__file__).resolve().parent.parent
SIZE = 16 << 20  # large enough that a write is many system calls, not one

# Rewrites TARGET with SIZE bytes of b"N": writes the first half, flushes it to the file, creates
# MARKER and, with "pause", sleeps until killed before writing the second half.
WRITER = """
import os, sys, time
from voxprint.fileio import atomic_write
target, marker, pause, size = sys.argv[1], sys.argv[2], sys.argv[3] == "pause", int(sys.argv[4])

def write(handle):
    handle.write(b"N" * (size // 2))
    handle.flush()
    open(marker, "w").close()
    if pause:
        time.sleep(120)
    handle.write(b"N" * (size - size // 2))

atomic_write(target, write)
"""


def _start_writer(target: Path, marker: Path, pause: bool) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(marker), "pause" if pause else "go",
                             str(SIZE)], cwd=REPO, stderr=subprocess.PIPE)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"writer exited early: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("writer never reached the middle of its write")
        time.sleep(0.02)


def test_sigkill_mid_rewrite_keeps_the_complete_old_file(tmp_path):
    target = tmp_path / "big.bin"
    old = b"O" * SIZE
    target.write_bytes(old)
    proc = _start_writer(target, tmp_path / "half-written", pause=True)
    _wait_for(tmp_path / "half-written", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert target.read_bytes() == old  # not truncated, not half new
    orphans = [p for p in tmp_path.iterdir() if p.name.startswith(".big.bin.")]
    assert len(orphans) == 1 and orphans[0].stat().st_size == SIZE // 2
    assert remove_orphaned_temps(tmp_path) == orphans
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin", "half-written"]

    proc = _start_writer(target, tmp_path / "second", pause=False)
    assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()[-2000:]
    assert target.read_bytes() == b"N" * SIZE  # the complete new content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.bin", "half-written", "second"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def fail(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def _dead_pid() -> int:
    """A process id no process can have (one above the kernel's limit)."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / f".checkpoint.pt.{_dead_pid()}.0a1b2c3d.tmp"
    live = temp_path(tmp_path / "model.pt")  # this (running) process's name
    others = [tmp_path / ".lock", tmp_path / "notes.tmp", tmp_path / f".x.{_dead_pid()}.nothex.tmp"]
    nested = tmp_path / "backend" / f".plda.npz.{_dead_pid()}.0a1b2c3d.tmp"
    nested.parent.mkdir()
    for path in [dead, live, nested, *others]:
        path.write_bytes(b"x")
    assert remove_orphaned_temps(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and nested.exists() and all(p.exists() for p in others)
    assert live.name.startswith(f".model.pt.{os.getpid()}.")
    assert remove_orphaned_temps(tmp_path / "missing") == []


def test_a_failed_move_leaves_no_temporary_file(tmp_path):
    from voxprint.fileio import atomic_write_text

    (tmp_path / "target").mkdir()  # a folder where the file should go: the move fails
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "target", "text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]

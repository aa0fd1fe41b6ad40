"""An exclusive lock on a run folder, so two processes never write into the same run.

The lock is an ``flock`` on ``RUN/.lock``: the kernel releases it when its process exits, however
it exits, so a killed run never leaves a stale lock. The file also records who holds it (pid, host,
command, start time) for the error the next process gets.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from voxprint.errors import VoxprintError
from voxprint.runs.layout import LOCK_FILE


class RunFolderBusy(VoxprintError):
    """Another process holds the run folder's lock."""


class RunLock:
    """Context manager holding the exclusive lock of a run folder (creating the folder if needed).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with RunLock(folder, "train"):
        ...     with RunLock(folder, "fit-backend"):  # doctest: +ELLIPSIS
        ...         pass
        Traceback (most recent call last):
        ...
        voxprint.runs.lock.RunFolderBusy: ... is in use by train (pid ...
    """

    def __init__(self, folder: str | os.PathLike, purpose: str):
        self.folder = Path(folder)
        self.purpose = purpose
        self._handle: int | None = None

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(handle, 4096, 0))
            os.close(handle)
            raise RunFolderBusy(f"{self.folder} is in use by {holder}; wait for it to finish or use another folder") from None
        record = {"purpose": self.purpose, "pid": os.getpid(), "host": socket.gethostname(),
                  "command": " ".join(sys.argv)[:300], "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(record).encode("utf-8"), 0)
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            # Truncate before unlocking: a reader never sees a stale holder for a free folder.
            os.ftruncate(self._handle, 0)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _describe(raw: bytes) -> str:
    try:
        record = json.loads(raw.decode("utf-8"))
        return (f"{record['purpose']} (pid {record['pid']} on {record['host']}, since {record['since']}: "
                f"{record['command']})")
    except (ValueError, KeyError, TypeError):
        return "another process"

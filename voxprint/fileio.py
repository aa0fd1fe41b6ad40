"""Atomic file writes: a kill or an error mid-write never leaves a half-written file in place.

Each file is written under a unique hidden name beside its target and moved over it with
:func:`os.replace`, which is atomic within one file system. ``open(..., "x")`` on that name keeps the
user's umask (``mkstemp`` would make the final file owner-only).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import IO, Callable


def write_temp(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(file)`` on a new temporary file beside ``path`` and return its name (not yet moved)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Write ``path`` through ``write(file)`` so that it is either the old or the complete new file."""
    tmp = write_temp(path, write)
    os.replace(tmp, path)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))

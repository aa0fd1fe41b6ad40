"""Atomic file writes: a kill or an error mid-write never leaves a half-written file in place.

Each file is written under a unique hidden name beside its target, ``.NAME.PID.HEX.tmp``, and moved
over it with :func:`os.replace`, which is atomic within one file system. ``open(..., "x")`` on that
name keeps the user's umask (``mkstemp`` would make the final file owner-only). A process killed
mid-write leaves its temporary file behind; :func:`remove_orphaned_temps` clears such files.
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import IO, Callable

# The name write_temp gives a temporary file: the target's name, the writer's pid, a random tag.
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.(?P<tag>[0-9a-f]+)\.tmp$")


def temp_path(path: str | os.PathLike) -> Path:
    """A new, unique temporary name beside ``path`` for this process (``.NAME.PID.HEX.tmp``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_temp(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(file)`` on a new temporary file beside ``path`` and return its name (not yet moved)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
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
    """Write ``path`` through ``write(file)`` so that it is either the old or the complete new file.

    Raises:
        OSError: the file cannot be written or moved into place (e.g. ``path`` is a folder); no
            temporary file is left behind.
    """
    tmp = write_temp(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, as :func:`atomic_write`."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def remove_orphaned_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed atomic writes left directly in ``folder``.

    Call it while holding the folder's lock (:class:`voxprint.runs.RunLock`), so no other voxprint
    process is writing there. A temporary file whose writer is still running is kept anyway: it may
    be mid-write (an unlocked writer such as a user's script). A writer that exited without being
    reaped (a zombie) counts as running until its parent waits for it.

    Args:
        folder: the folder to clean; subfolders are left alone.

    Returns:
        The files removed (empty when the folder does not exist).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / ".model.pt.999999999.0a1b2c3d.tmp").write_bytes(b"half")
        >>> [p.name for p in remove_orphaned_temps(folder)]
        ['.model.pt.999999999.0a1b2c3d.tmp']
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        match = _TEMP_NAME.match(entry.name)
        if match is None or not entry.is_file() or entry.is_symlink() or _is_running(int(match["pid"])):
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _is_running(pid: int) -> bool:
    """True when a process with this id exists (it may be another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to someone else
        return True
    except OverflowError:  # beyond any pid the kernel hands out
        return False
    return True

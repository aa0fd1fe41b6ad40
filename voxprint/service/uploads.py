"""Uploaded recordings as in-memory files, so the service decodes them exactly as the CLI decodes files.

An upload's bytes are put in an anonymous in-memory file (Linux ``memfd``; a private temporary file
elsewhere) and handed to the model and the store by its ``/proc/self/fd/N`` path. Every check of
:func:`voxprint.audio.load_audio` therefore applies unchanged (empty file, undecodable bytes, silence,
NaNs, duration limits, too little speech), and each error message is the CLI's with the path replaced
by the name the client gave the file.

Example:
    >>> import io, numpy as np, soundfile
    >>> from voxprint.audio import load_audio
    >>> buffer = io.BytesIO()
    >>> soundfile.write(buffer, np.zeros(8000, dtype=np.float32), 16000, format="WAV")
    >>> with Uploads() as uploads:
    ...     path = uploads.add(buffer.getvalue(), "quiet.wav")
    ...     seconds = uploads.duration(path)
    ...     try:
    ...         with uploads.named_errors():
    ...             load_audio(path)
    ...     except AudioError as exc:
    ...         message = str(exc)
    >>> seconds, message.split(" (")[0]
    (0.5, 'quiet.wav is digital silence')
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from voxprint.errors import AudioError, VoxprintError

__all__ = ["UploadTooLong", "Uploads", "clean_name", "source_name"]

# A client's file name ends up in messages and enrollment source names: keep it short and printable.
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._@+()\-]")
_MAX_NAME = 100


class UploadTooLong(VoxprintError):
    """An uploaded recording is longer than the service's duration limit (HTTP 413)."""


def clean_name(filename: str | None, fallback: str) -> str:
    """A safe display name for an uploaded file: its base name, printable characters only, at most 100.

    Args:
        filename: the name the client sent (may be None, empty, or a path).
        fallback: the name used when nothing usable is left (e.g. the form field's name).

    Returns:
        The cleaned name.

    Example:
        >>> clean_name("C:\\\\Users\\\\me\\\\rec<1>.wav", "file"), clean_name("../..", "file")
        ('rec_1_.wav', 'file')
    """
    base = re.split(r"[\\/]", filename or "")[-1].strip()
    base = _UNSAFE.sub("_", base)[:_MAX_NAME].strip(" .")
    return base or fallback


class Uploads:
    """The uploaded recordings of one request, as in-memory files that exist until the block ends.

    Use as a context manager; :meth:`add` returns a path the model can read, :meth:`named_errors`
    turns the paths in audio errors back into the clients' file names.
    """

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._fds: list[int] = []
        self._folder: str | None = None

    def __enter__(self) -> "Uploads":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, data: bytes, name: str) -> str:
        """Keep ``data`` as an in-memory file; returns the path that reads it.

        Args:
            data: the uploaded bytes.
            name: the client's (cleaned) name for the file, used in messages.

        Returns:
            A path readable by soundfile for as long as this object is open.
        """
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("voxprint-upload")  # close-on-exec by default
            self._fds.append(fd)
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view):]
            path = f"/proc/self/fd/{fd}"
        else:  # not Linux: a file in a private folder, removed with it
            if self._folder is None:
                self._folder = tempfile.mkdtemp(prefix="voxprint-upload-")
            path = os.path.join(self._folder, f"{len(self._names)}")
            Path(path).write_bytes(data)
        self._names[path] = name
        return path

    def duration(self, path: str) -> float | None:
        """The recording's duration in seconds from its header, or None when the header cannot be read
        (decoding it later reports why, with the CLI's message)."""
        import soundfile

        try:
            info = soundfile.info(path)
        except Exception:  # any decoder complaint is reported by load_audio, not here
            return None
        return info.frames / info.samplerate if info.samplerate > 0 else None

    def check_durations(self, max_seconds: float) -> None:
        """Refuse (before decoding) any upload longer than ``max_seconds``.

        Raises:
            UploadTooLong: naming the first recording over the limit.
        """
        for path, name in self._names.items():
            seconds = self.duration(path)
            if seconds is not None and seconds > max_seconds:
                raise UploadTooLong(f"{name} is {seconds:.1f} s long, more than the service's limit of "
                                    f"{max_seconds:g} s; send a shorter recording")

    @contextmanager
    def named_errors(self) -> Iterator[None]:
        """Rewrite the in-memory paths in :class:`AudioError` messages to the clients' file names.

        Raises:
            AudioError: the original error, with the rewritten message.
        """
        try:
            yield
        except AudioError as exc:
            message = str(exc)
            # Longest paths first, so /proc/self/fd/1 never replaces part of /proc/self/fd/12.
            for path in sorted(self._names, key=len, reverse=True):
                message = message.replace(path, self._names[path])
            raise AudioError(message) from None

    def close(self) -> None:
        """Free the in-memory files."""
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def source_name(data: bytes, name: str) -> str:
    """The enrollment source name of an upload: its file name and a content hash.

    The hash makes repeating an upload idempotent (the store skips a source it already has) while two
    different recordings that share a file name (every browser recording is ``recording.wav``) are both
    enrolled.

    Example:
        >>> source_name(b"abc", "a.wav")
        'a.wav (sha256 ba7816bf8f01cfea)'
    """
    return f"{name} (sha256 {hashlib.sha256(data).hexdigest()[:16]})"

"""Speaker segments and the RTTM format.

An RTTM file (NIST Rich Transcription Time Marked) holds one ``SPEAKER`` line per speech segment::

    SPEAKER <file id> 1 <start s> <duration s> <NA> <NA> <speaker> <NA> <NA>

Other line types (``SPKR-INFO``, ``LEXEME``...) are ignored when reading. Times are written with
millisecond precision, which is the resolution of every segment this package makes (10 ms frames).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from voxprint.errors import DataError
from voxprint.fileio import atomic_write_text

#: The type field of an RTTM line: an upper-case word (SPEAKER, SPKR-INFO, END-of-SENTENCE, A/P...).
_RTTM_TYPE = re.compile(r"^[A-Z][A-Za-z/_-]*$")

__all__ = ["Segment", "format_rttm", "labels_to_segments", "merge_segments", "read_rttm", "write_rttm"]


@dataclass(frozen=True, order=True)
class Segment:
    """One speaker talking from ``start`` to ``end`` (seconds).

    Attributes:
        start: start time in seconds.
        end: end time in seconds (after ``start``).
        speaker: the speaker's label.
    """

    start: float
    end: float
    speaker: str

    @property
    def duration(self) -> float:
        """``end - start`` in seconds."""
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data (times rounded to the millisecond)."""
        return {"start": round(self.start, 3), "end": round(self.end, 3), "speaker": self.speaker}


def _check_token(value: str, what: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise DataError(f"an RTTM {what} must be a non-empty word without spaces, got {value!r}")
    return value


def format_rttm(segments: Iterable[Segment], file_id: str) -> str:
    """The RTTM lines of one file's segments (sorted by start time).

    Args:
        segments: the segments.
        file_id: the RTTM file id (a word without spaces).

    Returns:
        The lines, each ending in a newline ("" when there are no segments).

    Raises:
        DataError: the file id or a speaker label contains spaces or is empty.

    Example:
        >>> print(format_rttm([Segment(1.0, 2.5, "alice")], "call1"), end="")
        SPEAKER call1 1 1.000 1.500 <NA> <NA> alice <NA> <NA>
    """
    _check_token(file_id, "file id")
    lines = []
    for seg in sorted(segments):
        _check_token(seg.speaker, "speaker label")
        lines.append(f"SPEAKER {file_id} 1 {seg.start:.3f} {seg.duration:.3f} <NA> <NA> {seg.speaker} <NA> <NA>\n")
    return "".join(lines)


def write_rttm(path: str | os.PathLike, files: Mapping[str, Sequence[Segment]]) -> Path:
    """Write the segments of several files into one RTTM file (atomically).

    Args:
        path: the RTTM file.
        files: file id -> its segments.

    Returns:
        The path written.

    Raises:
        DataError: a file id or speaker label is not a word.
    """
    return atomic_write_text(path, "".join(format_rttm(segs, fid) for fid, segs in files.items()))


def read_rttm(path: str | os.PathLike) -> dict[str, list[Segment]]:
    """Read the ``SPEAKER`` lines of an RTTM file.

    Args:
        path: the RTTM file.

    Returns:
        File id -> its segments, sorted by start time, in the order the files first appear.

    Raises:
        DataError: the file is missing or a ``SPEAKER`` line is malformed (the message names the line).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.rttm"
        >>> _ = write_rttm(path, {"f": [Segment(0.5, 1.25, "b"), Segment(0.0, 0.5, "a")]})
        >>> read_rttm(path)
        {'f': [Segment(start=0.0, end=0.5, speaker='a'), Segment(start=0.5, end=1.25, speaker='b')]}
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"RTTM file {path} not found")
    files: dict[str, list[Segment]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields or fields[0].startswith((";", "#")):
                continue
            if fields[0] != "SPEAKER":
                # Other RTTM line types (SPKR-INFO, LEXEME, NON-SPEECH...) carry no speaker turns.
                if not _RTTM_TYPE.match(fields[0]):
                    raise DataError(f"{path}:{number}: not an RTTM line: {line.strip()[:80]!r}")
                continue
            if len(fields) < 8:
                raise DataError(f"{path}:{number}: an RTTM SPEAKER line needs at least 8 fields, got {len(fields)}")
            try:
                start, duration = float(fields[3]), float(fields[4])
            except ValueError:
                raise DataError(f"{path}:{number}: start and duration must be numbers, got "
                                f"{fields[3]!r} and {fields[4]!r}") from None
            if not (np.isfinite(start) and np.isfinite(duration)) or start < 0 or duration < 0:
                raise DataError(f"{path}:{number}: start and duration must be finite and not negative")
            files.setdefault(fields[1], []).append(Segment(start, round(start + duration, 6), fields[7]))
    return {fid: sorted(segs) for fid, segs in files.items()}


def labels_to_segments(labels: np.ndarray, frame_seconds: float, names: Sequence[str],
                       offset: float = 0.0) -> list[Segment]:
    """Runs of equal frame labels as segments (label -1: nobody speaks).

    Args:
        labels: ``(T,)`` integer label per frame, ``-1`` for non-speech.
        frame_seconds: duration of a frame.
        names: the speaker name of each label.
        offset: time of the first frame's start.

    Returns:
        The segments, in time order.

    Example:
        >>> labels_to_segments(np.array([-1, 0, 0, 1, -1]), 0.5, ["a", "b"])
        [Segment(start=0.5, end=1.5, speaker='a'), Segment(start=1.5, end=2.0, speaker='b')]
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [labels.size]))
    return [Segment(round(float(offset + s * frame_seconds), 6), round(float(offset + e * frame_seconds), 6),
                    names[labels[s]]) for s, e in zip(starts, ends) if labels[s] >= 0]


def merge_segments(segments: Iterable[Segment], max_gap: float = 0.0) -> list[Segment]:
    """Join segments of one speaker that overlap or are at most ``max_gap`` seconds apart.

    Example:
        >>> merge_segments([Segment(0, 1, "a"), Segment(1.1, 2, "a"), Segment(0.5, 3, "b")], max_gap=0.2)
        [Segment(start=0, end=2, speaker='a'), Segment(start=0.5, end=3, speaker='b')]
    """
    merged: list[Segment] = []
    last: dict[str, int] = {}
    for seg in sorted(segments):
        index = last.get(seg.speaker)
        if index is not None and seg.start - merged[index].end <= max_gap:
            previous = merged[index]
            merged[index] = Segment(previous.start, max(previous.end, seg.end), seg.speaker)
        else:
            last[seg.speaker] = len(merged)
            merged.append(seg)
    return sorted(merged)

"""Scoring diarization against a reference with ``pyannote.metrics``.

- **DER** (diarization error rate) = (missed speech + false alarm + speaker confusion) / reference
  speech, after the optimal one-to-one mapping of hypothesis to reference speakers. Overlapped
  reference speech counts once per speaker, so a system that gives each moment one speaker misses
  the second speaker of every overlap unless ``skip_overlap``.
- **JER** (Jaccard error rate, DIHARD II): the mean over reference speakers of 1 - the Jaccard index
  of their speech and that of their mapped hypothesis speaker; every speaker weighs the same,
  however much they talk.
- **Speaker count**: whether the hypothesis found as many speakers as the reference has.

The collar follows NIST's md-eval (``-c 0.25``): ``collar`` seconds on *each side* of every reference
boundary are not scored, i.e. ``pyannote.metrics``' ``collar=2 * collar``. ``skip_overlap`` leaves out
the regions where the reference has two or more speakers. The scored region (UEM) of a file is from
0 to the end of its last reference or hypothesis segment, unless its duration is given.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from voxprint.diarization.segments import Segment
from voxprint.errors import DataError

__all__ = ["DiarizationScore", "FileScore", "protocol", "score_diarization"]


def protocol(collar: float, skip_overlap: bool) -> str:
    """The scoring protocol in words (printed with every result).

    Example:
        >>> protocol(0.25, False)
        'collar 0.25 s on each side of reference boundaries (md-eval -c 0.25), overlapped speech scored'
    """
    overlap = "overlapped speech not scored" if skip_overlap else "overlapped speech scored"
    if collar == 0:
        return f"no collar, {overlap}"
    return f"collar {collar:g} s on each side of reference boundaries (md-eval -c {collar:g}), {overlap}"


@dataclass(frozen=True)
class FileScore:
    """The errors on one file (seconds, except the rates).

    Attributes:
        file_id: the file.
        total: scored reference speech (overlap counted once per speaker).
        missed: missed speech.
        false_alarm: false-alarm speech.
        confusion: speech given to the wrong speaker.
        der: ``(missed + false_alarm + confusion) / total``.
        jer: the Jaccard error rate.
        reference_speakers: speakers in the reference.
        hypothesis_speakers: speakers in the hypothesis.
    """

    file_id: str
    total: float
    missed: float
    false_alarm: float
    confusion: float
    der: float
    jer: float
    reference_speakers: int
    hypothesis_speakers: int

    @property
    def count_correct(self) -> bool:
        """Whether the number of speakers is right."""
        return self.reference_speakers == self.hypothesis_speakers

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {"file": self.file_id, "der": round(self.der, 5), "jer": round(self.jer, 5),
                "missed": round(self.missed, 3), "false_alarm": round(self.false_alarm, 3),
                "confusion": round(self.confusion, 3), "total": round(self.total, 3),
                "reference_speakers": self.reference_speakers, "hypothesis_speakers": self.hypothesis_speakers}


@dataclass(frozen=True)
class DiarizationScore:
    """Errors over a set of files: each rate pools the seconds of all files (JER: the mean over files).

    Attributes:
        collar: seconds not scored on each side of reference boundaries.
        skip_overlap: whether overlapped reference speech was left out.
        files: the per-file scores.
    """

    collar: float
    skip_overlap: bool
    files: list[FileScore] = field(default_factory=list)

    def _sum(self, name: str) -> float:
        return sum(getattr(f, name) for f in self.files)

    @property
    def total(self) -> float:
        """Scored reference speech, seconds."""
        return self._sum("total")

    def _rate(self, name: str) -> float:
        return self._sum(name) / self.total if self.total > 0 else 0.0

    @property
    def missed(self) -> float:
        """Missed speech rate."""
        return self._rate("missed")

    @property
    def false_alarm(self) -> float:
        """False-alarm rate."""
        return self._rate("false_alarm")

    @property
    def confusion(self) -> float:
        """Speaker-confusion rate."""
        return self._rate("confusion")

    @property
    def der(self) -> float:
        """Diarization error rate (pooled over files)."""
        return self.missed + self.false_alarm + self.confusion

    @property
    def jer(self) -> float:
        """Jaccard error rate (mean over files)."""
        return sum(f.jer for f in self.files) / len(self.files) if self.files else 0.0

    @property
    def count_accuracy(self) -> float:
        """Share of files whose number of speakers is right."""
        return sum(f.count_correct for f in self.files) / len(self.files) if self.files else 0.0

    @property
    def protocol(self) -> str:
        """The protocol in words."""
        return protocol(self.collar, self.skip_overlap)

    def to_dict(self, per_file: bool = True) -> dict[str, Any]:
        """As JSON-ready data (rates as fractions)."""
        record: dict[str, Any] = {
            "protocol": self.protocol, "collar": self.collar, "skip_overlap": self.skip_overlap,
            "files": len(self.files), "der": round(self.der, 5), "missed": round(self.missed, 5),
            "false_alarm": round(self.false_alarm, 5), "confusion": round(self.confusion, 5),
            "jer": round(self.jer, 5), "speaker_count_accuracy": round(self.count_accuracy, 5),
            "scored_seconds": round(self.total, 3)}
        if per_file:
            record["per_file"] = [f.to_dict() for f in self.files]
        return record


def _annotation(segments: Sequence[Segment]) -> Any:
    from pyannote.core import Annotation
    from pyannote.core import Segment as PSegment

    annotation = Annotation()
    for index, seg in enumerate(segments):
        if seg.end > seg.start:
            annotation[PSegment(seg.start, seg.end), index] = seg.speaker
    return annotation


def score_diarization(reference: Mapping[str, Sequence[Segment]], hypothesis: Mapping[str, Sequence[Segment]],
                      collar: float = 0.25, skip_overlap: bool = False,
                      durations: Mapping[str, float] | None = None) -> DiarizationScore:
    """DER, its parts, JER and speaker-count accuracy of ``hypothesis`` against ``reference``.

    Every reference file is scored; a file missing from the hypothesis counts as all missed.

    Args:
        reference: file id -> reference segments.
        hypothesis: file id -> hypothesis segments.
        collar: seconds not scored on each side of each reference boundary (md-eval convention).
        skip_overlap: leave out regions where the reference has several speakers.
        durations: file id -> duration, for the scored region (default: up to the last segment).

    Returns:
        The :class:`DiarizationScore`.

    Raises:
        DataError: no reference file, a negative collar, or hypothesis files that are not in the reference.

    Example:
        >>> ref = {"f": [Segment(0, 10, "A"), Segment(10, 20, "B")]}
        >>> hyp = {"f": [Segment(0, 12, "x"), Segment(12, 20, "y")]}
        >>> score = score_diarization(ref, hyp, collar=0.0)
        >>> round(score.der, 3), round(score.confusion, 3), score.count_accuracy
        (0.1, 0.1, 1.0)
    """
    from pyannote.core import Segment as PSegment
    from pyannote.core import Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    if not reference:
        raise DataError("the reference has no files to score")
    if collar < 0:
        raise DataError(f"the collar must not be negative, got {collar}")
    extra = sorted(set(hypothesis) - set(reference))
    if extra:
        raise DataError(f"{len(extra)} hypothesis files are not in the reference (first: {extra[0]!r}); "
                        "check that both use the same file ids")
    der_metric = DiarizationErrorRate(collar=2 * collar, skip_overlap=skip_overlap)
    jer_metric = JaccardErrorRate(collar=2 * collar, skip_overlap=skip_overlap)
    files = []
    for file_id, ref_segments in reference.items():
        hyp_segments = list(hypothesis.get(file_id, []))
        end = max([s.end for s in ref_segments] + [s.end for s in hyp_segments] + [0.0])
        if durations is not None and file_id in durations:
            end = max(end, float(durations[file_id]))
        ref, hyp = _annotation(ref_segments), _annotation(hyp_segments)
        uem = Timeline([PSegment(0.0, max(end, 1e-3))])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyannote warns about empty annotations, which are valid here
            detail = der_metric(ref, hyp, uem=uem, detailed=True)
            jer = jer_metric(ref, hyp, uem=uem) if ref_segments else float(bool(hyp_segments))
        total = float(detail["total"])
        errors = detail["missed detection"] + detail["false alarm"] + detail["confusion"]
        files.append(FileScore(file_id, total, float(detail["missed detection"]), float(detail["false alarm"]),
                               float(detail["confusion"]), errors / total if total > 0 else float(errors > 0),
                               float(jer), len(ref.labels()), len(hyp.labels())))
    return DiarizationScore(collar, skip_overlap, files)

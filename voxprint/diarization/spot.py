"""Target-speaker detection ("personal VAD"): where does one enrolled speaker talk in a long recording?

The recording is diarized first (:func:`~voxprint.diarization.pipeline.diarize`), so each decision
rests on all the speech of a voice rather than on one 1.5 s window: the speech of each found speaker
is embedded as one recording (the model's own inference settings, as enrollments are) and scored
against the target's enrollments with the model's back-end, as ``verify`` scores them (for the bundled
model the exact n-utterance PLDA model, a calibrated log-likelihood ratio). Every speaker whose score
reaches the threshold is the target; their segments are returned, each with its own score (the segment
embedded alone, so short segments get less decisive scores).

The default threshold is the model's equal-error-rate threshold from its evaluation (``meta.json``,
``eval.eer_threshold``, when that evaluation used the model's back-end), else its verification
threshold. The verification threshold is set for a 1 % false-accept rate on single utterances; a
voice found in a conversation is a harder test (its speech is cut at turns and mixed with others',
and a cluster may hold a little of another voice), so the target's own voice scores lower there than
in verification, and the lower equal-error-rate threshold is the default; pass ``threshold`` (``--threshold``)
for another operating point.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxprint.audio import load_audio
from voxprint.diarization.pipeline import diarize
from voxprint.diarization.segments import Segment
from voxprint.errors import StoreError

__all__ = ["SpotResult", "SpotSegment", "default_threshold", "spot"]

AudioInput = str | os.PathLike | np.ndarray


@dataclass(frozen=True)
class SpotSegment:
    """A stretch of the target speaker's speech.

    Attributes:
        start: start time in seconds.
        end: end time in seconds.
        score: the segment's own score against the target (the back-end's scale).
    """

    start: float
    end: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {"start": round(self.start, 3), "end": round(self.end, 3), "score": round(self.score, 4)}


@dataclass(frozen=True)
class SpotResult:
    """The answer to "where does this speaker talk?".

    Attributes:
        speaker: the target's name.
        segments: where the target talks, in time order.
        threshold: the score a found speaker had to reach.
        scale: what the scores are (e.g. ``log-likelihood ratio``).
        voices: each speaker the diarization found: its label, speech seconds, score and whether it is the target.
        duration: the recording's duration in seconds.
    """

    speaker: str
    segments: list[SpotSegment]
    threshold: float
    scale: str
    voices: list[dict[str, Any]] = field(default_factory=list)
    duration: float = 0.0

    @property
    def seconds(self) -> float:
        """The target's speech, in seconds."""
        return sum(s.end - s.start for s in self.segments)

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {"speaker": self.speaker, "found": bool(self.segments), "seconds": round(self.seconds, 3),
                "threshold": round(self.threshold, 4), "scale": self.scale, "duration": round(self.duration, 3),
                "segments": [s.to_dict() for s in self.segments], "voices": self.voices}


#: A segment shorter than this is scored on this much audio around its centre (the encoder needs some context).
MIN_SCORED_SECONDS = 0.5


def _embed(model: Any, wave: np.ndarray, segments: list[Segment]) -> np.ndarray:
    """The embedding of the segments' audio joined together, as one recording."""
    rate = model.sample_rate
    pieces = []
    for seg in segments:
        start, end = seg.start, seg.end
        if end - start < MIN_SCORED_SECONDS:
            centre = (start + end) / 2
            start, end = max(0.0, centre - MIN_SCORED_SECONDS / 2), centre + MIN_SCORED_SECONDS / 2
        pieces.append(wave[int(round(start * rate)):int(round(end * rate))])
    return model.windows(np.concatenate(pieces)).utterance_embedding()


def default_threshold(model: Any) -> float | None:
    """The model's equal-error-rate threshold when its evaluation used its back-end, else its threshold.

    Example:
        >>> import voxprint
        >>> round(default_threshold(voxprint.load_model("default")), 2)
        -5.84
    """
    evaluation = model.meta.get("eval", {})
    if "eer_threshold" in evaluation and evaluation.get("backend") == model.backend.name:
        return float(evaluation["eer_threshold"])
    return model.threshold


def spot(model: Any, audio: AudioInput, target: np.ndarray, speaker: str = "target", sample_rate: int | None = None,
         threshold: float | None = None, **options: Any) -> SpotResult:
    """Where the speaker whose embedding is ``target`` talks in ``audio`` (see the module docstring).

    Args:
        model: a :class:`~voxprint.inference.SpeakerModel` (the one that made ``target``).
        audio: a file path, or a waveform array (then ``sample_rate`` is required).
        target: the target speaker's enrollment embeddings, ``(n, d)`` (or one ``(d,)`` embedding), scored
            as ``verify`` and the speaker store score a speaker (with PLDA, the exact ``n``-utterance model;
            e.g. :meth:`~voxprint.store.SpeakerStore.enrollment_embeddings`).
        speaker: the target's name, for the result.
        sample_rate: the rate of an array ``audio``.
        threshold: the score a voice must reach (default: :func:`default_threshold`).
        **options: options of :func:`~voxprint.diarization.pipeline.diarize` (``num_speakers``, ``vad``...).

    Returns:
        The :class:`SpotResult`.

    Raises:
        StoreError: no threshold is given and the model has none.
        AudioError: the audio cannot be read.

    Example:
        >>> import voxprint
        >>> from voxprint.paths import data_root
        >>> model = voxprint.load_model("default")
        >>> speaker = data_root() / "speechocean762" / "dev" / "SPEAKER5017"
        >>> target = model.extract_embedding(speaker / "050170101.flac")
        >>> result = spot(model, speaker / "050170117.flac", target, "5017")
        >>> result.to_dict()["found"], result.scale
        (True, 'log-likelihood ratio')
    """
    threshold = default_threshold(model) if threshold is None else threshold
    if threshold is None:
        raise StoreError("the model has no stored threshold to decide with; pass one (--threshold)")
    wave = load_audio(audio, sample_rate=sample_rate, target_rate=model.sample_rate, min_seconds=model.min_seconds,
                      max_seconds=model.max_seconds)
    result = diarize(model, wave, sample_rate=model.sample_rate, **options)
    target = np.atleast_2d(np.asarray(target, dtype=np.float32))
    found: list[SpotSegment] = []
    voices = []
    seconds = result.speaker_seconds()
    for label in result.speakers:
        mine = [s for s in result.segments if s.speaker == label]
        score = float(model.backend.score(target, _embed(model, wave, mine)))
        accepted = score >= threshold
        voices.append({"speaker": label, "seconds": round(seconds[label], 3), "score": round(score, 4),
                       "target": accepted})
        if accepted:
            found.extend(SpotSegment(s.start, s.end, float(model.backend.score(target, _embed(model, wave, [s]))))
                         for s in mine)
    return SpotResult(speaker, sorted(found, key=lambda s: s.start), float(threshold), model.backend.scale, voices,
                      result.duration)

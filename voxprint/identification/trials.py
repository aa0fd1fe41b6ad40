"""Calibration trials that vary the test duration and the enrollment count.

Identification scores must mean the same thing for 2 s and 20 s of test audio and for 1 and many
enrollment recordings, so the calibration (:class:`~voxprint.identification.calibration.QualityCalibration`)
is fitted on trials that span both. From each speaker's utterances, :func:`plan_quality_trials` makes
``draws`` random orderings; in each:

- **speaker models** pool the first ``K`` utterances, for every ``K`` of ``counts`` (the scorer makes the
  model the speaker store keeps for its back-end: :mod:`voxprint.identification.scoring`);
- **test segments** take utterances from the end of the ordering and concatenate them until they reach
  each of ``durations`` (then cut to exactly that length at a random offset), plus the last utterance
  whole (the usual single-recording test).

A target trial pairs a segment with a model of the same speaker and ordering whose utterances it does
not use, so enrollment and test never share audio; a non-target trial pairs a segment with a model of
another speaker (any ordering, any count). Long tests use up utterances, so with few utterances per
speaker (8 on speechocean762 dev) long tests meet only small enrollments as targets; non-targets cover
every combination.

Example:
    >>> spk2utt = {"a": ["a1", "a2", "a3", "a4"], "b": ["b1", "b2", "b3", "b4"]}
    >>> seconds = {u: 3.0 for utts in spk2utt.values() for u in utts}
    >>> plan = plan_quality_trials(spk2utt, seconds, durations=(2.0, 5.0), counts=(1, 2), draws=1)
    >>> [(s.speaker, len(s.utterances), s.seconds) for s in plan.segments if s.speaker == "a"]
    [('a', 1, 2.0), ('a', 2, 5.0), ('a', 1, 3.0)]
    >>> [(m.speaker, len(m.utterances)) for m in plan.models]
    [('a', 1), ('a', 2), ('b', 1), ('b', 2)]
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from voxprint.errors import DataError
from voxprint.identification.scoring import Scorer

__all__ = ["COUNTS", "DURATIONS", "QualityPlan", "QualityTrials", "Segment", "SpeakerModelPlan",
           "plan_quality_trials", "render_segment", "score_quality_trials"]

#: Test durations of the calibration segments, in seconds (besides whole single utterances).
DURATIONS = (2.0, 5.0, 10.0, 20.0)
#: Enrollment counts of the calibration speaker models.
COUNTS = (1, 2, 3, 5, 7)
#: Bin name of whole single-utterance tests.
UTTERANCE_BIN = "utterance"


@dataclass(frozen=True)
class Segment:
    """A test recording made from utterances of one speaker.

    Attributes:
        speaker: whose utterances.
        draw: the ordering it comes from.
        utterances: the utterances, concatenated in this order.
        offset: where the cut starts in the concatenation, in seconds.
        seconds: its duration.
        bin: ``"2 s"``, ``"5 s"``... or ``"utterance"`` for a whole single utterance.
    """

    speaker: str
    draw: int
    utterances: tuple[str, ...]
    offset: float
    seconds: float
    bin: str

    @property
    def name(self) -> str:
        """A unique id (file name) for the segment."""
        return f"{self.speaker}-d{self.draw}-{self.bin.replace(' ', '')}"


@dataclass(frozen=True)
class SpeakerModelPlan:
    """A speaker model pooled from the first utterances of one ordering.

    Attributes:
        speaker: whose utterances.
        draw: the ordering.
        utterances: the enrollment utterances.
    """

    speaker: str
    draw: int
    utterances: tuple[str, ...]


@dataclass(frozen=True)
class QualityPlan:
    """Test segments and speaker models of calibration trials (see the module docstring).

    Attributes:
        segments: the test recordings to make and embed.
        models: the speaker models to pool.
    """

    segments: list[Segment]
    models: list[SpeakerModelPlan]

    def is_target(self) -> np.ndarray:
        """``(len(segments), len(models))``: 1 for target pairs, 0 for non-target pairs, -1 for pairs of
        one speaker that are not used (another ordering, or shared audio)."""
        out = np.zeros((len(self.segments), len(self.models)), dtype=np.int8)
        by_speaker: dict[str, list[int]] = {}
        for j, model in enumerate(self.models):
            by_speaker.setdefault(model.speaker, []).append(j)
        for i, seg in enumerate(self.segments):
            used = set(seg.utterances)
            for j in by_speaker.get(seg.speaker, []):
                model = self.models[j]
                usable = model.draw == seg.draw and not used.intersection(model.utterances)
                out[i, j] = 1 if usable else -1
        return out


def plan_quality_trials(spk2utt: Mapping[str, Sequence[str]], seconds: Mapping[str, float],
                        durations: Sequence[float] = DURATIONS, counts: Sequence[int] = COUNTS, draws: int = 4,
                        seed: int = 0) -> QualityPlan:
    """Plan calibration trials from each speaker's utterances (see the module docstring).

    Args:
        spk2utt: speaker -> utterance ids (speakers with fewer than two utterances are left out).
        seconds: utterance id -> duration in seconds (as the model will see it).
        durations: test durations to make by concatenation.
        counts: enrollment counts.
        draws: random orderings per speaker.
        seed: seed of the orderings and cuts.

    Returns:
        The plan.

    Raises:
        DataError: fewer than two speakers with two utterances or more.
    """
    rng = np.random.default_rng(seed)
    segments: list[Segment] = []
    models: list[SpeakerModelPlan] = []
    usable = {spk: sorted(utts) for spk, utts in sorted(spk2utt.items()) if len(utts) >= 2}
    if len(usable) < 2:
        raise DataError(f"calibration trials need two speakers with two utterances or more, got {len(usable)}")
    for speaker, utts in usable.items():
        for draw in range(draws):
            order = [utts[i] for i in rng.permutation(len(utts))]
            models += [SpeakerModelPlan(speaker, draw, tuple(order[:k])) for k in counts if k < len(order)]
            for target in durations:
                # From the end of the ordering, leaving at least one utterance for enrollment.
                taken, total = [], 0.0
                for utt in reversed(order[1:]):
                    if total >= target:
                        break
                    taken.insert(0, utt)
                    total += seconds[utt]
                if total < target:
                    continue
                offset = float(rng.uniform(0.0, total - target))
                segments.append(Segment(speaker, draw, tuple(taken), offset, float(target), f"{target:g} s"))
            last = order[-1]
            segments.append(Segment(speaker, draw, (last,), 0.0, float(seconds[last]), UTTERANCE_BIN))
    return QualityPlan(segments, models)


def render_segment(segment: Segment, waves: Mapping[str, np.ndarray], sample_rate: int) -> np.ndarray:
    """The waveform of a segment: its utterances concatenated, then cut.

    Args:
        segment: the segment.
        waves: utterance id -> waveform at ``sample_rate``.
        sample_rate: samples per second.

    Returns:
        float32 samples.

    Example:
        >>> seg = Segment("a", 0, ("x", "y"), 0.5, 1.0, "1 s")
        >>> render_segment(seg, {"x": np.zeros(4), "y": np.ones(4)}, 4).tolist()
        [0.0, 0.0, 1.0, 1.0]
    """
    joined = np.concatenate([np.asarray(waves[u], dtype=np.float32) for u in segment.utterances])
    if segment.bin == UTTERANCE_BIN:
        return joined
    start = int(round(segment.offset * sample_rate))
    return joined[start:start + int(round(segment.seconds * sample_rate))]


@dataclass(frozen=True)
class QualityTrials:
    """Scored calibration trials with their quality measures.

    Attributes:
        scores: ``(n,)`` back-end scores.
        labels: ``(n,)`` 1 target, 0 non-target.
        test_seconds: ``(n,)`` test durations.
        enroll_counts: ``(n,)`` enrollment recordings of the speaker models.
        test_speakers: ``(n,)`` speaker of each test segment.
        model_speakers: ``(n,)`` speaker of each speaker model.
        duration_bins: ``(n,)`` the test segment's bin (``"2 s"``... ``"utterance"``).
    """

    scores: np.ndarray
    labels: np.ndarray
    test_seconds: np.ndarray
    enroll_counts: np.ndarray
    test_speakers: np.ndarray
    model_speakers: np.ndarray
    duration_bins: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, mask: np.ndarray) -> QualityTrials:
        """The trials where ``mask`` is true."""
        return QualityTrials(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))

    def count_bins(self) -> np.ndarray:
        """``"K enrollment(s)"`` per trial."""
        return np.array([f"{k} enrollment{'s' if k > 1 else ''}" for k in self.enroll_counts.tolist()])


def score_quality_trials(plan: QualityPlan, segment_embeddings: np.ndarray, utterance_ids: Sequence[str],
                         utterance_embeddings: np.ndarray, scorer: Scorer, max_nontargets: int = 400_000,
                         seed: int = 0) -> QualityTrials:
    """Score the planned trials.

    Args:
        plan: the plan.
        segment_embeddings: ``(len(plan.segments), d)`` embeddings of the rendered segments.
        utterance_ids: ids of ``utterance_embeddings``' rows.
        utterance_embeddings: ``(n, d)`` embeddings of single utterances (pooled into speaker models).
        scorer: scores models against tests.
        max_nontargets: non-target trials kept (a random subset; every target is kept).
        seed: seed of that subset.

    Returns:
        The scored trials.

    Raises:
        DataError: an enrollment utterance without an embedding, or a mismatched segment count.
    """
    if len(segment_embeddings) != len(plan.segments):
        raise DataError(f"{len(segment_embeddings)} segment embeddings for {len(plan.segments)} planned segments")
    rows = {u: i for i, u in enumerate(utterance_ids)}
    missing = sorted({u for m in plan.models for u in m.utterances} - set(rows))
    if missing:
        raise DataError(f"{len(missing)} enrollment utterances have no embedding (first: {missing[0]})")
    enrollments = [utterance_embeddings[[rows[u] for u in m.utterances]] for m in plan.models]
    scores = scorer(enrollments, segment_embeddings)
    kind = plan.is_target()
    seg_idx, model_idx = np.nonzero(kind >= 0)
    labels = kind[seg_idx, model_idx]
    nontargets = np.flatnonzero(labels == 0)
    if len(nontargets) > max_nontargets:
        dropped = np.random.default_rng(seed).choice(nontargets, len(nontargets) - max_nontargets, replace=False)
        keep = np.ones(len(labels), dtype=bool)
        keep[dropped] = False
        seg_idx, model_idx, labels = seg_idx[keep], model_idx[keep], labels[keep]
    segments, spk_models = plan.segments, plan.models
    return QualityTrials(
        scores=scores[seg_idx, model_idx],
        labels=labels.astype(np.int8),
        test_seconds=np.array([segments[i].seconds for i in seg_idx.tolist()]),
        enroll_counts=np.array([len(spk_models[j].utterances) for j in model_idx.tolist()]),
        test_speakers=np.array([segments[i].speaker for i in seg_idx.tolist()]),
        model_speakers=np.array([spk_models[j].speaker for j in model_idx.tolist()]),
        duration_bins=np.array([segments[i].bin for i in seg_idx.tolist()]),
    )

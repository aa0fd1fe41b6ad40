"""Frame-level re-segmentation: each speaker's own GMM, adapted to this recording, re-labels every speech frame.

The window clustering decides who speaks in 1.5 s steps, and a frame takes the speaker of the closest
window centre, so speaker changes land up to a hop away from where they are. Re-segmentation (the GMM
re-segmentation of classical diarization systems, e.g. LIUM's and Kaldi's) refines them:

1. every speaker's frames (cepstra with deltas, normalised over the recording: the i-vector model's own
   frames) give a MAP adaptation of the UBM's means (relevance :data:`RELEVANCE`; Reynolds et al. 2000);
2. every speech frame gets each speaker's log-likelihood ratio against the UBM over its top
   :data:`TOP_C` UBM components;
3. the ratios are averaged over :data:`SMOOTH_FRAMES` frames (a speaker turn is rarely shorter) and each
   frame takes the best speaker;

and steps 1-3 run :data:`ITERATIONS` times. Only speech frames change, and only between the speakers the
clustering found (one that keeps fewer than :data:`MIN_FRAMES` frames drops out). It runs only when every
speaker has at least :data:`MIN_SPEAKER_FRAMES` frames (10 s): on the calibration half, recordings whose
smallest speaker had less got worse about as often as better (their GMMs adapt from too few frames), and
nearly all of the others got better (``bench/diarization.py --calibrate`` prints the count of each). Because
each speaker's
model is trained on this recording, it adapts to the channel and voices in a way embeddings trained on
other speakers cannot. The constants are the best of a sweep on the calibration half of the simulated
conversations (``bench/diarization.py --calibrate`` prints it); the benchmark half measures the effect
(docs/benchmarks.md, "Diarization").

The same recording-adapted GMMs compare speakers: :func:`cross_likelihood_ratios` tells whether two
speakers' GMMs explain each other's frames better than the UBM does, which the pipeline uses to check an
estimated count for a speaker the window clustering missed (:mod:`voxprint.diarization.pipeline`). Both
work from one :class:`FrameAlignment` of the recording's speech frames, which every labelling shares.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.sparse import csr_matrix
from scipy.special import logsumexp

from voxprint.classical.gmm import DiagonalGMM, FrameStatistics, map_adapt_means

__all__ = ["ITERATIONS", "MIN_FRAMES", "MIN_SPEAKER_FRAMES", "RELEVANCE", "SMOOTH_FRAMES", "TOP_C", "FrameAlignment",
           "cross_likelihood_ratios", "frame_model", "has_speech_to_resegment", "resegment"]

#: Rounds of adaptation and re-labelling.
ITERATIONS = 4
#: MAP relevance factor of the speaker GMMs.
RELEVANCE = 16.0
#: Frames over which the log-likelihood ratios are averaged (1 s of 10 ms frames).
SMOOTH_FRAMES = 100
#: UBM components per frame in the ratios.
TOP_C = 5
#: A speaker with fewer frames than this has no model (its frames go to the others).
MIN_FRAMES = 10
#: Re-segmentation runs only when every speaker found has at least this many frames (10 s).
MIN_SPEAKER_FRAMES = 1000
#: Frames scored per matrix product (bounds memory on long recordings).
CHUNK_FRAMES = 50_000


def frame_model(model: Any) -> tuple[DiagonalGMM, Any] | None:
    """The UBM and the frame function of a model that has them (the i-vector and GMM-UBM models), else None.

    Returns:
        ``(ubm, frames)`` where ``frames(wave)`` gives the ``(T, D)`` frames the UBM models (10 ms apart), or
        None for a model without a UBM (e.g. a neural embedder).

    Example:
        >>> import voxprint
        >>> frame_model(voxprint.load_model("default")) is None, frame_model(voxprint.load_model("ivector"))[0].dim
        (True, 60)
    """
    encoder = getattr(getattr(model, "model", None), "encoder", None)
    if encoder is None or not hasattr(encoder, "ubm") or not hasattr(encoder, "frames"):
        return None

    def frames(wave: np.ndarray) -> np.ndarray:
        features = model.windows.features(wave)
        features = features.materialize() if hasattr(features, "materialize") else features
        return encoder.frames(model.model.normalize_features(features[None])[0])

    return encoder.ubm, frames


class FrameAlignment:
    """Each speech frame's top UBM components, their log-likelihoods and posteriors, computed once: they do not
    change between rounds, nor between labellings of the same speech (:func:`resegment` and
    :func:`cross_likelihood_ratios` take one made by :meth:`of_speech`), so a round costs one small sparse
    product per speaker and one scoring pass."""

    def __init__(self, ubm: DiagonalGMM, frames: np.ndarray, top_c: int):
        parts = [ubm.top_components(frames[first:first + CHUNK_FRAMES], top_c)
                 for first in range(0, len(frames), CHUNK_FRAMES)]
        self.ubm, self.frames = ubm, frames
        self.index = np.concatenate([index for index, _ in parts])
        self.scores = np.concatenate([scores for _, scores in parts])
        self.base = logsumexp(self.scores, axis=1)
        posteriors = np.exp(self.scores - self.base[:, None])
        count, width = self.index.shape
        # (T, K) posteriors with ``top_c`` entries a row: the statistics of any set of frames are one product.
        self.posteriors = csr_matrix((posteriors.ravel(), self.index.ravel(), np.arange(0, count * width + 1, width)),
                                     shape=(count, ubm.num_components))

    @classmethod
    def of_speech(cls, labels: np.ndarray, frames: np.ndarray, ubm: DiagonalGMM, top_c: int = TOP_C) -> FrameAlignment:
        """The alignment of the speech frames of ``labels`` (those >= 0 among the first ``min(T, T')``)."""
        usable = min(len(labels), len(frames))
        speech = np.asarray(labels[:usable]) >= 0
        return cls(ubm, np.asarray(frames[:usable], dtype=np.float64)[speech], top_c)

    def adapted_means(self, members: np.ndarray, relevance: float) -> np.ndarray:
        """MAP-adapted means from the frames in ``members`` (top-C posteriors, as the scores use)."""
        gamma = self.posteriors[members]
        stats = FrameStatistics(np.asarray(gamma.sum(axis=0)).ravel(), np.asarray(gamma.T @ self.frames[members]),
                                None, 0.0, int(members.sum()))
        return map_adapt_means(self.ubm, stats, relevance)

    def speaker_ratios(self, members: np.ndarray, relevance: float) -> np.ndarray:
        """(T,) every frame's ratio under the GMM adapted to the frames in ``members``."""
        return self.ratios(self.adapted_means(members, relevance))

    def ratios(self, means: np.ndarray) -> np.ndarray:
        """(T,) each frame's top-C log-likelihood ratio of the adapted model against the UBM."""
        out = np.empty(len(self.frames))
        for first in range(0, len(self.frames), CHUNK_FRAMES):
            rows = slice(first, first + CHUNK_FRAMES)
            out[rows] = self.ubm.adapted_top_c_scores(means, self.frames[rows], self.index[rows], self.scores[rows])
        return out - self.base


def has_speech_to_resegment(labels: np.ndarray, min_speaker_frames: int = MIN_SPEAKER_FRAMES) -> bool:
    """Whether :func:`resegment` would change anything: two speakers or more, each with ``min_speaker_frames``.

    Callers check it before computing the UBM's frames, which short recordings then never need.

    Example:
        >>> enough, short = np.repeat([0, 1, -1], 1000), np.repeat([0, 1], [1000, 999])
        >>> has_speech_to_resegment(enough), has_speech_to_resegment(short)
        (True, False)
    """
    counts = np.bincount(np.asarray(labels)[np.asarray(labels) >= 0])
    return len(counts) >= 2 and int(counts.min()) >= max(min_speaker_frames, MIN_FRAMES)


def resegment(labels: np.ndarray, frames: np.ndarray, ubm: DiagonalGMM, iterations: int = ITERATIONS,
              relevance: float = RELEVANCE, smooth_frames: int = SMOOTH_FRAMES, top_c: int = TOP_C,
              min_speaker_frames: int = MIN_SPEAKER_FRAMES, alignment: FrameAlignment | None = None) -> np.ndarray:
    """Speaker labels of every frame after GMM re-segmentation (see the module docstring).

    Args:
        labels: ``(T,)`` speaker of each 10 ms frame (``-1``: no speech), e.g. from the window clustering.
        frames: ``(T', D)`` the UBM's frames of the same recording (only the first ``min(T, T')`` are used;
            frames beyond keep their label).
        ubm: the universal background model the speakers are adapted from.
        iterations: rounds of adaptation and re-labelling.
        relevance: MAP relevance factor.
        smooth_frames: frames over which the ratios are averaged.
        top_c: UBM components per frame.
        min_speaker_frames: the labels are returned unchanged when a speaker has fewer frames than this.
        alignment: :meth:`FrameAlignment.of_speech` of the same speech frames, when already made.

    Returns:
        ``(T,)`` new labels: the same speech frames, each with one of the speakers of ``labels``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> ubm = DiagonalGMM(np.array([0.5, 0.5]), np.array([[-1.0], [1.0]]), np.full((2, 1), 4.0))
        >>> truth = np.repeat([0, 1, 0], 400)  # two voices, 4 s, 4 s, 4 s
        >>> frames = np.where(truth == 0, -1.5, 1.5)[:, None] + rng.normal(size=(1200, 1))
        >>> rough = np.repeat([0, 1, 0], [350, 450, 400])  # the first change 0.5 s early
        >>> int((rough != truth).sum()), int((resegment(rough, frames, ubm, min_speaker_frames=100) != truth).sum())
        (50, 10)
    """
    labels = np.asarray(labels, dtype=np.int64).copy()
    usable = min(len(labels), len(frames))
    current = labels[:usable].copy()
    if not has_speech_to_resegment(current, min_speaker_frames):
        return labels
    count = int(labels.max()) + 1
    speech = current >= 0
    alignment = _speech_alignment(alignment, current, frames, ubm, top_c)
    who = current[speech]
    for _ in range(iterations):
        ratios = np.full((len(who), count), -1e3)  # a speaker without a model never wins a frame
        for s in range(count):
            members = who == s
            if members.sum() >= MIN_FRAMES:
                ratios[:, s] = alignment.speaker_ratios(members, relevance)
        # Averaging over neighbouring speech frames (silence between them left out) favours whole turns.
        who = uniform_filter1d(ratios, size=smooth_frames, axis=0, mode="nearest").argmax(axis=1)
    current[speech] = who
    labels[:usable] = current
    return labels


def cross_likelihood_ratios(labels: np.ndarray, frames: np.ndarray, ubm: DiagonalGMM, relevance: float = RELEVANCE,
                            top_c: int = TOP_C, alignment: FrameAlignment | None = None) -> np.ndarray:
    """The cross likelihood ratio of every pair of speakers: how well each one's GMM explains the other's frames.

    Every speaker's GMM is the UBM MAP-adapted to its frames (as :func:`resegment` adapts them). For speakers
    ``a`` and ``b``, ``CLR(a, b)`` is the mean log-likelihood ratio, against the UBM, of ``a``'s frames under
    ``b``'s GMM plus that of ``b``'s frames under ``a``'s GMM (the classical criterion for merging clusters of
    one recording, Reynolds et al.'s cross likelihood ratio): above 0, each speaker's frames are better
    explained by the other's model than by the UBM, as for one voice; below 0, neither model fits the other.

    Args:
        labels: ``(T,)`` speaker of each 10 ms frame (``-1``: no speech).
        frames: ``(T', D)`` the UBM's frames of the same recording (the first ``min(T, T')`` are used).
        ubm: the universal background model.
        relevance: MAP relevance factor.
        top_c: UBM components per frame.
        alignment: :meth:`FrameAlignment.of_speech` of the same speech frames, when already made.

    Returns:
        ``(k, k)`` symmetric ratios (``k = labels.max() + 1``); the diagonal, and any pair with a speaker of
        fewer than :data:`MIN_FRAMES` frames, is ``-inf``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> ubm = DiagonalGMM(np.array([0.5, 0.5]), np.array([[-1.0], [1.0]]), np.full((2, 1), 4.0))
        >>> voices = np.repeat([0, 1, 2], 400)  # two voices; speakers 1 and 2 are the same one
        >>> frames = np.where(voices == 0, -1.5, 1.5)[:, None] + rng.normal(size=(1200, 1))
        >>> clr = cross_likelihood_ratios(voices, frames, ubm)
        >>> bool(clr[1, 2] > 0 > clr[0, 1])
        True
    """
    labels = np.asarray(labels, dtype=np.int64)
    usable = min(len(labels), len(frames))
    current = labels[:usable]
    speech = current >= 0
    count = int(labels.max()) + 1 if labels.size else 0
    out = np.full((count, count), -np.inf)
    who = current[speech]
    models = [s for s in range(count) if (who == s).sum() >= MIN_FRAMES]
    if len(models) < 2:
        return out
    alignment = _speech_alignment(alignment, current, frames, ubm, top_c)
    ratios = {s: alignment.speaker_ratios(who == s, relevance) for s in models}
    for i, a in enumerate(models):
        for b in models[i + 1:]:
            out[a, b] = out[b, a] = float(ratios[b][who == a].mean() + ratios[a][who == b].mean())
    return out


def _speech_alignment(given: FrameAlignment | None, labels: np.ndarray, frames: np.ndarray, ubm: DiagonalGMM,
                      top_c: int) -> FrameAlignment:
    """The alignment of the speech frames of ``labels`` (the usable ones): ``given`` once checked, else a new one."""
    if given is None:
        return FrameAlignment.of_speech(labels, frames, ubm, top_c)
    speech = int((labels >= 0).sum())
    if len(given.frames) != speech:
        raise ValueError(f"the alignment covers {len(given.frames)} frames, the labels {speech} speech "
                         "frames; make it with FrameAlignment.of_speech from labels with the same speech")
    return given

"""The eval-id protocol: closed- and open-set speaker identification on a data folder, from embeddings.

Protocol (:func:`split_protocol`, :func:`evaluate_identification`):

1. the speakers are split at random (seeded) into **enrolled** and **unknown** speakers
   (``unknown_fraction`` of them unknown), so the unknown speakers are never enrolled;
2. each enrolled speaker is enrolled with ``enroll_utts`` of its utterances (its speaker model is the one
   the speaker store keeps for the back-end, :func:`voxprint.identification.scoring.speaker_scoring`: the
   exact ``n``-utterance model for PLDA, the normalised mean of the unit embeddings for cosine); its other
   utterances are
   **known probes** (mated searches); every utterance of an unknown speaker is an **unknown probe**
   (non-mated search);
3. each probe is scored against a gallery of enrolled speakers with the scorer (the model's back-end)
   and calibrated to log-likelihood ratios (:class:`~voxprint.identification.calibration.QualityCalibration`,
   cross-fitted: each probe's scores are calibrated by a calibration fitted on the other fold of speakers,
   so never on trials of the probe's own speaker; the gallery spans both folds, so some of a probe's
   gallery speakers took part in its calibration's non-target trials, a small leak for a map of six
   numbers fitted on ~10^5 trials);
4. galleries of 10 enrolled speakers (``gallery_draws`` random ones, results pooled) and of all of them.

Which scores rank the searches: top-k and the open-set points use the scorer's own scores (for a
calibrated back-end, its log-likelihood ratios; its calibration was fitted on the model's training
speakers, so no parameter of the ranking saw the evaluated speakers), and the Cllr uses the
cross-fitted calibrated scores. A deployment applies one calibration to every search, and the DIR at a
given FPIR depends only on how that one map orders the searches; the cross-fitted scores instead give
the probes of each fold a different map (each fitted on a different half of the speakers), which
shifts one half of the searches against the other and costs DIR that no deployment loses. The
open-set points of the cross-fitted scores are reported too (``open_set_crossfitted``), so the
difference can be seen.

Metrics per gallery size ``N``:

- closed-set **top-1 / top-5 accuracy**: known probes whose speaker is the best / among the five best;
- open-set: the statistic of a search is ``best score - ln N`` (what
  :func:`voxprint.store.speakers.open_set_accepts` compares with its threshold). The threshold is set so
  that a fraction ``FPIR`` of unknown probes is accepted (false-positive identification rate); the
  **detection-and-identification rate** ``DIR`` is the fraction of known probes whose best speaker is
  the right one *and* clears it. With ``n`` unknown probes, an FPIR below ``1 / n`` allows no false
  positive at all (the threshold is above every unknown probe), which the result states (``nonmated``);
- **Cllr** of the calibrated scores of every probe against every gallery speaker.

The gallery-size question (:func:`gallery_size_fpir`): the best of ``N`` impostor scores grows with
``N``, so one fixed threshold on the best score lets the false-positive rate grow with the gallery,
while the ``- ln N`` rule (with calibrated log-likelihood ratios, ``score - ln N`` is the log posterior
odds when the prior of being enrolled is spread over ``N`` speakers) keeps it near where it was set,
and, with the unfitted threshold ``ln(1 / FPIR)``, below the target at every size. Unknown speakers
rotate over ``folds`` groups, the others being enrolled, so every utterance serves as a non-mated probe.

Everything works from embeddings (:class:`IdentificationData`), so a peer's embeddings of the same
utterances and calibration segments run through the same protocol.

Example:
    >>> scores = np.array([[2.0, 1.0, 0.0], [0.5, 1.5, 1.0]])
    >>> rank_of_truth(scores, np.array([0, 2])).tolist()
    [0, 1]
    >>> open_set_statistic([2.0], 1).tolist()
    [2.0]
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from voxprint.backends.calibration import DEFAULT_P_TARGET, cllr, threshold_for_false_accept_rate
from voxprint.errors import DataError
from voxprint.identification.calibration import (
    CrossFittedCalibration,
    QualityCalibration,
    calibration_by_bin,
    speaker_folds,
)
from voxprint.identification.scoring import Scorer
from voxprint.identification.trials import (
    QualityPlan,
    QualityTrials,
    plan_quality_trials,
    render_segment,
    score_quality_trials,
)

__all__ = ["FPIRS", "IdentificationData", "ModelEvaluation", "OpenSetPoint", "ProtocolSplit",
           "cross_fitted_calibrate", "dir_at_fpir", "evaluate_galleries", "evaluate_identification", "evaluate_model",
           "fit_identification", "gallery_size_fpir", "load_identification_data", "open_set_statistic",
           "rank_of_truth", "split_protocol", "top_k_accuracy"]

#: False-positive identification rates the open-set metrics are reported at.
FPIRS = (0.01, 0.001)
#: Calibrate per probe with these functions: ``(scores (P, N), test_seconds (P,), enroll_counts (N,),
#: probe_speakers (P,)) -> log-likelihood ratios (P, N)``.
Calibrate = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------------------------ metrics

def open_set_statistic(best_scores: ArrayLike, gallery: int) -> np.ndarray:
    """``best score - ln(gallery)`` per search: accepted by :func:`voxprint.store.speakers.open_set_accepts`
    exactly when it reaches the threshold.

    Example:
        >>> open_set_statistic([3.0, 1.0], 10).round(3).tolist()
        [0.697, -1.303]
    """
    if gallery < 1:
        raise DataError(f"a gallery holds at least one speaker, got {gallery}")
    return np.asarray(best_scores, dtype=np.float64) - math.log(gallery)


def rank_of_truth(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rank (0 = best) of each row's true column; ties count against the truth.

    Args:
        scores: ``(P, N)`` scores of P probes against N speakers.
        truth: ``(P,)`` column of each probe's speaker.

    Returns:
        ``(P,)`` ranks: the number of other speakers scoring at least as high.

    Example:
        >>> rank_of_truth(np.array([[1.0, 1.0, 0.0]]), np.array([0])).tolist()
        [1]
    """
    scores = np.asarray(scores, dtype=np.float64)
    true_scores = scores[np.arange(len(truth)), truth]
    return (scores >= true_scores[:, None]).sum(axis=1) - 1


def top_k_accuracy(scores: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Fraction of probes whose speaker is among the ``k`` best (closed-set identification).

    Example:
        >>> top_k_accuracy(np.array([[2.0, 1.0], [2.0, 1.0]]), np.array([0, 1]), 1)
        0.5
    """
    if len(truth) == 0:
        raise DataError("closed-set accuracy needs at least one known probe")
    return float((rank_of_truth(scores, truth) < k).mean())


@dataclass(frozen=True)
class OpenSetPoint:
    """One operating point of open-set identification.

    Attributes:
        fpir_target: the false-positive identification rate asked for.
        threshold: the threshold on ``best score - ln N``.
        fpir: the false-positive identification rate reached (at most the target).
        dir: the detection-and-identification rate at that threshold.
        nonmated: the number of non-mated searches the threshold was set on.
    """

    fpir_target: float
    threshold: float
    fpir: float
    dir: float
    nonmated: int

    @property
    def resolved(self) -> bool:
        """Whether the non-mated searches are enough to allow at least one false positive at the target."""
        return self.fpir_target * self.nonmated >= 1

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {"fpir_target": self.fpir_target, "threshold": self.threshold, "fpir": self.fpir, "dir": self.dir,
                "nonmated": self.nonmated, "resolved": self.resolved}


def dir_at_fpir(mated_statistic: ArrayLike, mated_correct: ArrayLike, nonmated_statistic: ArrayLike,
                fpir: float) -> OpenSetPoint:
    """Detection-and-identification rate at a false-positive identification rate.

    The threshold is the lowest whose FPIR on the non-mated searches is at most ``fpir``
    (:func:`voxprint.backends.calibration.threshold_for_false_accept_rate`); a mated search counts when its
    best speaker is right and its statistic reaches the threshold.

    Args:
        mated_statistic: ``(M,)`` open-set statistic of mated searches.
        mated_correct: ``(M,)`` whether each mated search's best speaker is the right one.
        nonmated_statistic: ``(U,)`` open-set statistic of non-mated searches.
        fpir: the false-positive identification rate, in (0, 1).

    Returns:
        The operating point.

    Raises:
        DataError: no searches of a kind, or ``fpir`` outside (0, 1).

    Example:
        >>> p = dir_at_fpir([3.0, 2.0, 1.0], [True, False, True], [0.0, 1.5, 0.5, -1.0], 0.25)
        >>> p.threshold, p.fpir, round(p.dir, 3)
        (1.5, 0.25, 0.333)
    """
    mated = np.asarray(mated_statistic, dtype=np.float64)
    correct = np.asarray(mated_correct, dtype=bool)
    nonmated = np.asarray(nonmated_statistic, dtype=np.float64)
    if mated.size == 0 or mated.shape != correct.shape:
        raise DataError("DIR needs at least one mated search, with one correctness flag each")
    threshold = threshold_for_false_accept_rate(nonmated, fpir)
    return OpenSetPoint(fpir_target=float(fpir), threshold=threshold, fpir=float((nonmated >= threshold).mean()),
                        dir=float(((mated >= threshold) & correct).mean()), nonmated=int(nonmated.size))


# ------------------------------------------------------------------------------------------------ data

@dataclass
class IdentificationData:
    """What the protocol needs from a data folder and an embedder: utterance embeddings with their
    speakers and durations, and the embedded calibration segments (:mod:`voxprint.identification.trials`).

    Attributes:
        utterance_ids: one id per row of ``embeddings``.
        speakers: ``(n,)`` speaker of each utterance.
        embeddings: ``(n, d)`` unit utterance embeddings.
        seconds: ``(n,)`` utterance durations.
        plan: the calibration trials' plan.
        segment_embeddings: ``(len(plan.segments), d)`` embeddings of its test segments.
    """

    utterance_ids: list[str]
    speakers: np.ndarray
    embeddings: np.ndarray
    seconds: np.ndarray
    plan: QualityPlan
    segment_embeddings: np.ndarray

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        """Speaker -> its utterance ids (sorted)."""
        out: dict[str, list[str]] = {}
        for utt, spk in sorted(zip(self.utterance_ids, self.speakers.tolist())):
            out.setdefault(spk, []).append(utt)
        return out

    def quality_trials(self, scorer: Scorer, max_nontargets: int = 400_000, seed: int = 0) -> QualityTrials:
        """The scored calibration trials (:func:`~voxprint.identification.trials.score_quality_trials`)."""
        return score_quality_trials(self.plan, self.segment_embeddings, self.utterance_ids, self.embeddings,
                                    scorer, max_nontargets=max_nontargets, seed=seed)


def load_identification_data(model: Any, data_dir: str | os.PathLike, draws: int = 4, seed: int = 0,
                             progress: bool = False, batch: int = 64) -> IdentificationData:
    """Embed a data folder's utterances and its calibration segments with a model.

    Each utterance is decoded once (as the model reads it); segments are made from the decoded
    waveforms and embedded ``batch`` at a time, so memory holds the utterances and one batch.

    Args:
        model: a :class:`~voxprint.inference.SpeakerModel`.
        data_dir: a data folder with ``wav.scp`` and ``utt2spk``.
        draws: orderings per speaker for the calibration trials.
        seed: seed of the calibration segments.
        progress: show progress bars.
        batch: segments embedded per call.

    Returns:
        The embedded data.

    Raises:
        DataError: an unreadable folder, or too few speakers.
        AudioError: a recording that cannot be used.
    """
    from voxprint.data import read_data_folder

    folder = read_data_folder(data_dir)
    ids = folder.utterances
    model.check_files(folder.wav, str(folder.root))
    waves = {u: model.load_waveform(folder.wav[u]) for u in ids}
    seconds = np.array([len(waves[u]) / model.sample_rate for u in ids])
    embedded = model.embed_many([waves[u] for u in ids], names=ids, progress=progress, desc="utterances")
    plan = plan_quality_trials(folder.spk2utt, dict(zip(ids, seconds.tolist())), draws=draws, seed=seed)
    segments = []
    for start in range(0, len(plan.segments), batch):
        chunk = [render_segment(s, waves, model.sample_rate) for s in plan.segments[start:start + batch]]
        segments.append(model.embed_many(chunk, progress=False).embeddings)
        if progress:
            print(f"calibration segments: {min(start + batch, len(plan.segments))}/{len(plan.segments)}",
                  file=sys.stderr)
    return IdentificationData(ids, np.array([folder.utt2spk[u] for u in ids]), embedded.embeddings, seconds, plan,
                              np.concatenate(segments))


# ------------------------------------------------------------------------------------------------ protocol

@dataclass(frozen=True)
class ProtocolSplit:
    """Who is enrolled with what, and which utterances probe.

    Attributes:
        enrolled: enrolled speaker -> its enrollment utterances.
        known_probes: utterances of enrolled speakers not used for enrollment.
        unknown_probes: every utterance of the unknown speakers.
    """

    enrolled: dict[str, list[str]]
    known_probes: list[str]
    unknown_probes: list[str]


def split_protocol(spk2utt: Mapping[str, Sequence[str]], enroll_utts: int = 3, unknown_fraction: float = 0.5,
                   seed: int = 0) -> ProtocolSplit:
    """Speaker-disjoint split into enrolled and unknown speakers (see the module docstring).

    Args:
        spk2utt: speaker -> utterance ids.
        enroll_utts: enrollment utterances per enrolled speaker.
        unknown_fraction: share of the speakers held out as unknown, in (0, 1).
        seed: seed of the split and of the choice of enrollment utterances.

    Returns:
        The split.

    Raises:
        DataError: a bad fraction or count, or a split that leaves no enrolled speaker, no unknown
            speaker or no known probe.

    Example:
        >>> split = split_protocol({"a": ["a1", "a2"], "b": ["b1", "b2"]}, enroll_utts=1, seed=0)
        >>> len(split.enrolled), len(split.known_probes), len(split.unknown_probes)
        (1, 1, 2)
    """
    if not 0 < unknown_fraction < 1:
        raise DataError(f"the unknown fraction must be between 0 and 1, got {unknown_fraction}")
    if enroll_utts < 1:
        raise DataError(f"enrollment needs at least one utterance per speaker, got {enroll_utts}")
    rng = np.random.default_rng(seed)
    speakers = sorted(spk2utt)
    n_unknown = int(round(unknown_fraction * len(speakers)))
    order = [speakers[i] for i in rng.permutation(len(speakers))]
    unknown, enrolled_speakers = sorted(order[:n_unknown]), sorted(order[n_unknown:])
    enrolled, known = {}, []
    for speaker in enrolled_speakers:
        utts = sorted(spk2utt[speaker])
        if len(utts) < enroll_utts:
            raise DataError(f"speaker {speaker!r} has {len(utts)} utterances, fewer than --enroll-utts {enroll_utts}")
        chosen = [utts[i] for i in rng.permutation(len(utts))]
        enrolled[speaker] = sorted(chosen[:enroll_utts])
        known += sorted(chosen[enroll_utts:])
    if not enrolled or not unknown or not known:
        raise DataError(f"{len(speakers)} speakers give {len(enrolled)} enrolled (with {len(known)} probes) and "
                        f"{len(unknown)} unknown speakers; identification needs some of each")
    return ProtocolSplit(enrolled, known, [u for s in unknown for u in sorted(spk2utt[s])])


def _models(data: IdentificationData,
            enrolled: Mapping[str, Sequence[str]]) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """Enrolled speaker ids, their enrollment embeddings (what the scorer makes each speaker model of, as
    the speaker store does) and their enrollment counts."""
    rows = {u: i for i, u in enumerate(data.utterance_ids)}
    names = sorted(enrolled)
    enrollments = [data.embeddings[[rows[u] for u in enrolled[s]]] for s in names]
    return names, enrollments, np.array([len(enrolled[s]) for s in names])


def _probe_llrs(data: IdentificationData, probes: Sequence[str], enrollments: list[np.ndarray], counts: np.ndarray,
                scorer: Scorer, calibrate: Calibrate | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw scores, calibrated scores, probe speakers) of probes against the enrolled speakers."""
    index = {u: i for i, u in enumerate(data.utterance_ids)}
    rows = np.array([index[u] for u in probes])
    raw = scorer(enrollments, data.embeddings[rows])
    speakers = data.speakers[rows]
    llr = raw if calibrate is None else calibrate(raw, data.seconds[rows], counts, speakers)
    return raw, llr, speakers


def cross_fitted_calibrate(calibration: CrossFittedCalibration) -> Calibrate:
    """A :data:`Calibrate` function from a cross-fitted calibration (each probe by its speaker's fold)."""

    def calibrate(scores: np.ndarray, seconds: np.ndarray, counts: np.ndarray, speakers: np.ndarray) -> np.ndarray:
        return calibration.transform(scores, seconds, counts[None, :], speakers)

    return calibrate


def _gallery_draws(n: int, size: int, draws: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Column subsets of ``size`` out of ``n`` (every column when ``size >= n``)."""
    if size >= n:
        return [np.arange(n)]
    return [np.sort(rng.choice(n, size, replace=False)) for _ in range(draws)]


def evaluate_galleries(llr: np.ndarray, known: np.ndarray, truth: np.ndarray, gallery_sizes: Sequence[int | None],
                       fpirs: Sequence[float] = FPIRS, draws: int = 10, seed: int = 0,
                       raw: np.ndarray | None = None, ranking: np.ndarray | None = None) -> list[dict[str, Any]]:
    """The protocol's metrics at each gallery size, from one score matrix (two when ``ranking`` is given).

    Args:
        llr: ``(P, N)`` calibrated scores of every probe against every enrolled speaker.
        known: ``(P,)`` whether each probe is of an enrolled speaker.
        truth: ``(P,)`` the column of each known probe's speaker (ignored for unknown probes).
        gallery_sizes: sizes (None: all enrolled speakers); smaller galleries are drawn ``draws`` times.
        fpirs: false-positive identification rates of the open-set points.
        draws: random galleries per size below all.
        seed: seed of the galleries.
        raw: the scores before calibration, when they are meant as LLRs too (their Cllr is reported).
        ranking: ``(P, N)`` scores that rank the searches (top-k and the open-set points) when they are not
            ``llr``; the open-set points of ``llr`` are then reported as ``open_set_crossfitted``.

    Returns:
        One dict per gallery size: ``gallery``, ``galleries`` (drawn), ``mated``, ``nonmated``,
        ``top1``, ``top5``, ``open_set`` (one :class:`OpenSetPoint` dict per FPIR), ``cllr`` and, with
        ``raw``, ``cllr_uncalibrated``; with ``ranking``, ``open_set_crossfitted``.
    """
    rng = np.random.default_rng(seed)
    n = llr.shape[1]
    matrices = {"open_set": llr if ranking is None else ranking}
    if ranking is not None:
        matrices["open_set_crossfitted"] = llr
    results = []
    for size in dict.fromkeys(min(n, s or n) for s in gallery_sizes):
        ranks, pair_scores, pair_raw, pair_labels = [], [], [], []
        searches: dict[str, tuple[list, list, list]] = {key: ([], [], []) for key in matrices}
        galleries = _gallery_draws(n, size, draws, rng)
        for columns in galleries:
            mated = known & np.isin(truth, columns)
            local = np.searchsorted(columns, truth[mated])
            ranks.append(rank_of_truth(matrices["open_set"][:, columns][mated], local))
            for key, matrix in matrices.items():
                sub = matrix[:, columns]
                mated_stat, correct, nonmated_stat = searches[key]
                mated_stat.append(open_set_statistic(sub[mated].max(axis=1), size))
                correct.append(sub[mated].argmax(axis=1) == local)
                nonmated_stat.append(open_set_statistic(sub[~known].max(axis=1), size))
            sub = llr[:, columns]
            used = mated | ~known
            labels = np.zeros((len(llr), size), dtype=np.int8)
            labels[np.flatnonzero(mated), local] = 1
            pair_scores.append(sub[used].ravel())
            pair_labels.append(labels[used].ravel())
            if raw is not None:
                pair_raw.append(raw[:, columns][used].ravel())
        rank = np.concatenate(ranks)
        labels_all = np.concatenate(pair_labels)
        entry: dict[str, Any] = {
            "gallery": int(size), "galleries": len(galleries), "mated": int(rank.size),
            "nonmated": int(sum(len(x) for x in searches["open_set"][2])), "top1": float((rank < 1).mean()),
            "top5": float((rank < 5).mean()), "cllr": cllr(np.concatenate(pair_scores), labels_all),
        }
        for key, lists in searches.items():
            mated_all, correct_all, nonmated_all = map(np.concatenate, lists)
            entry[key] = [dir_at_fpir(mated_all, correct_all, nonmated_all, f).to_dict() for f in fpirs]
        if raw is not None:
            entry["cllr_uncalibrated"] = cllr(np.concatenate(pair_raw), labels_all)
        results.append(entry)
    return results


def gallery_size_fpir(data: IdentificationData, scorer: Scorer, calibrate: Calibrate | None, enroll_utts: int = 3,
                      sizes: Sequence[int | None] = (10, 30, None), target_fpir: float = 0.01, folds: int = 6,
                      draws: int = 10, seed: int = 0, fpirs: Sequence[float] = ()) -> dict[str, Any]:
    """FPIR at growing gallery sizes with a threshold set at the smallest: fixed on the best score, or on
    ``best score - ln N`` (see the module docstring).

    Args:
        data: the embedded data.
        scorer: the back-end.
        calibrate: the calibration of the scores (None: the scores as they are).
        enroll_utts: enrollment utterances per enrolled speaker.
        sizes: gallery sizes, smallest first (None: every enrolled speaker; a size not below that is dropped).
        target_fpir: the FPIR the thresholds are set for at the smallest size.
        folds: groups of unknown speakers, in turn.
        draws: random galleries per fold and size below all.
        seed: seed of the folds, enrollments and galleries.
        fpirs: further FPIRs to set the ``- ln N`` rule's threshold for at the smallest size (``rule_thresholds``).

    Returns:
        ``{"target_fpir", "reference_gallery", "fixed_threshold", "rule_threshold", "rule_thresholds",
        "bound_threshold", "folds", "sizes": [{"gallery", "nonmated", "fpir_fixed", "fpir_rule",
        "fpir_bound_rule"}]}``; ``rule_thresholds`` is ``[{"fpir", "threshold", "nonmated"}]`` for
        ``target_fpir`` and each of ``fpirs``, set on every non-mated search at the smallest size (pooled over
        the folds and galleries: far more searches than one split's unknown probes); ``fpir_bound_rule``
        is the ``- ln N`` rule with the unfitted threshold ``ln(1 / target_fpir)``: for calibrated LLRs
        the non-target mean of ``exp(llr)`` is 1, so no single score exceeds ``t`` more often than
        ``exp(-t)`` and the best of ``N`` exceeds ``t + ln N`` at most ``N exp(-t - ln N) = exp(-t)``
        of the time, at every gallery size.

    Raises:
        DataError: fewer speakers than folds.
    """
    spk2utt = data.spk2utt
    assignment = speaker_folds(list(spk2utt), folds, seed)
    rng = np.random.default_rng(seed)
    best: dict[int | None, list[np.ndarray]] = {}
    stat: dict[int | None, list[np.ndarray]] = {}
    gallery: dict[int | None, set[int]] = {}
    for fold in range(folds):
        enrolled = {}
        for speaker, utts in spk2utt.items():
            if assignment[speaker] != fold:
                enrolled[speaker] = [utts[i] for i in np.sort(rng.permutation(len(utts))[:enroll_utts])]
        _, models, counts = _models(data, enrolled)
        probes = [u for s, utts in spk2utt.items() if assignment[s] == fold for u in utts]
        _, llr, _ = _probe_llrs(data, probes, models, counts, scorer, calibrate)
        n = len(models)
        for size in sizes:
            if size is not None and size >= n:
                continue
            real = n if size is None else size
            for columns in _gallery_draws(n, real, draws, rng):
                top = llr[:, columns].max(axis=1)
                best.setdefault(size, []).append(top)
                stat.setdefault(size, []).append(open_set_statistic(top, real))
                gallery.setdefault(size, set()).add(real)
    if not best:
        raise DataError("no gallery size fits the enrolled speakers")
    pooled = {size: (np.concatenate(best[size]), np.concatenate(stat[size])) for size in best}
    reference = next(iter(pooled))
    fixed = threshold_for_false_accept_rate(pooled[reference][0], target_fpir)
    rule = threshold_for_false_accept_rate(pooled[reference][1], target_fpir)
    searches = pooled[reference][1]
    rule_thresholds = [{"fpir": float(f), "threshold": float(threshold_for_false_accept_rate(searches, f)),
                        "nonmated": int(searches.size)} for f in dict.fromkeys((target_fpir, *fpirs))]
    bound = math.log(1.0 / target_fpir)

    def label(size: int | None) -> str:
        low, high = min(gallery[size]), max(gallery[size])
        return (f"all ({low})" if low == high else f"all ({low}-{high})") if size is None else str(size)

    rows = [{"gallery": label(size), "nonmated": int(b.size), "fpir_fixed": float((b >= fixed).mean()),
             "fpir_rule": float((t >= rule).mean()), "fpir_bound_rule": float((t >= bound).mean())}
            for size, (b, t) in pooled.items()]
    return {"target_fpir": target_fpir, "reference_gallery": label(reference), "fixed_threshold": fixed,
            "rule_threshold": rule, "rule_thresholds": rule_thresholds, "bound_threshold": bound, "folds": folds,
            "sizes": rows}


def evaluate_identification(data: IdentificationData, scorer: Scorer, enroll_utts: int = 3,
                            unknown_fraction: float = 0.5, seed: int = 0,
                            gallery_sizes: Sequence[int | None] = (10, None), fpirs: Sequence[float] = FPIRS,
                            gallery_draws: int = 10, calibration_folds: int = 2, p_target: float = DEFAULT_P_TARGET,
                            interactions: bool = True, raw_is_llr: bool = False,
                            gallery_fpir_sizes: Sequence[int | None] = (10, 30, None),
                            trials: QualityTrials | None = None) -> dict[str, Any]:
    """The whole eval-id protocol (see the module docstring) with cross-fitted calibration.

    Args:
        data: the embedded data.
        scorer: the back-end.
        enroll_utts: enrollment utterances per enrolled speaker.
        unknown_fraction: share of speakers held out as unknown.
        seed: seed of the split, the galleries and the calibration folds.
        gallery_sizes: gallery sizes of the main metrics (None: all enrolled speakers).
        fpirs: false-positive identification rates of the open-set points.
        gallery_draws: random galleries per size below all.
        calibration_folds: speaker folds of the cross-fitted calibration.
        p_target: effective prior of the calibration fits.
        interactions: fit the score x quality terms of the calibration.
        raw_is_llr: the scorer's scores are meant as LLRs (a calibrated back-end): their Cllr is reported too.
        gallery_fpir_sizes: gallery sizes of :func:`gallery_size_fpir`.
        trials: the scored calibration trials, when already made (``data.quality_trials(scorer, seed=seed)``).

    Returns:
        ``{"speakers", "enrolled", "unknown", "known_probes", "unknown_probes", "enroll_utts", "galleries": [...],
        "calibration": {..., "bins": [...]}, "gallery_fpir": {...}}``: ``galleries`` as
        :func:`evaluate_galleries` (ranked by the scorer's own scores, with ``open_set_crossfitted``); each
        ``bins`` row has a bin's figures (``kind`` ``"duration"`` or ``"count"``) from
        :func:`~voxprint.identification.calibration.calibration_by_bin` after cross-fitted calibration, on
        trials whose both speakers are in one fold (so unseen by their calibration), and,
        with ``raw_is_llr``, the same figures of the back-end's own scores under ``"before"``;
        ``gallery_fpir`` as :func:`gallery_size_fpir` at the first FPIR.

    Raises:
        DataError: too few speakers or utterances for the protocol or for cross-fitting.
    """
    trials = data.quality_trials(scorer, seed=seed) if trials is None else trials
    crossfit = CrossFittedCalibration.fit(trials.scores, trials.labels, trials.test_seconds, trials.enroll_counts,
                                          trials.test_speakers, trials.model_speakers, folds=calibration_folds,
                                          seed=seed, p_target=p_target, interactions=interactions)
    calibrate = cross_fitted_calibrate(crossfit)
    calibrated = crossfit.transform(trials.scores, trials.test_seconds, trials.enroll_counts, trials.test_speakers)
    clean = np.array([crossfit.folds[a] == crossfit.folds[b]
                      for a, b in zip(trials.test_speakers.tolist(), trials.model_speakers.tolist())])
    bins = []
    for kind, names in (("duration", trials.duration_bins), ("count", trials.count_bins())):
        labels, names = trials.labels[clean], names[clean]
        before = {b.bin: b.to_dict() for b in calibration_by_bin(trials.scores[clean], labels, names)} \
            if raw_is_llr else {}
        for row in calibration_by_bin(calibrated[clean], labels, names):
            bins.append({"kind": kind, **row.to_dict(), **({"before": before[row.bin]} if row.bin in before else {})})

    split = split_protocol(data.spk2utt, enroll_utts, unknown_fraction, seed)
    names, models, counts = _models(data, split.enrolled)
    probes = split.known_probes + split.unknown_probes
    raw, llr, speakers = _probe_llrs(data, probes, models, counts, scorer, calibrate)
    known = np.arange(len(probes)) < len(split.known_probes)
    column = {s: i for i, s in enumerate(names)}
    truth = np.array([column.get(s, -1) for s in speakers.tolist()])
    galleries = evaluate_galleries(llr, known, truth, gallery_sizes, fpirs, gallery_draws, seed,
                                   raw=raw if raw_is_llr else None, ranking=raw)
    return {
        "speakers": len(data.spk2utt), "enrolled": len(names), "unknown": len(data.spk2utt) - len(names),
        "known_probes": len(split.known_probes), "unknown_probes": len(split.unknown_probes),
        "enroll_utts": enroll_utts, "galleries": galleries,
        "calibration": {"trials": len(trials), "targets": int(trials.labels.sum()), "folds": calibration_folds,
                        "interactions": interactions, "p_target": p_target,
                        "cllr": cllr(calibrated[clean], trials.labels[clean]),
                        "cllr_before": cllr(trials.scores[clean], trials.labels[clean]) if raw_is_llr else None,
                        "bins": bins},
        "gallery_fpir": gallery_size_fpir(data, scorer, calibrate, enroll_utts, gallery_fpir_sizes, fpirs[0],
                                          seed=seed, fpirs=fpirs),
    }


@dataclass
class ModelEvaluation:
    """The eval-id protocol run with a model on a data folder.

    Attributes:
        data: the embedded data.
        trials: its scored calibration trials.
        report: :func:`evaluate_identification`'s result.
    """

    data: IdentificationData
    trials: QualityTrials
    report: dict[str, Any]


def evaluate_model(model: Any, data_dir: str | os.PathLike, enroll_utts: int = 3, unknown_fraction: float = 0.5,
                   seed: int = 0, draws: int = 4, fpirs: Sequence[float] = FPIRS,
                   progress: bool = False) -> ModelEvaluation:
    """Embed a data folder with a model and run the eval-id protocol with the model's back-end.

    Args:
        model: a :class:`~voxprint.inference.SpeakerModel`.
        data_dir: the data folder (speakers the model never trained on).
        enroll_utts: enrollment utterances per enrolled speaker.
        unknown_fraction: share of speakers held out as unknown.
        seed: seed of everything random in the protocol.
        draws: orderings per speaker for the calibration trials.
        fpirs: false-positive identification rates of the open-set points.
        progress: show progress on stderr.

    Returns:
        The data, the calibration trials and the report (``backend`` added: the back-end's name).

    Raises:
        DataError: an unreadable folder or too few speakers.
        AudioError: a recording that cannot be used.
    """
    from voxprint.identification.scoring import backend_scorer

    data = load_identification_data(model, data_dir, draws=draws, seed=seed, progress=progress)
    scorer = backend_scorer(model.backend)
    trials = data.quality_trials(scorer, seed=seed)
    report = evaluate_identification(data, scorer, enroll_utts=enroll_utts, unknown_fraction=unknown_fraction,
                                     seed=seed, fpirs=fpirs, raw_is_llr=model.backend.calibration is not None,
                                     trials=trials)
    return ModelEvaluation(data, trials, {"backend": model.backend.name, **report})


def fit_identification(trials: QualityTrials, report: Mapping[str, Any], target_fpir: float, where: str,
                       p_target: float = DEFAULT_P_TARGET, interactions: bool = True) -> dict[str, Any]:
    """The ``identification`` entry of a model's ``meta.json``: a calibration fitted on every speaker of the
    calibration trials, and the open-set threshold on ``best score - ln N`` for ``target_fpir``.

    The threshold is set on cross-fitted scores (``report``, from :func:`evaluate_identification`), calibrated
    as a new speaker's would be, not on scores the calibration was fitted on: the one of
    :func:`gallery_size_fpir` (``report["gallery_fpir"]["rule_thresholds"]``), set on every non-mated search
    of its folds (every speaker in turn unknown; 4800 searches on the 60 speakers of speechocean762 dev), and
    only when the report has none for ``target_fpir``, the one of the split's largest gallery. The latter
    rests on the few highest of one split's unknown probes (240 on speechocean762 dev: 2-3 of them at
    FPIR 1 %), so it swings with the split (``bench/identification.py`` prints each split's threshold), while
    the pooled one rests on all 4800 searches.

    Args:
        trials: the scored calibration trials of the evaluated data.
        report: :func:`evaluate_identification`'s result on the same data.
        target_fpir: the false-positive identification rate to set the threshold for (one of the
            report's FPIRs).
        where: the data's name, for the rule.
        p_target: effective prior of the calibration fit.
        interactions: fit the score x quality terms.

    Returns:
        ``{"threshold", "fpir", "calibration", "rule"}``.

    Raises:
        DataError: the report has no open-set point at ``target_fpir``.
    """
    gallery_fpir = report.get("gallery_fpir") or {}
    pooled = next((p for p in gallery_fpir.get("rule_thresholds", ())
                   if math.isclose(p["fpir"], target_fpir)), None)
    largest = report["galleries"][-1]
    point = next((p for p in largest["open_set"] if math.isclose(p["fpir_target"], target_fpir)), None)
    if pooled is None and point is None:
        raise DataError(f"the evaluation has no open-set point at FPIR {target_fpir:g}")
    calibration = QualityCalibration.fit(trials.scores, trials.labels, trials.test_seconds, trials.enroll_counts,
                                         p_target=p_target, interactions=interactions)
    speakers = len(np.unique(trials.test_speakers))
    if pooled is not None:
        threshold = pooled["threshold"]
        basis = (f"set on {pooled['nonmated']} non-mated searches at gallery {gallery_fpir['reference_gallery']} "
                 f"({gallery_fpir['folds']} folds of unknown speakers, each searching galleries of the others)")
    else:
        threshold = point["threshold"]
        basis = f"at gallery {largest['gallery']} ({largest['nonmated']} unknown probes)"
    rule = (f"accept the best of N enrolled speakers when its score - ln N >= threshold; threshold for FPIR "
            f"{target_fpir:g} {basis} on {where} with cross-fitted calibration; calibration fitted on all "
            f"{speakers} speakers of {where}")
    return {"threshold": float(threshold), "fpir": float(target_fpir), "calibration": calibration.to_dict(),
            "rule": rule}

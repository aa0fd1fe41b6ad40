"""Quality-measure calibration of identification scores: one scale for every test length and enrollment size.

A back-end score (for the bundled model a PLDA log-likelihood ratio calibrated on the training speakers)
does not mean the same thing for a 2 s test against one enrollment recording as for a 20 s test against
seven: longer tests and more enrollment recordings make both kinds of trial more extreme, and a
calibration fitted on the training speakers is over-confident on new ones. :class:`QualityCalibration`
maps a score ``s`` with the test duration ``T`` (seconds) and the enrollment count ``K`` to a natural-log
likelihood ratio::

    llr = a s + b + c log T + d log K + e s log T + f s log K

the quality-measure function of Ferrer et al. / Mandasari et al., fitted like
:class:`voxprint.backends.calibration.LinearCalibration` by prior-weighted logistic regression. The two
interaction terms let the *slope* depend on the quality measures as well as the offset: how far a score
should be trusted depends on how much speech made it. On held-out speechocean762 dev speakers they lower
the cross-fitted Cllr and even out the per-bin calibration loss (docs/benchmarks.md, "Identification:
speechocean762 dev"); ``interactions=False`` fits the offset-only form.

The quality measures are clipped to the range seen in fitting, so a 2-minute test is treated as the
longest calibrated one (whose scores are the most trusted) and an enrollment of 10 recordings as the
largest calibrated enrollment; the slope, which must stay positive, is checked over that whole range.
A test of unknown duration gets the mean log duration of the fitting trials.

Example:
    >>> cal = QualityCalibration(weights={"score": 2.0, "log_seconds": 0.5}, offset=-1.0,
    ...                          seconds_range=(2.0, 20.0), count_range=(1.0, 7.0), mean_log_seconds=1.5)
    >>> cal.transform([1.0, 1.0], test_seconds=[2.0, 200.0], enroll_counts=1).round(3).tolist()
    [1.347, 2.498]
    >>> QualityCalibration.from_dict(cal.to_dict()) == cal
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from voxprint.backends.calibration import (
    DEFAULT_P_TARGET,
    _check_prior,
    _logit,
    _scores_and_labels,
    cllr,
    min_cllr,
    threshold_for_false_accept_rate,
)
from voxprint.errors import DataError

__all__ = ["BASE_TERMS", "INTERACTION_TERMS", "BinCalibration", "CrossFittedCalibration", "QualityCalibration",
           "calibration_by_bin", "speaker_folds"]

#: Terms of the offset-only form (the intercept is separate).
BASE_TERMS = ("score", "log_seconds", "log_count")
#: Terms that let the slope depend on the quality measures.
INTERACTION_TERMS = ("score*log_seconds", "score*log_count")
_FORMAT = "voxprint-quality-calibration"
_VERSION = 1


def _features(scores: np.ndarray, log_seconds: np.ndarray, log_counts: np.ndarray,
              terms: tuple[str, ...]) -> np.ndarray:
    """(n, len(terms)) design matrix."""
    columns = {"score": scores, "log_seconds": log_seconds, "log_count": log_counts,
               "score*log_seconds": scores * log_seconds, "score*log_count": scores * log_counts}
    return np.stack([columns[t] for t in terms], axis=1)


def _positive(values: ArrayLike, what: str, size: int) -> np.ndarray:
    """``values`` broadcast to ``(size,)`` float64, all finite and positive."""
    try:
        array = np.broadcast_to(np.asarray(values, dtype=np.float64), (size,))
    except (TypeError, ValueError):
        raise DataError(f"{what} must be one positive number or one per score ({size})") from None
    if not (np.isfinite(array).all() and (array > 0).all()):
        raise DataError(f"{what} must be finite and positive")
    return array


@dataclass(frozen=True)
class QualityCalibration:
    """Scores to log-likelihood ratios, with the test duration and the enrollment count as quality measures.

    Args:
        weights: coefficient of each term (names from :data:`BASE_TERMS` and :data:`INTERACTION_TERMS`;
            a missing term has weight 0).
        offset: the intercept.
        p_target: effective prior the map was fitted at (for reference).
        seconds_range: (shortest, longest) test duration seen in fitting; durations are clipped to it.
        count_range: (fewest, most) enrollment recordings seen in fitting; counts are clipped to it.
        mean_log_seconds: mean log test duration of the fitting trials, used when a duration is unknown.

    Raises:
        DataError: an unknown term, a non-finite value, or a bad range or prior.
    """

    weights: dict[str, float]
    offset: float
    p_target: float = DEFAULT_P_TARGET
    seconds_range: tuple[float, float] = (1.0, 1.0)
    count_range: tuple[float, float] = (1.0, 1.0)
    mean_log_seconds: float = 0.0
    terms: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        known = BASE_TERMS + INTERACTION_TERMS
        unknown = [t for t in self.weights if t not in known]
        if unknown:
            raise DataError(f"quality calibration term {unknown[0]!r} is not one of {', '.join(known)}")
        values = [*self.weights.values(), self.offset, self.mean_log_seconds, *self.seconds_range, *self.count_range]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise DataError("quality calibration values must be finite numbers")
        weights = {t: float(self.weights[t]) for t in known if t in self.weights}
        for name, (low, high) in (("seconds_range", self.seconds_range), ("count_range", self.count_range)):
            if not 0 < low <= high:
                raise DataError(f"quality calibration {name} must be 0 < low <= high, got {(low, high)}")
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "offset", float(self.offset))
        object.__setattr__(self, "p_target", _check_prior(self.p_target))
        object.__setattr__(self, "seconds_range", (float(self.seconds_range[0]), float(self.seconds_range[1])))
        object.__setattr__(self, "count_range", (float(self.count_range[0]), float(self.count_range[1])))
        object.__setattr__(self, "mean_log_seconds", float(self.mean_log_seconds))
        object.__setattr__(self, "terms", tuple(weights))

    # ------------------------------------------------------------------------------------------ fitting

    @classmethod
    def fit(cls, scores: ArrayLike, labels: ArrayLike, test_seconds: ArrayLike, enroll_counts: ArrayLike,
            p_target: float = DEFAULT_P_TARGET, interactions: bool = True) -> QualityCalibration:
        """Fit by prior-weighted logistic regression (as :meth:`LinearCalibration.fit
        <voxprint.backends.calibration.LinearCalibration.fit>`, with the quality terms as more inputs).

        Args:
            scores: ``(n,)`` back-end scores of calibration trials from speakers that are not evaluated.
            labels: ``(n,)`` 1 for target, 0 for non-target.
            test_seconds: ``(n,)`` test durations in seconds (or one for all).
            enroll_counts: ``(n,)`` enrollment recordings of each trial's speaker model (or one for all).
            p_target: effective prior of the objective, in (0, 1).
            interactions: also fit the score x quality terms (see the module docstring).

        Returns:
            The fitted map.

        Raises:
            DataError: invalid inputs, constant scores, or a fit whose slope is not positive over the
                range of the quality measures.
        """
        from sklearn.linear_model import LogisticRegression  # slow import, needed only here

        p = _check_prior(p_target)
        s, is_target = _scores_and_labels(scores, labels, "quality calibration")
        seconds = _positive(test_seconds, "test_seconds", s.size)
        counts = _positive(enroll_counts, "enroll_counts", s.size)
        if not s.std() > 0:
            raise DataError("calibration scores are all equal; nothing to calibrate")
        log_t, log_k = np.log(seconds), np.log(counts)
        # A quality measure that does not vary cannot be fitted (its column would be constant).
        terms = tuple(t for t in BASE_TERMS + (INTERACTION_TERMS if interactions else ())
                      if not (("log_seconds" in t and np.ptp(log_t) == 0) or ("log_count" in t and np.ptp(log_k) == 0)))
        x = _features(s, log_t, log_k, terms)
        center, spread = x.mean(axis=0), x.std(axis=0)
        n_tgt = int(is_target.sum())
        weights = np.where(is_target, p / n_tgt, (1.0 - p) / (s.size - n_tgt))
        weights *= s.size / weights.sum()  # mean weight 1 keeps the solver's tolerance meaningful
        model = LogisticRegression(C=np.inf, tol=1e-10, max_iter=2000)
        model.fit((x - center) / spread, is_target, sample_weight=weights)
        coef = model.coef_[0] / spread
        offset = float(model.intercept_[0] - coef @ center) - _logit(p)
        fitted = cls(weights=dict(zip(terms, coef.tolist())), offset=offset, p_target=p,
                     seconds_range=(float(seconds.min()), float(seconds.max())),
                     count_range=(float(counts.min()), float(counts.max())), mean_log_seconds=float(log_t.mean()))
        corners = [fitted.slope(t, k) for t in fitted.seconds_range for k in fitted.count_range]
        if not min(corners) > 0:
            raise DataError("the calibration trials do not score targets above non-targets at every test length "
                            "and enrollment size; check the labels and that the scores come from one system")
        return fitted

    # ------------------------------------------------------------------------------------------ applying

    def _log_quality(self, size: int, test_seconds: ArrayLike | None,
                     enroll_counts: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Clipped log durations and log counts, broadcast to ``(size,)``."""
        if test_seconds is None:
            log_t = np.full(size, self.mean_log_seconds)
        else:
            log_t = np.log(_positive(test_seconds, "test_seconds", size))
        log_k = np.log(_positive(enroll_counts, "enroll_counts", size))
        return (np.clip(log_t, *np.log(self.seconds_range)), np.clip(log_k, *np.log(self.count_range)))

    def slope(self, test_seconds: float, enroll_count: float) -> float:
        """d llr / d score at one test duration and enrollment count (positive for a usable map).

        Example:
            >>> QualityCalibration(weights={"score": 1.0, "score*log_count": 0.5}, offset=0.0,
            ...                    count_range=(1.0, 10.0)).slope(5.0, math.e)
            1.5
        """
        log_t, log_k = self._log_quality(1, test_seconds, enroll_count)
        w = self.weights
        return float(w.get("score", 0.0) + w.get("score*log_seconds", 0.0) * log_t[0]
                     + w.get("score*log_count", 0.0) * log_k[0])

    def transform(self, scores: ArrayLike, test_seconds: ArrayLike | None, enroll_counts: ArrayLike) -> np.ndarray:
        """Log-likelihood ratios of back-end scores.

        Args:
            scores: back-end scores, any shape.
            test_seconds: the test duration of each score (or one for all); None when unknown (the mean
                log duration of the fitting trials is used).
            enroll_counts: the enrollment count of each score's speaker model (or one for all).

        Returns:
            float64 LLRs, shaped like ``scores``.

        Raises:
            DataError: non-numeric scores, or durations or counts that are not positive.
        """
        s = np.asarray(scores)
        if s.dtype.kind not in "biuf":
            raise DataError(f"scores must be real numbers, got dtype {s.dtype}")
        flat = s.astype(np.float64).reshape(-1)
        t = None if test_seconds is None else np.broadcast_to(np.asarray(test_seconds, dtype=np.float64), s.shape)
        k = np.broadcast_to(np.asarray(enroll_counts, dtype=np.float64), s.shape)
        log_t, log_k = self._log_quality(flat.size, None if t is None else t.reshape(-1), k.reshape(-1))
        x = _features(flat, log_t, log_k, self.terms)
        return (x @ np.array([self.weights[t] for t in self.terms]) + self.offset).reshape(s.shape)

    __call__ = transform

    # ------------------------------------------------------------------------------------------ storage

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (floats round-trip exactly through ``json``)."""
        return {"format": _FORMAT, "version": _VERSION, "weights": dict(self.weights), "offset": self.offset,
                "p_target": self.p_target, "seconds_range": list(self.seconds_range),
                "count_range": list(self.count_range), "mean_log_seconds": self.mean_log_seconds}

    @classmethod
    def from_dict(cls, entry: Any) -> QualityCalibration:
        """A calibration from :meth:`to_dict`'s data (e.g. a model's ``meta.json``).

        Raises:
            DataError: not a voxprint quality calibration, a newer format, or a missing or bad value.
        """
        if not isinstance(entry, dict) or entry.get("format") != _FORMAT:
            raise DataError(f"the identification calibration is not a voxprint quality calibration ({_FORMAT!r})")
        version = entry.get("version")
        if not isinstance(version, int) or version > _VERSION:
            raise DataError(f"quality calibration format version {version!r} is newer than this voxprint reads "
                            f"({_VERSION}); upgrade voxprint")
        try:
            weights = entry["weights"]
            if not isinstance(weights, dict):
                raise DataError("quality calibration weights must be an object of term: weight")
            return cls(weights=weights, offset=entry["offset"], p_target=entry["p_target"],
                       seconds_range=tuple(entry["seconds_range"]), count_range=tuple(entry["count_range"]),
                       mean_log_seconds=entry["mean_log_seconds"])
        except KeyError as exc:
            raise DataError(f"the quality calibration lacks {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise DataError(f"the quality calibration is malformed ({exc})") from None


# -------------------------------------------------------------------------------------------- cross-fitting

def speaker_folds(speakers: ArrayLike, folds: int = 2, seed: int = 0) -> dict[str, int]:
    """Speakers dealt into ``folds`` groups of (nearly) equal size, at random (seeded).

    Example:
        >>> sorted(speaker_folds(["a", "b", "c", "d"], 2, seed=0).values())
        [0, 0, 1, 1]
    """
    names = sorted(set(np.asarray(speakers).tolist()))
    if folds < 2 or len(names) < folds:
        raise DataError(f"cross-fitting needs at least 2 folds and a speaker per fold, got {folds} folds "
                        f"for {len(names)} speakers")
    order = np.random.default_rng(seed).permutation(len(names))
    return {names[i]: int(rank % folds) for rank, i in enumerate(order)}


@dataclass(frozen=True)
class CrossFittedCalibration:
    """One calibration per fold of speakers, each fitted on trials of the other folds' speakers only.

    A trial is calibrated with the calibration of its test speaker's fold, which never saw that
    speaker, so calibrated figures measured on the same speakers are honest about new speakers.

    Args:
        folds: speaker -> fold.
        calibrations: ``calibrations[f]`` was fitted without the speakers of fold ``f``.
    """

    folds: dict[str, int]
    calibrations: tuple[QualityCalibration, ...]

    @classmethod
    def fit(cls, scores: ArrayLike, labels: ArrayLike, test_seconds: ArrayLike, enroll_counts: ArrayLike,
            test_speakers: ArrayLike, model_speakers: ArrayLike, folds: int = 2, seed: int = 0,
            p_target: float = DEFAULT_P_TARGET, interactions: bool = True) -> CrossFittedCalibration:
        """Fit fold by fold: the calibration of fold ``f`` uses only trials whose test and model speakers
        are both outside fold ``f``.

        Args:
            scores, labels, test_seconds, enroll_counts: the trials, as :meth:`QualityCalibration.fit`.
            test_speakers: ``(n,)`` speaker of each trial's test recording.
            model_speakers: ``(n,)`` speaker of each trial's enrollment.
            folds: number of folds.
            seed: seed of the speaker folds.
            p_target: effective prior of the fits.
            interactions: fit the score x quality terms.

        Returns:
            The cross-fitted calibrations.

        Raises:
            DataError: too few speakers, or a fold whose complement lacks targets or non-targets.
        """
        tests, models = np.asarray(test_speakers), np.asarray(model_speakers)
        assignment = speaker_folds(np.concatenate([tests, models]), folds, seed)
        lookup = np.vectorize(assignment.__getitem__, otypes=[np.int64])
        test_fold, model_fold = lookup(tests), lookup(models)
        arrays = [np.broadcast_to(np.asarray(a), tests.shape) for a in (scores, labels, test_seconds, enroll_counts)]
        fitted = []
        for f in range(folds):
            keep = (test_fold != f) & (model_fold != f)
            fitted.append(QualityCalibration.fit(*(a[keep] for a in arrays), p_target=p_target,
                                                 interactions=interactions))
        return cls(assignment, tuple(fitted))

    def transform(self, scores: ArrayLike, test_seconds: ArrayLike | None, enroll_counts: ArrayLike,
                  test_speakers: ArrayLike) -> np.ndarray:
        """Calibrate each score with the calibration that never saw its test speaker.

        Args:
            scores: ``(n,)`` back-end scores (or ``(n, m)``: one row per test recording).
            test_seconds: ``(n,)`` (or broadcastable) test durations, None when unknown.
            enroll_counts: broadcastable to ``scores``.
            test_speakers: ``(n,)`` the test speaker of each score (of each row).

        Returns:
            LLRs shaped like ``scores``.

        Raises:
            DataError: a test speaker that is in no fold.
        """
        s = np.asarray(scores, dtype=np.float64)
        speakers = np.asarray(test_speakers).reshape(-1)
        missing = sorted(set(speakers.tolist()) - set(self.folds))
        if missing:
            raise DataError(f"speaker {missing[0]!r} is in no calibration fold")
        rows = s.reshape(len(speakers), -1)
        seconds = None
        if test_seconds is not None:
            t = np.asarray(test_seconds, dtype=np.float64)
            # One duration per test (row), or one per score, or one for all.
            seconds = np.broadcast_to(t.reshape(-1, 1) if t.ndim == 1 else t.reshape(rows.shape) if t.ndim else t,
                                      rows.shape)
        counts = np.broadcast_to(np.asarray(enroll_counts, dtype=np.float64), s.shape).reshape(rows.shape)
        out = np.empty_like(rows)
        fold = np.array([self.folds[x] for x in speakers.tolist()])
        for f, calibration in enumerate(self.calibrations):
            mine = fold == f
            if mine.any():
                out[mine] = calibration.transform(rows[mine], None if seconds is None else seconds[mine], counts[mine])
        return out.reshape(s.shape)


# -------------------------------------------------------------------------------------------- per-bin checks

@dataclass(frozen=True)
class BinCalibration:
    """How well log-likelihood ratios are calibrated within one bin of trials.

    Scores that are LLRs predict their own error rates: the non-target density is the target density
    times ``exp(-llr)``, so the false-accept rate at a threshold ``t`` must equal the target mean of
    ``exp(-llr)`` over ``llr >= t``, and the miss rate the non-target mean of ``exp(llr)`` over
    ``llr < t``. The ``*_expected`` figures are these predictions; they match the measured rates only
    where the scores are calibrated.

    Attributes:
        bin: the bin's name (e.g. ``"2 s"``).
        trials: trials in the bin.
        targets: target trials among them.
        cllr: Cllr of the scores (bits).
        min_cllr: Cllr after the best monotonic recalibration within the bin (bits); ``cllr - min_cllr``
            is the calibration loss, what a wrong scale or offset costs in this bin (the rest of Cllr is
            discrimination, which differs between bins whatever the calibration).
        threshold: the LLR threshold of the error rates.
        far: false-accept rate at ``threshold`` (at most ``exp(-threshold)`` for calibrated LLRs).
        far_expected: the false-accept rate the target LLRs predict.
        miss: miss rate at ``threshold``.
        miss_expected: the miss rate the non-target LLRs predict.
        llr_at_far: the LLR threshold whose false-accept rate in the bin is ``far_target`` (it falls as
            discrimination improves, even for perfectly calibrated LLRs).
        far_target: the false-accept rate of ``llr_at_far``.
    """

    bin: str
    trials: int
    targets: int
    cllr: float
    min_cllr: float
    threshold: float
    far: float
    far_expected: float
    miss: float
    miss_expected: float
    llr_at_far: float
    far_target: float

    @property
    def loss(self) -> float:
        """Calibration loss ``cllr - min_cllr`` in bits."""
        return self.cllr - self.min_cllr

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {"bin": self.bin, "trials": self.trials, "targets": self.targets, "cllr": self.cllr,
                "min_cllr": self.min_cllr, "threshold": self.threshold, "far": self.far,
                "far_expected": self.far_expected, "miss": self.miss, "miss_expected": self.miss_expected,
                "llr_at_far": self.llr_at_far, "far_target": self.far_target}


def calibration_by_bin(llrs: ArrayLike, labels: ArrayLike, bins: ArrayLike, threshold: float = math.log(100.0),
                       far: float = 0.01) -> list[BinCalibration]:
    """Cllr, min Cllr and measured and predicted error rates of LLRs within each bin of trials.

    Args:
        llrs: ``(n,)`` log-likelihood ratios.
        labels: ``(n,)`` 1 target, 0 non-target.
        bins: ``(n,)`` bin name of each trial.
        threshold: LLR threshold of the error rates (default ``ln 100``: odds of 100 to 1).
        far: false-accept rate whose LLR threshold is found in each bin.

    Returns:
        One :class:`BinCalibration` per bin holding both kinds of trial, in order of first appearance.

    Raises:
        DataError: as :func:`voxprint.backends.calibration.cllr`.

    Example:
        >>> rows = calibration_by_bin([2.0, -2.0, 3.0, -1.0], [1, 0, 1, 0], ["a", "a", "b", "b"], threshold=1.0)
        >>> [(r.bin, round(r.cllr, 3), r.far, round(r.far_expected, 3)) for r in rows]
        [('a', 0.183, 0.0, 0.135), ('b', 0.261, 0.0, 0.05)]
    """
    s, is_target = _scores_and_labels(llrs, labels, "calibration by bin")
    names = np.asarray(bins).astype(str)
    if names.shape != s.shape:
        raise DataError(f"one bin per trial is needed, got {names.size} for {s.size} trials")
    out = []
    for name in dict.fromkeys(names.tolist()):
        mine = names == name
        tgt = is_target[mine]
        if tgt.all() or not tgt.any():
            continue
        target, non = s[mine][tgt], s[mine][~tgt]
        # exp(-llr) of targets above the threshold and exp(llr) of non-targets below it are at most
        # exp(-threshold) and exp(threshold): no overflow.
        above, below = target >= threshold, non < threshold
        out.append(BinCalibration(
            bin=name, trials=int(mine.sum()), targets=int(tgt.sum()), cllr=cllr(s[mine], tgt),
            min_cllr=min_cllr(s[mine], tgt), threshold=float(threshold), far=float((non >= threshold).mean()),
            far_expected=float(np.where(above, np.exp(-np.where(above, target, 0.0)), 0.0).mean()),
            miss=float((target < threshold).mean()),
            miss_expected=float(np.where(below, np.exp(np.where(below, non, 0.0)), 0.0).mean()),
            llr_at_far=threshold_for_false_accept_rate(non, far), far_target=float(far)))
    return out

"""Score calibration: turn raw scores into log-likelihood ratios, and pick thresholds.

Conventions:
    * A calibrated score is a natural-log likelihood ratio (LLR),
      ``log p(score | same speaker) - log p(score | different speakers)``; positive favours
      "same speaker". A trial is accepted when ``llr >= threshold``.
    * :class:`LinearCalibration` maps ``score -> scale * score + offset`` (Brümmer's linear
      calibration, as in the FoCal and BOSARIS toolkits), trained by logistic regression in which
      the target and non-target trials are weighted to an effective prior ``p_target``. The
      default, ``p_target = 0.01``, is the primary operating point of voxprint's metrics (minDCF
      0.01): a two-parameter map cannot be right everywhere when the scores are not exactly
      affine in the true LLR, so it is made most accurate where the accept threshold of a
      low-false-accept system lies. Use ``p_target = 0.5`` to minimise Cllr itself.
    * :class:`voxprint.backends.fusion.LinearFusion` trains the same objective on several systems'
      scores at once (``llr = sum_i w_i s_i + b``); a one-system fusion is this calibration.
    * Bayes decisions: for a target prior ``p`` and costs ``c_miss``, ``c_fa``, accepting when
      ``llr >= log(c_fa (1 - p) / (c_miss p))`` (:func:`bayes_threshold`) minimises the
      expected cost.
    * ``Cllr`` (:func:`cllr`) is in bits: 0 for perfect, 1 for a system that always outputs 0,
      unbounded for confidently wrong LLRs. :func:`min_cllr` is the Cllr after the best
      monotonic recalibration (pool-adjacent-violators), i.e. the part of Cllr due to
      discrimination rather than calibration.

Example:
    >>> round(bayes_threshold(0.01), 4)
    4.5951
    >>> cal = LinearCalibration(scale=2.0, offset=-1.0)
    >>> cal([0.5, 1.0]).tolist()
    [0.0, 1.0]
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from voxprint.errors import DataError
from voxprint.fileio import atomic_write_text

__all__ = [
    "DEFAULT_P_TARGET",
    "LinearCalibration",
    "bayes_threshold",
    "cllr",
    "min_cllr",
    "real_scores",
    "threshold_for_false_accept_rate",
]

DEFAULT_P_TARGET = 0.01
_FORMAT = "voxprint-linear-calibration"
_VERSION = 1


def _check_prior(p_target: float, what: str = "p_target") -> float:
    try:
        p = float(p_target)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a number strictly between 0 and 1, got {p_target!r}") from None
    if not 0.0 < p < 1.0:
        raise DataError(f"{what} must be strictly between 0 and 1, got {p_target!r}")
    return p


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def read_json(src: Path, what: str) -> Any:
    """The JSON document in ``src``, or a one-line DataError naming ``what`` the file was meant to be.

    Example:
        >>> read_json(Path("/nonexistent.json"), "calibration file")
        Traceback (most recent call last):
        ...
        voxprint.errors.DataError: calibration file not found: /nonexistent.json
    """
    try:
        return json.loads(src.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{what} not found: {src}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {what} {src}: {exc}") from None


def real_scores(scores: np.ndarray, what: str) -> np.ndarray:
    """``scores`` as float64, refusing non-numbers, NaN and infinities with a message naming ``what``.

    Example:
        >>> real_scores(np.array([1, 2]), "scores").dtype
        dtype('float64')
    """
    if scores.dtype.kind not in "biuf":
        raise DataError(f"{what}: scores must be real numbers, got dtype {scores.dtype}")
    scores = scores.astype(np.float64, copy=False)
    if not np.isfinite(scores).all():
        raise DataError(f"{what}: {int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    return scores


def _scores_and_labels(scores: ArrayLike, labels: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated (float64 scores, bool is_target) with both classes present."""
    s = np.asarray(scores)
    lab = np.asarray(labels)
    if s.ndim != 1 or lab.shape != s.shape:
        raise DataError(
            f"{what}: need 1-D scores and labels of equal length, got shapes {s.shape} and {lab.shape}"
        )
    s = real_scores(s, what)
    if lab.dtype != bool and (lab.dtype.kind not in "iuf" or ((lab != 0) & (lab != 1)).any()):
        raise DataError(f"{what}: labels must be 0 (non-target) or 1 (target)")
    is_target = lab.astype(bool)
    n_target = int(is_target.sum())
    if n_target == 0 or n_target == is_target.size:
        raise DataError(
            f"{what}: {n_target} target and {is_target.size - n_target} non-target trials; both "
            "kinds are needed"
        )
    return s, is_target


def _cllr_bits(llr: np.ndarray, is_target: np.ndarray) -> float:
    # logaddexp(0, -x) = log(1 + e^-x) without overflow; infinite LLRs on the right side
    # cost 0, as they should.
    c_tgt = np.logaddexp(0.0, -llr[is_target]).mean()
    c_non = np.logaddexp(0.0, llr[~is_target]).mean()
    return float((c_tgt + c_non) / (2.0 * math.log(2.0)))


def cllr(scores: ArrayLike, labels: ArrayLike) -> float:
    """Log-likelihood-ratio cost of scores read as natural-log LLRs, in bits.

    ``Cllr = (mean_tgt log2(1 + e^-s) + mean_non log2(1 + e^s)) / 2`` (Brümmer & du Preez,
    2006): the average cost of Bayes decisions over all operating points.

    Args:
        scores: ``(n,)`` LLRs.
        labels: ``(n,)`` 1 for target, 0 for non-target trials.

    Returns:
        Cllr in bits (1.0 for an LLR that is always 0).

    Raises:
        DataError: If lengths differ, a score is non-finite, a label is not 0/1 or a class is absent.

    Example:
        >>> cllr([0.0, 0.0], [0, 1])
        1.0
    """
    s, is_target = _scores_and_labels(scores, labels, "cllr")
    return _cllr_bits(s, is_target)


def min_cllr(scores: ArrayLike, labels: ArrayLike) -> float:
    """Cllr after the optimal monotonic (non-decreasing) recalibration of the scores.

    The pool-adjacent-violators algorithm (scikit-learn's ``IsotonicRegression``; tied scores
    are pooled) gives the best non-decreasing map from scores to target posteriors at the
    empirical prior; subtracting the prior log odds turns them into LLRs. Any monotonic
    calibration of the same scores, linear included, has a Cllr at least this large.

    Args:
        scores: ``(n,)`` scores (any scale; higher means "same speaker").
        labels: ``(n,)`` 1 for target, 0 for non-target trials.

    Returns:
        Minimum Cllr in bits, in ``[0, 1]``.

    Raises:
        DataError: As :func:`cllr`.
    """
    from sklearn.isotonic import IsotonicRegression  # slow import, needed only here

    s, is_target = _scores_and_labels(scores, labels, "min_cllr")
    posterior = IsotonicRegression(y_min=0.0, y_max=1.0).fit_transform(s, is_target.astype(np.float64))
    n_tgt = int(is_target.sum())
    with np.errstate(divide="ignore"):
        # Pools of only one class give posteriors 0 or 1, i.e. infinite LLRs, which always
        # fall on the correct side and cost nothing.
        llr = np.log(posterior) - np.log1p(-posterior) - math.log(n_tgt / (is_target.size - n_tgt))
    return _cllr_bits(llr, is_target)


def bayes_threshold(p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """LLR threshold of the Bayes decision: ``-logit(effective prior)``.

    The effective prior is ``p c_miss / (p c_miss + (1 - p) c_fa)``, so the threshold is
    ``log(c_fa (1 - p) / (c_miss p))``; accept when ``llr >= threshold``.

    Args:
        p_target: Prior probability of a target trial, in (0, 1).
        c_miss: Cost of rejecting a target (> 0).
        c_fa: Cost of accepting a non-target (> 0).

    Returns:
        The threshold in natural-log LLR units.

    Raises:
        DataError: If ``p_target`` is not in (0, 1) or a cost is not positive.

    Example:
        >>> bayes_threshold(0.5)
        0.0
    """
    p = _check_prior(p_target)
    if not (c_miss > 0 and c_fa > 0 and math.isfinite(c_miss) and math.isfinite(c_fa)):
        raise DataError(f"c_miss and c_fa must be positive finite costs, got {c_miss!r} and {c_fa!r}")
    return math.log(c_fa) + math.log1p(-p) - math.log(c_miss) - math.log(p)


def threshold_for_false_accept_rate(nontarget_scores: ArrayLike, far: float) -> float:
    """Lowest threshold whose false-accept rate on the given non-target scores is at most ``far``.

    Thresholds are the distinct score values, plus the next float above the highest score
    (everything rejected), as in :mod:`voxprint.metrics.verification`; ties are never split.
    With ``k = floor(far * n)`` this accepts at most ``k`` of the ``n`` non-targets, so on
    fresh non-targets from the same distribution the expected FAR is about ``k / (n + 1)``;
    use ``n`` of at least ``100 / far`` for a stable estimate.

    Args:
        nontarget_scores: ``(n,)`` scores of non-target trials (raw or calibrated).
        far: Target false-accept rate, in (0, 1).

    Returns:
        Threshold; accept when ``score >= threshold``.

    Raises:
        DataError: If there are no scores, a score is non-finite, or ``far`` is not in (0, 1).

    Example:
        >>> threshold_for_false_accept_rate([0.1, 0.2, 0.3, 0.4], 0.25)
        0.4
    """
    s = np.asarray(nontarget_scores)
    if s.ndim != 1 or s.size == 0 or s.dtype.kind not in "biuf":
        raise DataError(f"non-target scores must be a non-empty 1-D array of numbers, got shape {s.shape}")
    s = np.sort(s.astype(np.float64))
    if not np.isfinite(s).all():
        raise DataError(f"{int((~np.isfinite(s)).sum())} non-target scores are NaN or infinite")
    rate = _check_prior(far, "far")
    k = math.floor(rate * s.size)
    if k == 0:
        return float(np.nextafter(s[-1], np.inf))
    # s[n - k] is the smallest candidate accepting at most k scores, unless it is tied with
    # scores below it; then the next distinct value up is the first valid one.
    i = s.size - k
    if s[i - 1] == s[i]:
        i = int(np.searchsorted(s, s[i], side="right"))
        if i == s.size:
            return float(np.nextafter(s[-1], np.inf))
    return float(s[i])


def _fit_linear_llr(features: np.ndarray, is_target: np.ndarray, p: float) -> tuple[np.ndarray, float]:
    """Weights ``w`` and offset ``b`` of the LLR ``w . x + b`` minimising the prior-weighted logistic loss.

    The objective of FoCal and BOSARIS (linear calibration for one column, linear fusion for
    several): ``p E_tgt[log(1 + e^-(l + logit p))] + (1 - p) E_non[log(1 + e^(l + logit p))]``,
    without regularisation. It is solved as a logistic regression (scikit-learn, L-BFGS) on
    standardised columns with target trials weighted by ``p / N_tgt`` and non-targets by
    ``(1 - p) / N_non``; its intercept is the posterior log odds at prior ``p``, from which
    ``logit(p)`` is removed. Callers validate: finite ``(n, k)`` float64 features, no constant
    column, both classes present, ``p`` in (0, 1).
    """
    from sklearn.linear_model import LogisticRegression  # slow import, needed only here

    columns = np.asfortranarray(features, dtype=np.float64)
    # Statistics column by column, as 1-D reductions (the same sums for one column as for a vector).
    center = np.array([float(col.mean()) for col in columns.T])
    spread = np.array([float(col.std()) for col in columns.T])
    n_tgt = int(is_target.sum())
    weights = np.where(is_target, p / n_tgt, (1.0 - p) / (is_target.size - n_tgt))
    # Mean weight 1 keeps the solver's tolerance meaningful whatever n is.
    weights *= is_target.size / weights.sum()
    model = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000)
    model.fit((columns - center) / spread, is_target, sample_weight=weights)
    w = model.coef_[0].astype(np.float64) / spread
    offset = float(model.intercept_[0]) - float(w @ center) - _logit(p)
    return w, offset


@dataclass(frozen=True)
class LinearCalibration:
    """Affine map from raw scores to natural-log LLRs: ``llr = scale * score + offset``.

    Args:
        scale: Positive slope.
        offset: Intercept.
        p_target: Effective target prior the map was trained at (recorded for reference; it does not
            change the map).

    Raises:
        DataError: If a value is non-finite, ``scale`` is not positive or ``p_target`` not in (0, 1).
    """

    scale: float = 1.0
    offset: float = 0.0
    p_target: float = DEFAULT_P_TARGET

    def __post_init__(self) -> None:
        for name in ("scale", "offset"):
            value = getattr(self, name)
            number = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
            if not number or not math.isfinite(value):
                raise DataError(f"calibration {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.scale <= 0:
            raise DataError(
                f"calibration scale must be positive (higher score = same speaker), got {self.scale}"
            )
        object.__setattr__(self, "p_target", _check_prior(self.p_target))

    @classmethod
    def fit(
        cls, scores: ArrayLike, labels: ArrayLike, p_target: float = DEFAULT_P_TARGET
    ) -> LinearCalibration:
        """Train by prior-weighted logistic regression (Brümmer's linear calibration).

        Minimises ``p E_tgt[log(1 + e^-(l + logit p))] + (1 - p) E_non[log(1 + e^(l +
        logit p))]`` over ``l = scale * score + offset``, without regularisation: a
        logistic regression (scikit-learn, L-BFGS) on standardised scores with target trials
        weighted by ``p / N_tgt`` and non-targets by ``(1 - p) / N_non``; its intercept is
        the posterior log odds at prior ``p``, from which ``logit(p)`` is removed.

        Args:
            scores: ``(n,)`` raw scores of calibration trials (not the evaluation trials).
            labels: ``(n,)`` 1 for target, 0 for non-target.
            p_target: Effective prior of the objective, in (0, 1); see the module docstring.

        Returns:
            The trained map.

        Raises:
            DataError: On invalid scores or labels (as :func:`cllr`), constant scores, a bad prior, or
                scores that do not rank targets above non-targets.
        """
        p = _check_prior(p_target)
        s, is_target = _scores_and_labels(scores, labels, "calibration")
        if not float(s.std()) > 0:
            raise DataError("calibration scores are all equal; nothing to calibrate")
        weights, offset = _fit_linear_llr(s[:, None], is_target, p)
        slope = float(weights[0])
        if not slope > 0:
            raise DataError(
                "calibration trials do not score targets higher than non-targets; check the labels "
                "and that the scores come from the same system"
            )
        return cls(scale=slope, offset=offset, p_target=p)

    def transform(self, scores: ArrayLike) -> np.ndarray:
        """Calibrated LLRs ``scale * score + offset`` (float64, same shape as ``scores``)."""
        s = np.asarray(scores)
        if s.dtype.kind not in "biuf":
            raise DataError(f"scores must be real numbers, got dtype {s.dtype}")
        return self.scale * s.astype(np.float64) + self.offset

    __call__ = transform

    def score_threshold(self, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
        """Raw-score threshold whose calibrated LLR is the Bayes threshold (see :func:`bayes_threshold`).

        Args:
            p_target: Prior probability of a target trial at the operating point.
            c_miss, c_fa: Costs of a miss and of a false accept.

        Returns:
            Accept when the raw ``score >= threshold``.
        """
        return (bayes_threshold(p_target, c_miss, c_fa) - self.offset) / self.scale

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the map as JSON (floats round-trip exactly), atomically.

        Args:
            path: Output file; parent folders are created.

        Returns:
            The written file.
        """
        out = Path(path)
        doc = {"format": _FORMAT, "version": _VERSION, "scale": self.scale, "offset": self.offset,
               "p_target": self.p_target}
        return atomic_write_text(out, json.dumps(doc, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearCalibration:
        """Read a map written by :meth:`save`.

        Raises:
            DataError: If the file is missing, not JSON, not a voxprint linear calibration, or of a
                newer format version.
        """
        src = Path(path)
        doc = read_json(src, "calibration file")
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise DataError(f"{src} is not a voxprint linear calibration (no format {_FORMAT!r})")
        version = doc.get("version")
        if not isinstance(version, int) or version > _VERSION:
            raise DataError(
                f"{src}: calibration format version {version!r} is not one this voxprint reads "
                f"({_VERSION}); upgrade voxprint"
            )
        try:
            return cls(scale=doc["scale"], offset=doc["offset"], p_target=doc["p_target"])
        except KeyError as exc:
            raise DataError(f"{src}: calibration file lacks {exc.args[0]!r}") from None
        except DataError as exc:
            raise DataError(f"{src}: {exc}") from None

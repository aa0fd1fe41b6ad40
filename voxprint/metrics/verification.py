"""Speaker-verification metrics: DET curve, equal error rate and minimum detection cost.

Conventions (shared by every function here):

* A trial is **accepted** when ``score >= threshold``; higher scores mean "more likely the
  same speaker".
* Operating points are evaluated only at the *distinct* score values (tied scores are
  accepted or rejected together, so a tie can never be split into a better-looking
  operating point), plus one end point above the highest score where every trial is
  rejected. The lowest threshold (the minimum score) is the other end point, where every
  trial is accepted. With ``k`` distinct scores the DET curve therefore has ``k + 1``
  points, ordered by increasing threshold: ``p_miss`` rises from 0 to 1 and ``p_fa`` falls
  from 1 to 0.
* The EER is where the straight line between two consecutive DET points crosses
  ``p_miss == p_fa`` (linear interpolation, no convex hull). This is the interpolation of
  the NIST/Kaldi-style ``compute_eer`` used by WeSpeaker and, equivalently, of the
  ``brentq``-on-``roc_curve`` recipe used by the VoxCeleb/VoxSRC tools; the only
  difference from WeSpeaker is that ties are not split here.
* minDCF is normalised by the cost of the best trivial system,
  ``min(c_miss * p_target, c_fa * (1 - p_target))``, so it lies in ``[0, 1]``.

Example:
    >>> import numpy as np
    >>> scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    >>> labels = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    >>> eer, threshold = compute_eer(scores, labels)
    >>> round(eer, 4), round(threshold, 4)
    (0.25, 0.5)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from voxprint.errors import DataError

__all__ = [
    "VerificationResult",
    "compute_eer",
    "compute_min_dcf",
    "det_curve",
    "evaluate_scores",
]


def _validate(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return (float64 scores, bool labels) or raise DataError saying what is wrong."""
    s = np.asarray(scores)
    lab = np.asarray(labels)
    if s.ndim != 1 or lab.ndim != 1:
        raise DataError(
            f"scores and labels must be 1-D arrays, got shapes {s.shape} and {lab.shape}"
        )
    if s.shape[0] != lab.shape[0]:
        raise DataError(
            f"scores and labels differ in length ({s.shape[0]} scores, {lab.shape[0]} labels); "
            "each trial needs exactly one score and one label"
        )
    if s.dtype.kind not in "biuf":
        raise DataError(f"scores must be real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    bad = ~np.isfinite(s)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{int(bad.sum())} of {s.size} scores are NaN or infinite (first at index {first}: "
            f"{s[first]}); fix the scoring step before computing metrics"
        )
    if lab.dtype == bool:
        is_target = lab
    else:
        if lab.dtype.kind not in "iuf":
            raise DataError(f"labels must be 0/1 (or bool), got dtype {lab.dtype}")
        not_binary = (lab != 0) & (lab != 1)
        if not_binary.any():
            first = int(np.flatnonzero(not_binary)[0])
            raise DataError(
                f"labels must be 0 (non-target) or 1 (target); index {first} is {lab[first].item()!r}"
            )
        is_target = lab == 1
    n_target = int(is_target.sum())
    if n_target == 0:
        raise DataError(
            f"the {lab.size} labels contain no target trial (label 1); EER and minDCF need both classes"
        )
    if n_target == lab.size:
        raise DataError(
            f"the {lab.size} labels contain no non-target trial (label 0); EER and minDCF need both classes"
        )
    return s, is_target


def _det_points(s: np.ndarray, is_target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET points of validated inputs (see the module docstring for the conventions)."""
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    tgt_sorted = is_target[order]
    n = s_sorted.size
    n_tgt = int(tgt_sorted.sum())
    n_non = n - n_tgt
    # Targets strictly below position i are exactly the misses of a threshold placed at
    # sorted position i, so one cumulative sum gives every operating point.
    tgt_below = np.concatenate(([0], np.cumsum(tgt_sorted, dtype=np.int64)))
    # Only the first index of each run of equal scores is a valid cut: cutting inside a
    # run would reject some tied trials and accept others.
    first_of_run = np.flatnonzero(np.concatenate(([True], s_sorted[1:] != s_sorted[:-1])))
    cuts = np.concatenate((first_of_run, [n]))
    misses = tgt_below[cuts]
    false_alarms = n_non - (cuts - misses)
    p_miss = misses / n_tgt
    p_fa = false_alarms / n_non
    # The all-rejected end point needs a threshold above every score; the next float keeps
    # it finite (usable in files and plots) while still satisfying score < threshold.
    thresholds = np.concatenate((s_sorted[first_of_run], [np.nextafter(s_sorted[-1], np.inf)]))
    return p_miss, p_fa, thresholds


def _eer_from_det(
    p_miss: np.ndarray, p_fa: np.ndarray, thresholds: np.ndarray
) -> tuple[float, float]:
    diff = p_miss - p_fa
    # diff is non-decreasing from -1 (all accepted) to +1 (all rejected), so the first
    # non-negative entry closes the segment that crosses the diagonal; k >= 1 always.
    k = int(np.flatnonzero(diff >= 0)[0])
    if diff[k] == 0:
        return float(p_miss[k]), float(thresholds[k])
    t = -diff[k - 1] / (diff[k] - diff[k - 1])
    eer = p_miss[k - 1] + t * (p_miss[k] - p_miss[k - 1])
    threshold = thresholds[k - 1] + t * (thresholds[k] - thresholds[k - 1])
    return float(eer), float(threshold)


def _min_dcf_from_det(
    p_miss: np.ndarray,
    p_fa: np.ndarray,
    thresholds: np.ndarray,
    p_target: float,
    c_miss: float,
    c_fa: float,
) -> tuple[float, float]:
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be strictly between 0 and 1, got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}")
    dcf = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    k = int(np.argmin(dcf))
    c_default = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf[k] / c_default), float(thresholds[k])


def det_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm probabilities at every distinct score threshold.

    One stable sort plus cumulative sums, so O(n log n) for n trials.

    Args:
        scores: One real, finite score per trial; higher means "same speaker".
        labels: 1 (or True) for target trials, 0 (or False) for non-target trials.

    Returns:
        A tuple ``(p_miss, p_fa, thresholds)``:

        - ``p_miss``: Fraction of targets rejected at each threshold (non-decreasing, 0 to 1).
        - ``p_fa``: Fraction of non-targets accepted at each threshold (non-increasing, 1 to 0).
        - ``thresholds``: Increasing thresholds: the distinct scores, then the next float above the highest
          score (all trials rejected). A trial is accepted when ``score >= threshold``.

    Raises:
        DataError: If the lengths differ, a score is NaN/infinite, a label is not 0/1, or either class
            is absent.

    Example:
        >>> p_miss, p_fa, thr = det_curve([0.2, 0.2, 0.9], [0, 1, 1])
        >>> p_miss.tolist(), p_fa.tolist()
        ([0.0, 0.5, 1.0], [1.0, 0.0, 0.0])
    """
    s, is_target = _validate(scores, labels)
    return _det_points(s, is_target)


def compute_eer(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """Equal error rate and the threshold where it is reached.

    The EER is interpolated linearly between the two consecutive DET points (see
    :func:`det_curve`) whose ``p_miss - p_fa`` changes sign; the threshold is interpolated
    with the same weight between their thresholds (when a DET point lies exactly on the
    diagonal, its own threshold is returned). A perfectly separated system gives 0.0, a
    perfectly inverted one (every target below every non-target) gives 1.0.

    Args:
        scores: One real, finite score per trial; higher means "same speaker".
        labels: 1 (or True) for target trials, 0 (or False) for non-target trials.

    Returns:
        A tuple ``(eer, threshold)``:

        - ``eer``: Equal error rate as a fraction in ``[0, 1]`` (not a percentage).
        - ``threshold``: Score threshold (accept when ``score >= threshold``) at the EER.

    Raises:
        DataError: As :func:`det_curve`.

    Example:
        >>> compute_eer([0.1, 0.2, 0.3, 0.4], [1, 0, 1, 1])[0]
        0.3333333333333333
    """
    return _eer_from_det(*det_curve(scores, labels))


def compute_min_dcf(
    scores: ArrayLike,
    labels: ArrayLike,
    p_target: float,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Normalised minimum detection cost over all thresholds.

    ``DCF(t) = c_miss * p_target * p_miss(t) + c_fa * (1 - p_target) * p_fa(t)``, minimised
    over the DET points of :func:`det_curve` (end points included) and divided by
    ``min(c_miss * p_target, c_fa * (1 - p_target))``, the cost of always accepting or
    always rejecting, so 1.0 means "no better than a trivial system".

    Args:
        scores: One real, finite score per trial; higher means "same speaker".
        labels: 1 (or True) for target trials, 0 (or False) for non-target trials.
        p_target: Prior probability of a target trial, e.g. 0.01 or 0.001.
        c_miss: Cost of rejecting a target.
        c_fa: Cost of accepting a non-target.

    Returns:
        A tuple ``(min_dcf, threshold)``:

        - ``min_dcf``: Normalised minimum DCF in ``[0, 1]``.
        - ``threshold``: The lowest threshold (accept when ``score >= threshold``) reaching it.

    Raises:
        DataError: As :func:`det_curve`.
        ValueError: If ``p_target`` is not in (0, 1) or a cost is not positive.
    """
    return _min_dcf_from_det(*det_curve(scores, labels), p_target, c_miss, c_fa)


@dataclass(frozen=True)
class VerificationResult:
    """Summary metrics of one scored trial list.

    Args:
        eer: Equal error rate as a fraction (see :func:`compute_eer`).
        eer_threshold: Score threshold at the EER.
        min_dcf_01: Normalised minDCF with ``p_target = 0.01``, ``c_miss = c_fa = 1``.
        min_dcf_001: Normalised minDCF with ``p_target = 0.001``, ``c_miss = c_fa = 1``.
        trials: Number of trials scored.
        targets: Number of target trials among them.
    """

    eer: float
    eer_threshold: float
    min_dcf_01: float
    min_dcf_001: float
    trials: int
    targets: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON reports, with the conventional metric names as keys."""
        return {
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "min_dcf_0.01": self.min_dcf_01,
            "min_dcf_0.001": self.min_dcf_001,
            "trials": self.trials,
            "targets": self.targets,
        }


def evaluate_scores(scores: ArrayLike, labels: ArrayLike) -> VerificationResult:
    """EER and minDCF (p_target 0.01 and 0.001) of scored trials, from one DET curve.

    Args:
        scores: One real, finite score per trial; higher means "same speaker".
        labels: 1 (or True) for target trials, 0 (or False) for non-target trials.

    Returns:
        The metrics plus the trial and target counts.

    Raises:
        DataError: As :func:`det_curve`.

    Example:
        >>> r = evaluate_scores([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])
        >>> r.eer, r.trials, r.targets
        (0.0, 4, 2)
    """
    s, is_target = _validate(scores, labels)
    det = _det_points(s, is_target)
    eer, eer_threshold = _eer_from_det(*det)
    min_dcf_01, _ = _min_dcf_from_det(*det, 0.01, 1.0, 1.0)
    min_dcf_001, _ = _min_dcf_from_det(*det, 0.001, 1.0, 1.0)
    return VerificationResult(
        eer=eer,
        eer_threshold=eer_threshold,
        min_dcf_01=min_dcf_01,
        min_dcf_001=min_dcf_001,
        trials=int(s.size),
        targets=int(is_target.sum()),
    )

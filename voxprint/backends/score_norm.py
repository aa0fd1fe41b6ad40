"""Score normalisation against an impostor cohort: S-norm and adaptive S-norm (AS-norm).

A raw score ``s(e, t)`` of an enrollment ``e`` and a test ``t`` is compared with the scores
of each side against a cohort of impostor embeddings (usually the training utterances, or
one mean embedding per training speaker; never the trial speakers themselves):

* **S-norm** (symmetric normalisation) averages the Z-norm and the T-norm of the score,
  ``0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)``, where ``mu_e, sd_e`` are the mean and
  standard deviation of the enrollment's scores against the whole cohort and ``mu_t, sd_t``
  those of the test.
* **AS-norm** (adaptive S-norm, Matejka et al., Interspeech 2017, "Analysis of score
  normalization in multilingual speaker recognition") takes each side's statistics over only
  its ``top_n`` highest cohort scores, i.e. over the impostors most similar to that side.
  This is the variant in which the enrollment and the test each select their own cohort
  (the "AS-norm1" of the paper, as in Kaldi, WeSpeaker and SpeechBrain).

Standard deviations are population ones (``ddof=0``), as in WeSpeaker and SpeechBrain. With
``top_n`` at least the cohort size, AS-norm is exactly S-norm.

Example:
    >>> import numpy as np
    >>> snorm(np.array([2.0]), np.array([[0.0, 2.0]]), np.array([[-1.0, 1.0]])).tolist()
    [1.5]
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from voxprint.backends.rows import RowIndex, as_matrix, unit_rows
from voxprint.backends.scoring import cosine_score_trials
from voxprint.data.trials import Trials
from voxprint.errors import DataError

__all__ = ["asnorm", "cohort_statistics", "normalize_trial_scores", "snorm"]

# Cohort-score cells computed per block in normalize_trial_scores: 2**22 float32 cells are
# 16 MiB (plus the same again for np.partition's copy), whatever the number of trial ids.
_COHORT_CELLS = 1 << 22
_METHODS = ("snorm", "asnorm")


def _check_top_n(top_n: int | None, cohort_size: int) -> int:
    """Number of cohort scores to keep per side; ``None`` or a large ``top_n`` keeps them all."""
    if top_n is None:
        return cohort_size
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 2:
        raise DataError(
            f"top_n must be an integer >= 2 (a standard deviation needs two scores), got {top_n!r}"
        )
    # A cohort smaller than top_n (e.g. 125 speaker means with the default 300) simply uses
    # every impostor, which is the limit of the method (plain S-norm), not an error.
    return min(int(top_n), cohort_size)


def cohort_statistics(cohort_scores: ArrayLike, top_n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each row's ``top_n`` highest cohort scores.

    Args:
        cohort_scores: ``(n, cohort_size)`` scores of ``n`` embeddings against the cohort.
        top_n: Number of highest scores per row to use (AS-norm); None, or a value of at least the
            cohort size, uses the whole row (S-norm).

    Returns:
        A tuple ``(mean, std)``:

        - ``mean``: ``(n,)`` float64 means.
        - ``std``: ``(n,)`` float64 population standard deviations (``ddof=0``).

    Raises:
        DataError: If the array is not 2-D with at least two columns, is non-finite, ``top_n`` is not an
            integer >= 2, or a row's selected scores are all equal (zero spread).
    """
    mat = as_matrix(cohort_scores, "cohort scores")
    if mat.ndim != 2 or mat.shape[1] < 2:
        raise DataError(
            f"cohort scores must be an (n, cohort_size) matrix with cohort_size >= 2, got shape {mat.shape}"
        )
    mean, std = _top_n_statistics(mat, _check_top_n(top_n, mat.shape[1]))
    flat = np.flatnonzero(~(std > 0))
    if flat.size:
        raise DataError(
            f"{flat.size} of {std.size} rows have cohort scores with zero spread (first: row "
            f"{int(flat[0])}); use a larger or more varied cohort"
        )
    return mean, std


def _top_n_statistics(mat: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 mean and population std of the ``k`` largest entries of each row."""
    if k < mat.shape[1]:
        # Partial selection is O(cohort_size) per row; the order inside the top k is irrelevant.
        mat = np.partition(mat, mat.shape[1] - k, axis=1)[:, mat.shape[1] - k :]
    return mat.mean(axis=1, dtype=np.float64), mat.std(axis=1, dtype=np.float64)


def _trial_scores(scores: ArrayLike) -> np.ndarray:
    s = as_matrix(scores, "scores").astype(np.float64, copy=False)
    if s.ndim != 1:
        raise DataError(f"scores must be a 1-D array (one per trial), got shape {s.shape}")
    return s


def _check_rows(n: int, enroll_cohort_scores: ArrayLike, test_cohort_scores: ArrayLike) -> None:
    for name, mat in (("enroll", enroll_cohort_scores), ("test", test_cohort_scores)):
        rows = np.shape(mat)[0] if np.ndim(mat) >= 1 else 0
        if rows != n:
            raise DataError(
                f"{name}_cohort_scores has {rows} rows for {n} scores; it needs one row of cohort "
                "scores per trial"
            )


def _symmetric_norm(scores: ArrayLike, enroll_cohort_scores: ArrayLike, test_cohort_scores: ArrayLike,
                    top_n: int | None) -> np.ndarray:
    """Mean of the Z-norm and T-norm of each score; statistics over the top-N cohort scores (None: all)."""
    s = _trial_scores(scores)
    _check_rows(s.size, enroll_cohort_scores, test_cohort_scores)
    mu_e, sd_e = cohort_statistics(enroll_cohort_scores, top_n)
    mu_t, sd_t = cohort_statistics(test_cohort_scores, top_n)
    return 0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)


def asnorm(
    scores: ArrayLike,
    enroll_cohort_scores: ArrayLike,
    test_cohort_scores: ArrayLike,
    top_n: int = 300,
) -> np.ndarray:
    """Adaptive S-norm: S-norm with each side's statistics over its ``top_n`` best impostors.

    Args:
        scores: ``(n,)`` raw trial scores.
        enroll_cohort_scores: ``(n, cohort_size)`` scores of each trial's enrollment against the cohort.
        test_cohort_scores: ``(n, cohort_size')`` scores of each trial's test against the cohort (the two cohorts
            may differ in size).
        top_n: Highest cohort scores used per side (>= 2); at least the cohort size gives S-norm.

    Returns:
        ``(n,)`` float64 normalised scores.

    Raises:
        DataError: If shapes disagree, a value is non-finite, ``top_n`` < 2, or a side's selected
            cohort scores have zero spread.
    """
    return _symmetric_norm(scores, enroll_cohort_scores, test_cohort_scores, top_n)


def snorm(scores: ArrayLike, enroll_cohort_scores: ArrayLike, test_cohort_scores: ArrayLike) -> np.ndarray:
    """Symmetric score normalisation: the mean of the Z-norm and T-norm of each score.

    ``0.5 * ((s - mu_e) / sd_e + (s - mu_t) / sd_t)`` with each side's mean and population
    standard deviation over its whole row of cohort scores.

    Args:
        scores: ``(n,)`` raw trial scores.
        enroll_cohort_scores: ``(n, cohort_size)`` scores of each trial's enrollment against the cohort.
        test_cohort_scores: ``(n, cohort_size')`` scores of each trial's test against the cohort.

    Returns:
        ``(n,)`` float64 normalised scores.

    Raises:
        DataError: As :func:`asnorm`.

    Example:
        >>> snorm([2.0], [[0.0, 2.0]], [[-1.0, 1.0]]).tolist()  # Z-norm 1, T-norm 2
        [1.5]
    """
    return _symmetric_norm(scores, enroll_cohort_scores, test_cohort_scores, None)


def normalize_trial_scores(
    ids: Sequence[str],
    embeddings: np.ndarray,
    trials: Trials,
    cohort_embeddings: np.ndarray,
    method: str = "asnorm",
    top_n: int = 300,
) -> np.ndarray:
    """Cosine-score a trial list and S-norm or AS-norm the scores against a cohort.

    The raw scores come from :func:`~voxprint.backends.scoring.cosine_score_trials`. Each
    distinct id of the trials (on either side) is scored against the cohort once, in blocks
    of about 4M cohort scores, and only its two statistics are kept, so memory does not
    grow with the number of trials or with ``ids x cohort``.

    Args:
        ids: Unique id of each embedding row.
        embeddings: ``(len(ids), d)`` utterance (or enrolled model) embeddings; need not be unit length.
        trials: The trials; every id must be in ``ids``.
        cohort_embeddings: ``(cohort_size, d)`` impostor embeddings: training utterances, or one mean embedding
            per training speaker. They should not include the trial speakers.
        method: ``"asnorm"`` (top ``top_n`` cohort scores per side) or ``"snorm"`` (whole cohort).
        top_n: Cohort scores kept per side for AS-norm (ignored by S-norm); capped at the cohort size.

    Returns:
        ``(len(trials),)`` float64 normalised scores, in trial order.

    Raises:
        DataError: On an unknown method, a bad ``top_n``, a cohort of fewer than two rows or of another
            dimension, zero or non-finite embeddings, missing trial ids (as
            :func:`~voxprint.backends.scoring.cosine_score_trials`), or zero-spread cohort scores.
    """
    if method not in _METHODS:
        raise DataError(f"unknown score normalisation {method!r}; choose one of {', '.join(_METHODS)}")
    raw = cosine_score_trials(ids, embeddings, trials).astype(np.float64)
    cohort = as_matrix(cohort_embeddings, "cohort embeddings")
    mat = as_matrix(embeddings, "embeddings")
    if cohort.ndim != 2 or cohort.shape[0] < 2 or cohort.shape[1] != mat.shape[1]:
        raise DataError(
            f"cohort embeddings must be a (cohort_size >= 2, {mat.shape[1]}) matrix like the trial "
            f"embeddings, got shape {cohort.shape}"
        )
    k = cohort.shape[0] if method == "snorm" else _check_top_n(top_n, cohort.shape[0])
    if raw.size == 0:
        return raw
    cohort_unit = unit_rows(cohort, "cohort embeddings").T
    if cohort_unit.dtype != mat.dtype:
        cohort_unit = cohort_unit.astype(np.result_type(cohort_unit.dtype, mat.dtype))

    # Each distinct trial id is scored against the cohort once; cosine_score_trials has already
    # checked that every one of them has exactly one row.
    used, inverse = np.unique(np.concatenate((trials.enroll, trials.test)).astype(str), return_inverse=True)
    rows = RowIndex(ids).rows(used)
    mean = np.empty(used.size)
    std = np.empty(used.size)
    step = max(1, _COHORT_CELLS // cohort.shape[0])
    for lo in range(0, used.size, step):
        block = unit_rows(mat[rows[lo : lo + step]], "embedding rows", used[lo : lo + step])
        mean[lo : lo + step], std[lo : lo + step] = _top_n_statistics(block @ cohort_unit, k)
    flat = np.flatnonzero(~(std > 0))
    if flat.size:
        raise DataError(
            f"{flat.size} trial id(s) score identically against every selected cohort embedding "
            f"({', '.join(used[flat[:5]].tolist())}{', ...' if flat.size > 5 else ''}); use a "
            "larger or more varied cohort"
        )
    e, t = inverse[: len(trials)], inverse[len(trials) :]
    return 0.5 * ((raw - mean[e]) / std[e] + (raw - mean[t]) / std[t])

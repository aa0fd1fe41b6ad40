"""Cosine scoring of trial lists, speaker models from enrollment embeddings, and enrolled-model rows.

Trial lists themselves (reading, writing, making) are in :mod:`voxprint.data.trials`; the rows of an
embedding table (checks, normalisation, id lookup) in :mod:`voxprint.backends.rows`. Scoring is
vectorised (no Python work per trial), so lists with millions of trials are scored in about a second.

Example:
    >>> import numpy as np
    >>> a = mean_embedding(np.array([[1.0, 0.0], [1.0, 0.2]]))
    >>> round(cosine_similarity(a, np.array([1.0, 0.1])), 6)
    1.0
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from voxprint.backends.rows import RowIndex, as_matrix, as_rows, unit_rows
from voxprint.data.trials import Trials
from voxprint.errors import DataError

__all__ = [
    "add_enrollment_models",
    "cosine_score_trials",
    "cosine_similarity",
    "mean_embedding",
]

# Rows gathered per einsum call: two float32 blocks of 16k x 256 are 32 MiB, small enough
# to stay cache- and memory-friendly for any realistic embedding size.
_CHUNK = 16384
# Scoring through a Gram matrix of the used rows costs about d multiply-adds per cell in
# BLAS, against gathering 2 d values per trial for row-wise dots; the Gram path is used when
# it has at most this many cells per trial (or is tiny anyway), up to 2**25 cells (128 MiB
# in float32).
_GRAM_CELLS_PER_TRIAL = 16
_GRAM_MIN_CELLS = 1 << 16
_GRAM_MAX_CELLS = 1 << 25


def cosine_score_trials(ids: Sequence[str], embeddings: np.ndarray, trials: Trials) -> np.ndarray:
    """Cosine similarity of every trial's enrollment and test embeddings.

    Rows are L2-normalised once and trial ids are mapped to rows with ``searchsorted`` (once
    per run of repeated ids). When the trials reuse few utterances (the usual case: every
    pair of a few thousand) the scores are gathered from one BLAS product of the used rows;
    otherwise row-wise dot products are taken in chunks with ``einsum``. Either way there is
    no Python work per trial.

    Args:
        ids: Unique id of each embedding row (utterances, or enrolled speaker models).
        embeddings: ``(len(ids), d)`` matrix. float32 input is scored in float32, float64 in float64.
        trials: The trials; every enrollment and test id must be in ``ids``.

    Returns:
        One score in ``[-1, 1]`` per trial, in trial order.

    Raises:
        DataError: If ids are duplicated or do not match the rows, embeddings are non-finite or zero,
            or trial ids are missing (the message lists up to 5 of them and their count).
    """
    mat = as_matrix(embeddings, "embeddings")
    id_array = np.asarray(ids, dtype=str)
    if mat.ndim != 2 or id_array.ndim != 1 or id_array.shape[0] != mat.shape[0]:
        raise DataError(
            f"need one id per embedding row: got {id_array.shape[0] if id_array.ndim else 1} ids "
            f"and embeddings of shape {mat.shape}"
        )
    if id_array.size == 0:
        raise DataError("no embeddings to score the trials with (empty id list)")
    enroll_rows, test_rows = RowIndex(id_array).trial_rows(trials)
    if enroll_rows.size == 0:
        return np.empty(0, dtype=mat.dtype)

    unit = unit_rows(mat, "embedding rows", id_array)
    used_enroll = _used_rows(enroll_rows, unit.shape[0])
    used_test = _used_rows(test_rows, unit.shape[0])
    cells = used_enroll.size * used_test.size
    if cells <= max(_GRAM_CELLS_PER_TRIAL * enroll_rows.size, _GRAM_MIN_CELLS) and cells <= _GRAM_MAX_CELLS:
        # Trial lists usually pair a few thousand utterances with each other many times, so
        # one BLAS product of the utterances actually used, then a gather, is far cheaper
        # than gathering two d-dimensional rows per trial.
        local = np.zeros(unit.shape[0], dtype=np.intp)
        local[used_enroll] = np.arange(used_enroll.size)
        gram = unit[used_enroll] @ unit[used_test].T
        e_local = local[enroll_rows]
        local[used_test] = np.arange(used_test.size)
        return gram[e_local, local[test_rows]]

    scores = np.empty(enroll_rows.size, dtype=unit.dtype)
    for lo in range(0, enroll_rows.size, _CHUNK):
        hi = lo + _CHUNK
        scores[lo:hi] = np.einsum("ij,ij->i", unit[enroll_rows[lo:hi]], unit[test_rows[lo:hi]])
    return scores


def _used_rows(rows: np.ndarray, n: int) -> np.ndarray:
    """Sorted distinct values of ``rows`` (all in ``[0, n)``) in O(len(rows) + n)."""
    used = np.zeros(n, dtype=bool)
    used[rows] = True
    return np.flatnonzero(used)


def mean_embedding(embeddings: ArrayLike) -> np.ndarray:
    """Speaker model from enrollment embeddings: L2-normalised mean of L2-normalised rows.

    Normalising each row first gives every enrollment utterance the same weight, whatever
    the raw embedding length.

    Args:
        embeddings: ``(n, d)`` enrollment embeddings (a single ``(d,)`` vector is treated as ``n = 1``).

    Returns:
        Unit-length ``(d,)`` vector.

    Raises:
        DataError: If there are no rows, a row is zero or non-finite, or the rows cancel out.
    """
    mat = as_matrix(embeddings, "enrollment embeddings")
    mat = as_rows(mat[None, :] if mat.ndim == 1 else mat, "enrollment embeddings")
    mean = unit_rows(mat, "enrollment embedding rows").mean(axis=0)
    norm = np.linalg.norm(mean)
    if norm == 0:
        raise DataError("enrollment embeddings cancel out (their mean direction is zero)")
    return mean / norm


def cosine_similarity(a: ArrayLike, b: ArrayLike) -> float:
    """Cosine similarity of two embedding vectors.

    Args:
        a, b: Vectors of the same length.

    Returns:
        ``a . b / (|a| |b|)`` in ``[-1, 1]``.

    Raises:
        DataError: If the shapes differ or a vector is zero or non-finite.
    """
    va = as_matrix(a, "embedding a").reshape(-1)
    vb = as_matrix(b, "embedding b").reshape(-1)
    if va.shape != vb.shape:
        raise DataError(f"cannot compare embeddings of different sizes ({va.size} and {vb.size})")
    na, nb = np.linalg.norm(va), np.linalg.norm(vb)
    if na == 0 or nb == 0:
        raise DataError("cannot compute the cosine similarity of a zero-length embedding")
    # Rounding can push |cos| a hair above 1; clip so callers can rely on the range.
    return float(np.clip(np.dot(va, vb) / (na * nb), -1.0, 1.0))


def add_enrollment_models(ids: Sequence[str], embeddings: np.ndarray,
                          enrollments: Mapping[str, Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """Append one row per enrolled model (the :func:`mean_embedding` of its utterances).

    Trial lists can then name models (``LABEL MODEL TEST``, with the models of an ``enroll.txt``
    read by :func:`voxprint.data.trials.read_enrollments`) as well as utterances.

    Args:
        ids: unique utterance id of each embedding row.
        embeddings: ``(len(ids), d)`` utterance embeddings.
        enrollments: model id -> its enrollment utterance ids.

    Returns:
        The ids followed by the model ids, and the embeddings followed by one row per model (same dtype).

    Raises:
        DataError: an enrollment utterance has no embedding, or a model id is also an utterance id.

    Example:
        >>> ids, rows = add_enrollment_models(["u1", "u2"], np.array([[1.0, 0.0], [0.0, 2.0]]), {"m": ["u1", "u2"]})
        >>> ids, np.round(rows[2], 4).tolist()
        (['u1', 'u2', 'm'], [0.7071, 0.7071])
    """
    index = RowIndex(ids)
    models = np.asarray(list(enrollments), dtype=str)
    clash = models[index.find(models)[1]]
    if clash.size:
        raise DataError(f"model ids must differ from utterance ids; {str(clash[0])!r} is both")
    utts = [utt for model_utts in enrollments.values() for utt in model_utts]
    rows = index.rows(utts, "enrollment utterance(s)")
    if not models.size:
        return list(ids), embeddings
    # One slice of ``rows`` per model, in the mapping's order.
    bounds = np.cumsum([len(model_utts) for model_utts in enrollments.values()])[:-1]
    means = np.stack([mean_embedding(embeddings[model_rows]) for model_rows in np.split(rows, bounds)])
    return list(ids) + models.tolist(), np.concatenate([embeddings, means.astype(embeddings.dtype)])

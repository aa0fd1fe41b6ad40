"""Rows of an embedding table: checked matrices, length-normalised rows and the id -> row lookup.

Scoring, score normalisation, PLDA, enrollment models and clustering all take embeddings as a matrix
with one row per id. What they do to those rows is defined once, here:

* :func:`as_matrix` / :func:`as_rows`: a numeric, finite array (never below float32), optionally
  checked to be a non-empty ``(n, d)`` matrix;
* :func:`unit_rows`: every row scaled to one length (1 for cosine scoring and clustering,
  ``sqrt(dim)`` for PLDA's length normalisation), refusing rows with no direction;
* :class:`RowIndex`: unique ids sorted once, then looked up by binary search; missing ids raise
  one :class:`~voxprint.errors.DataError` that lists them.

Example:
    >>> index = RowIndex(["b", "a", "c"])
    >>> index.rows(["a", "c", "c"]).tolist()
    [1, 2, 2]
    >>> unit_rows(np.array([[3.0, 4.0]]), "embedding rows").tolist()
    [[0.6, 0.8]]
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from voxprint.errors import DataError

if TYPE_CHECKING:
    from voxprint.data.trials import Trials

__all__ = ["RowIndex", "as_matrix", "as_rows", "unit_rows"]

# Ids named in an error message; the count says how many there are in all.
_SHOWN = 5


def _some(names: Sequence[str]) -> str:
    """The first few names, comma-separated, with ``...`` when there are more."""
    shown = ", ".join(str(name) for name in names[:_SHOWN])
    return shown + (", ..." if len(names) > _SHOWN else "")


def as_matrix(values: ArrayLike, what: str) -> np.ndarray:
    """``values`` as a finite real array, float32 kept as float32 and anything narrower widened to it.

    Args:
        values: Embeddings, scores or model parameters.
        what: What the values are, for error messages (``"embeddings"``).

    Returns:
        np.ndarray: The array (not copied when it already qualifies).

    Raises:
        DataError: If the values are not numbers or contain NaN or infinity.

    Example:
        >>> as_matrix(np.ones((1, 2), dtype=np.float16), "embeddings").dtype
        dtype('float32')
    """
    try:
        mat = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} are not a numeric array ({exc})") from None
    if mat.dtype.kind not in "biuf":
        raise DataError(f"{what} must be real numbers, got dtype {mat.dtype}")
    # Keep float32 input in float32 (half the memory traffic); never compute below it.
    mat = mat.astype(np.result_type(mat.dtype, np.float32), copy=False)
    if not np.isfinite(mat).all():
        raise DataError(f"{what} contain NaN or infinity")
    return mat


def as_rows(values: ArrayLike, what: str) -> np.ndarray:
    """:func:`as_matrix`, checked to be a non-empty ``(n, d)`` matrix.

    Raises:
        DataError: As :func:`as_matrix`, or when the shape is not ``(n, d)`` with ``n, d >= 1``.

    Example:
        >>> as_rows(np.zeros((0, 4)), "enrollment embeddings")
        Traceback (most recent call last):
        ...
        voxprint.errors.DataError: enrollment embeddings must be a non-empty (n, d) matrix, got shape (0, 4)
    """
    mat = as_matrix(values, what)
    if mat.ndim != 2 or mat.shape[0] == 0 or mat.shape[1] == 0:
        raise DataError(f"{what} must be a non-empty (n, d) matrix, got shape {mat.shape}")
    return mat


def unit_rows(matrix: np.ndarray, what: str, ids: Sequence[str] | None = None, length: float = 1.0,
              why: str = "have zero length and no direction to score") -> np.ndarray:
    """Every row of ``matrix`` scaled to ``length`` (L2), e.g. 1 for cosine, ``sqrt(dim)`` for PLDA.

    Args:
        matrix: ``(n, d)`` finite matrix (see :func:`as_matrix`); its dtype is kept.
        what: What the rows are, for the error message (``"embedding rows"``).
        ids: Id of each row, to name the zero rows in the error; None names them by row number.
        length: Length of every returned row.
        why: What is wrong with a zero row, for the error message.

    Returns:
        np.ndarray: ``(n, d)`` rows of length ``length``.

    Raises:
        DataError: If a row is zero (it has no direction); the message names up to five of them.

    Example:
        >>> unit_rows(np.array([[0.0, 2.0]]), "rows", length=3.0).tolist()
        [[0.0, 3.0]]
    """
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        first = zero[:_SHOWN + 1]  # one more than shown, so that _some adds "..."
        names = [str(ids[i]) for i in first] if ids is not None else [str(i) for i in first]
        label = "" if ids is not None else "rows "
        raise DataError(f"{zero.size} {what} {why} ({label}{_some(names)})")
    # Dividing by norm / length (rather than multiplying by length / norm) keeps unit rows exactly
    # what ``matrix / norms`` gives.
    return matrix / (norms / length)


class RowIndex:
    """Id -> row lookup over unique ids: sorted once, then binary search per lookup.

    Args:
        ids: One id per row of a table (utterances, enrolled models, cohort speakers).
        what: What a row is, for error messages (``"embedding"``: "3 trial id(s) have no embedding").

    Raises:
        DataError: If ``ids`` is not 1-D or an id occurs twice (the message names up to five of them).

    Example:
        >>> RowIndex(["a", "b"]).rows(["c"], "test id(s)")
        Traceback (most recent call last):
        ...
        voxprint.errors.DataError: 1 test id(s) have no embedding: c
    """

    def __init__(self, ids: ArrayLike, what: str = "embedding") -> None:
        id_array = np.asarray(ids, dtype=str)
        if id_array.ndim != 1:
            raise DataError(f"{what} ids must be a 1-D list, got shape {id_array.shape}")
        order = np.argsort(id_array, kind="stable")
        sorted_ids = id_array[order]
        dup = sorted_ids[1:] == sorted_ids[:-1]
        if dup.any():
            names = np.unique(sorted_ids[1:][dup])
            raise DataError(f"{names.size} {what} id(s) occur more than once ({_some(names.tolist())}); "
                            "each id must name one row")
        self.what = what
        self._order = order
        self._sorted = sorted_ids

    def __len__(self) -> int:
        return int(self._sorted.size)

    def find(self, wanted: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Row of each wanted id, and whether it is in the index at all.

        Args:
            wanted: 1-D ids to look up, in any order, repeats allowed.

        Returns:
            ``(rows, found)``: the ``(len(wanted),)`` row numbers (meaningless where ``found`` is
            False) and a ``(len(wanted),)`` bool array saying which ids are in the index.
        """
        keys = np.asarray(wanted, dtype=str).reshape(-1)
        if keys.size == 0 or self._sorted.size == 0:
            return np.zeros(keys.size, dtype=np.intp), np.zeros(keys.size, dtype=bool)
        # Trial lists are usually grouped by enrollment id, so each run of equal ids is looked up
        # once: string binary search is the most expensive step of scoring a trial list.
        n = keys.size
        heads = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        grouped = heads.size < n // 2
        if grouped:
            keys = keys[heads]
        pos = np.minimum(np.searchsorted(self._sorted, keys), self._sorted.size - 1)
        found = self._sorted[pos] == keys
        rows = self._order[pos]
        if grouped:
            runs = np.diff(np.append(heads, n))
            rows, found = np.repeat(rows, runs), np.repeat(found, runs)
        return rows, found

    def rows(self, wanted: ArrayLike, who: str = "id(s)", where: str | os.PathLike[str] | None = None,
             hint: str = "") -> np.ndarray:
        """Row of each wanted id; every id must be in the index.

        Args:
            wanted: 1-D ids to look up.
            who: What the wanted ids are, for the error message (``"enrollment utterance(s)"``).
            where: The file they come from, named in the error message when given.
            hint: What to do about missing ids, appended to the error message.

        Returns:
            np.ndarray: ``(len(wanted),)`` row numbers.

        Raises:
            DataError: If ids are missing: their number and the first five, sorted.
        """
        keys = np.asarray(wanted, dtype=str).reshape(-1)
        rows, found = self.find(keys)
        if not found.all():
            raise self._missing(keys[~found], who, where, hint)
        return rows

    def trial_rows(self, trials: Trials) -> tuple[np.ndarray, np.ndarray]:
        """Rows of every trial's enrollment and test ids, with one error listing the missing of both sides.

        Args:
            trials: the trial list.

        Returns:
            ``(enroll_rows, test_rows)``, one row number per trial each.

        Raises:
            DataError: If trial ids have no row (their number, the first five and the trial list's file).
        """
        enroll, enroll_found = self.find(trials.enroll)
        test, test_found = self.find(trials.test)
        if not (enroll_found.all() and test_found.all()):
            missing = np.concatenate((np.asarray(trials.enroll, dtype=str)[~enroll_found],
                                      np.asarray(trials.test, dtype=str)[~test_found]))
            raise self._missing(missing, "trial id(s)", trials.path,
                                f"extract {self.what}s for every utterance in the trial list")
        return enroll, test

    def _missing(self, missing: np.ndarray, who: str, where: str | os.PathLike[str] | None,
                 hint: str) -> DataError:
        names = np.unique(missing)
        place = f" of {where}" if where is not None else ""
        advice = f"; {hint}" if hint else ""
        return DataError(f"{names.size} {who}{place} have no {self.what}: {_some(names.tolist())}{advice}")

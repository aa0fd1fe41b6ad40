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

# Rows gathered per einsum call on the row-wise path: two float32 blocks of 4096 x 256 are 8 MiB,
# small enough to stay in the last-level cache while einsum reads them back.
_CHUNK = 4096
# Scoring through a Gram matrix of the used rows costs about d multiply-adds per cell in
# BLAS, against gathering 2 d values per trial for row-wise dots; the Gram path is used when
# it has at most this many cells per trial (or is tiny anyway), up to 2**25 cells (128 MiB
# in float32).
_GRAM_CELLS_PER_TRIAL = 16
_GRAM_MIN_CELLS = 1 << 16
_GRAM_MAX_CELLS = 1 << 25
# Trial ids hashed and checked per block: 8192 ids of 16 characters are 512 KiB, so a block
# stays in the L2 cache between hashing it and comparing it with the rows it found.
_ID_BLOCK = 8192


def cosine_score_trials(ids: Sequence[str], embeddings: np.ndarray, trials: Trials) -> np.ndarray:
    """Cosine similarity of every trial's enrollment and test embeddings.

    Rows are L2-normalised once. Trial ids grouped in runs (enrollment ids, usually) are looked up
    once per run by :class:`~voxprint.backends.rows.RowIndex`; ungrouped ids by hashing their
    characters in blocks of a few thousand (an exact lookup: every id found is compared in full
    with the id of its row). Lists with missing ids go through ``RowIndex``, which names them. When the trials
    reuse few utterances (the usual case: every pair of a few thousand) the scores are gathered
    from one BLAS product of the used rows; otherwise row-wise dot products are taken in chunks
    with ``einsum``. Either way there is no Python work per trial: over 10 M trials/s on one core
    when the trials pair a few thousand utterances, about 2 M/s when they are spread thinly over
    10^5 utterances (row gathers bound by memory; docs/benchmarks.md, "Trial scoring throughput").

    Args:
        ids: Unique id of each embedding row (utterances, or enrolled speaker models).
        embeddings: ``(len(ids), d)`` matrix. float32 input is scored in float32, float64 in float64.
        trials: The trials; every enrollment and test id must be in ``ids``.

    Returns:
        One score in ``[-1, 1]`` per trial, in trial order.

    Raises:
        DataError: If ids are duplicated or do not match the rows, embeddings are non-finite or zero,
            or trial ids are missing (the message lists up to 5 of them and their count).

    Example:
        >>> trials = Trials(None, np.array(["a", "a", "b"]), np.array(["b", "c", "c"]))
        >>> emb = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
        >>> np.round(cosine_score_trials(["a", "b", "c"], emb, trials), 4).tolist()
        [0.0, 0.7071, 0.7071]
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
    index = RowIndex(id_array)  # refuses duplicated ids
    found = _hashed_trial_rows(id_array, index, trials)
    enroll_rows, test_rows = found if found is not None else index.trial_rows(trials)
    if enroll_rows.size == 0:
        return np.empty(0, dtype=mat.dtype)

    unit = unit_rows(mat, "embedding rows", id_array)
    gram_cells = min(max(_GRAM_CELLS_PER_TRIAL * enroll_rows.size, _GRAM_MIN_CELLS), _GRAM_MAX_CELLS)
    if unit.shape[0] ** 2 <= gram_cells:
        # The Gram matrix of every row is small enough: no need to find the rows used and map
        # trials to them (two passes over the trials saved; the usual case of a trial list scored
        # with the embeddings of its own utterances).
        gram = unit @ unit.T
        kind = np.int32 if gram.size < 2**31 else np.intp
        flat = enroll_rows.astype(kind)
        flat *= kind(unit.shape[0])
        flat += test_rows
        return np.take(gram.reshape(-1), flat, mode="clip")
    used_enroll = _used_rows(enroll_rows, unit.shape[0])
    used_test = _used_rows(test_rows, unit.shape[0])
    cells = used_enroll.size * used_test.size
    if cells <= gram_cells:
        # Trial lists usually pair a few thousand utterances with each other many times, so
        # one BLAS product of the utterances actually used, then a gather, is far cheaper
        # than gathering two d-dimensional rows per trial. An int32 flat index (it fits below
        # 2**31 cells) halves the memory traffic of the gathers.
        # (Rows are valid by construction: take's "clip" mode skips the bounds check and the
        # buffered copy that its default mode makes, several times faster.)
        gram = unit[used_enroll] @ unit[used_test].T
        kind = np.int32 if cells < 2**31 else np.intp
        local = np.zeros(unit.shape[0], dtype=kind)
        local[used_enroll] = np.arange(used_enroll.size, dtype=kind)
        flat = np.take(local, enroll_rows, mode="clip")
        flat *= kind(used_test.size)
        local[used_test] = np.arange(used_test.size, dtype=kind)
        flat += np.take(local, test_rows, mode="clip")
        return np.take(gram.reshape(-1), flat, mode="clip")

    scores = np.empty(enroll_rows.size, dtype=unit.dtype)
    left = np.empty((_CHUNK, unit.shape[1]), dtype=unit.dtype)
    right = np.empty_like(left)
    for lo in range(0, enroll_rows.size, _CHUNK):
        hi = min(lo + _CHUNK, enroll_rows.size)
        # Gathering into the same two buffers keeps them cache-resident across chunks.
        a, b = left[:hi - lo], right[:hi - lo]
        np.take(unit, enroll_rows[lo:hi], axis=0, out=a, mode="clip")
        np.take(unit, test_rows[lo:hi], axis=0, out=b, mode="clip")
        np.einsum("ij,ij->i", a, b, out=scores[lo:hi])
    return scores


def _used_rows(rows: np.ndarray, n: int) -> np.ndarray:
    """Sorted distinct values of ``rows`` (all in ``[0, n)``) in O(len(rows) + n)."""
    used = np.zeros(n, dtype=bool)
    used[rows] = True
    return np.flatnonzero(used)


def _hashed_trial_rows(id_array: np.ndarray, index: RowIndex,
                       trials: Trials) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows of every trial's enrollment and test ids, or None.

    A side grouped in runs of one id (enrollment ids, usually) goes to :meth:`RowIndex.find`, which
    compares neighbours and looks up each run once; a side that is not goes to :class:`_HashedIds`.
    None means "use :meth:`RowIndex.trial_rows`": an id was not found (it names the missing ids) or
    the ids are not a unicode array.
    """
    sides = (np.asarray(trials.enroll), np.asarray(trials.test))
    if id_array.dtype.kind != "U" or any(side.dtype.kind != "U" for side in sides):
        return None
    tables: dict[int, _HashedIds] = {}
    found = []
    for side in sides:
        head = side[:_ID_BLOCK]
        if np.count_nonzero(head[1:] != head[:-1]) < head.size // 4:
            rows, present = index.find(side)
            rows = rows if present.all() else None
        else:
            width = side.dtype.itemsize // 4
            if width not in tables:
                tables[width] = _HashedIds(id_array, width)
            rows = tables[width].find(side)
        if rows is None:
            return None
        found.append(rows)
    return found[0], found[1]


def _code_points(strings: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, width)`` uint32 code points of a unicode array (zero-padded or cut to ``width``), and
    whether each string fits in ``width`` characters."""
    strings = np.ascontiguousarray(strings)
    have = strings.dtype.itemsize // 4
    codes = strings.view(np.uint32).reshape(strings.shape[0], have)
    fits = np.ones(strings.shape[0], dtype=bool)
    if have < width:
        codes = np.concatenate([codes, np.zeros((codes.shape[0], width - have), dtype=np.uint32)], axis=1)
    elif have > width:
        fits = ~codes[:, width:].any(axis=1)
        codes = np.ascontiguousarray(codes[:, :width])
    return codes, fits


def _words(codes: np.ndarray) -> np.ndarray:
    """Rows of code points as 8-byte words where the width allows (half the comparisons)."""
    return codes.view(np.uint64) if codes.shape[1] % 2 == 0 else codes


class _HashedIds:
    """Exact id -> row lookup for unicode arrays of one width, by hashing blocks of ids with BLAS.

    Each id's code points are multiplied with two fixed vectors of integer weights, small enough
    that every sum is an integer below 2**53 and so exact in float64 (BLAS may add in any order and
    still give the same id the same hash wherever it sits in a block). The two sums are mixed into
    one 64-bit key (multiply-xorshift: dot products of similar ids are similar, mixed keys are not)
    whose top bits pick a slot of a linear-probing table 8 to 16 times the number of ids. Every
    id found is then compared in full with the id of its row, so a hash collision can only send
    the lookup to :class:`RowIndex`, never to a wrong row.
    """

    def __init__(self, ids: np.ndarray, width: int) -> None:
        codes, fits = _code_points(ids, width)
        self._width = width
        self._words = _words(codes)
        # Code points are below 2**21, so width * 2**21 * weight < 2**53.
        self._weights = np.random.default_rng(0).integers(1, 2**32 // width, size=(width, 2)).astype(np.float64)
        bits = max(8, int(ids.size).bit_length() + 3)
        self._shift = np.uint64(64 - bits)
        self._mask = (1 << bits) - 1
        rows = np.flatnonzero(fits)  # longer ids cannot equal a key of this width
        keys = self._mix(codes[rows] @ self._weights)
        self._rows = np.full(1 << bits, -1, dtype=np.int32)  # -1: an empty slot
        self._keys = np.zeros(1 << bits, dtype=np.uint64)
        pending, slots = np.arange(rows.size), (keys >> self._shift).astype(np.intp)
        while pending.size:
            # One id per free slot per round; the others move on to the next slot, which keeps
            # every slot between an id's first choice and its place occupied (linear probing).
            free = pending[self._rows[slots[pending]] < 0]
            _, first = np.unique(slots[free], return_index=True)
            placed = free[first]
            self._rows[slots[placed]] = rows[placed]
            self._keys[slots[placed]] = keys[placed]
            pending = np.setdiff1d(pending, placed, assume_unique=True)
            slots[pending] = (slots[pending] + 1) & self._mask

    @staticmethod
    def _mix(sums: np.ndarray) -> np.ndarray:
        """One 64-bit key from the two exact dot products of each id (a ``(n, 2)`` float64 array)."""
        words = sums.astype(np.uint64)
        key = words[:, 0] * np.uint64(0xFF51AFD7ED558CCD)
        key ^= words[:, 1]
        key ^= key >> np.uint64(32)
        key *= np.uint64(0xC4CEB9FE1A85EC53)
        key ^= key >> np.uint64(29)
        return key

    def find(self, ids: np.ndarray) -> np.ndarray | None:
        """The row (int32) of every id in ``ids``, or None if some id is not in the table."""
        codes, _ = _code_points(ids, self._width)
        words = _words(codes)
        rows = np.empty(codes.shape[0], dtype=np.int32)
        size = min(_ID_BLOCK, codes.shape[0])
        sums = np.empty((size, 2), dtype=np.float64)
        found = np.empty((size, words.shape[1]), dtype=words.dtype)
        for lo in range(0, codes.shape[0], _ID_BLOCK):
            hi = min(lo + _ID_BLOCK, codes.shape[0])
            n = hi - lo
            np.matmul(codes[lo:hi], self._weights, out=sums[:n])  # code points cast to float64 on the way
            keys = self._mix(sums[:n])
            slots = (keys >> self._shift).astype(np.intp)
            block_rows = rows[lo:hi]
            np.take(self._rows, slots, out=block_rows, mode="clip")
            moved = np.flatnonzero(self._keys[slots] != keys)
            while moved.size:  # ids placed past their first slot (a few percent)
                if (block_rows[moved] < 0).any():
                    return None  # an empty slot: not an id
                slots[moved] = (slots[moved] + 1) & self._mask
                block_rows[moved] = self._rows[slots[moved]]
                moved = moved[self._keys[slots[moved]] != keys[moved]]
            np.take(self._words, block_rows, axis=0, out=found[:n], mode="clip")
            if not np.array_equal(found[:n], words[lo:hi]):
                return None
        return rows


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

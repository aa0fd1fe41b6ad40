"""Trial lists and cosine scoring.

A trial list has one trial per line, either ``LABEL ENROLL TEST`` (VoxCeleb style; label
``1``/``target`` for same speaker, ``0``/``nontarget`` otherwise) or unlabeled
``ENROLL TEST``; all lines of a file use the same form and blank lines are ignored.
Score files written by :func:`write_scores` have lines ``ENROLL TEST SCORE [LABEL]``.

Reading and scoring are vectorised (no Python work per trial), so lists with millions of
trials are read and scored in about a second.

Example
-------
>>> import numpy as np
>>> a = mean_embedding(np.array([[1.0, 0.0], [1.0, 0.2]]))
>>> round(cosine_similarity(a, np.array([1.0, 0.1])), 6)
1.0
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from voxprint.errors import DataError
from voxprint.fileio import atomic_write_text

__all__ = [
    "Trials",
    "cosine_score_trials",
    "cosine_similarity",
    "mean_embedding",
    "read_trials",
    "write_scores",
]

# Whitespace for tokenising: what str.split() treats as whitespace within ASCII, i.e. the
# six usual ASCII spaces plus the information separators 0x1c-0x1f.
_SPACE_BYTES = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_IS_SPACE = np.zeros(256, dtype=bool)
_IS_SPACE[list(_SPACE_BYTES)] = True
# bytes.split() ignores 0x1c-0x1f, so they are mapped to spaces first.
_SEPARATORS_TO_SPACE = bytes.maketrans(b"\x1c\x1d\x1e\x1f", b"    ")
_NEWLINE = ord("\n")
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


@dataclass(frozen=True, eq=False)
class Trials:
    """A trial list.

    Arguments
    ---------
    labels : np.ndarray or None
        int8 array, 1 for target and 0 for non-target trials; None for an unlabeled list.
    enroll : np.ndarray
        Enrollment ids (unicode strings), one per trial.
    test : np.ndarray
        Test ids (unicode strings), one per trial.
    path : Path or None
        The file the list was read from, if any (used in error messages).
    """

    labels: np.ndarray | None
    enroll: np.ndarray
    test: np.ndarray
    path: Path | None = None

    def __post_init__(self) -> None:
        # Trials built by hand (not by read_trials) get the same shape guarantees.
        enroll, test = np.asarray(self.enroll), np.asarray(self.test)
        if enroll.ndim != 1 or enroll.shape != test.shape:
            raise DataError(
                f"enroll and test ids must be 1-D and of equal length, got shapes {enroll.shape} "
                f"and {test.shape}"
            )
        if self.labels is not None and np.shape(self.labels) != enroll.shape:
            raise DataError(f"{np.size(self.labels)} labels for {enroll.size} trials")
        object.__setattr__(self, "enroll", enroll)
        object.__setattr__(self, "test", test)
        if self.path is not None:
            object.__setattr__(self, "path", Path(self.path))

    def __len__(self) -> int:
        return int(self.enroll.shape[0])

    @property
    def n_targets(self) -> int | None:
        """Number of target trials, or None for an unlabeled list."""
        return None if self.labels is None else int(np.count_nonzero(self.labels))


def read_trials(path: str | os.PathLike[str]) -> Trials:
    """Read a ``LABEL ENROLL TEST`` or ``ENROLL TEST`` trial list.

    The whole file is tokenised at once and the fields of every line are counted with NumPy,
    so no Python object is created per line (115k trials read in a few tens of ms).

    Arguments
    ---------
    path : str or os.PathLike
        The trial list (UTF-8 text). Labels may be ``0``/``1`` or ``nontarget``/``target``.

    Returns
    -------
    Trials
        ``labels`` is None when the lines have two fields.

    Raises
    ------
    DataError
        If the file is missing, empty, not UTF-8, mixes 2- and 3-field lines, has another
        number of fields, or has an unknown label; the message gives the line number.
    """
    src = Path(path)
    try:
        data = src.read_bytes()
    except FileNotFoundError:
        raise DataError(f"trial list not found: {src}") from None
    except OSError as exc:
        raise DataError(f"cannot read trial list {src}: {exc}") from None

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{src}, line {line}: not valid UTF-8 text ({exc.reason})") from None

    # Field counts per line, without a Python object per line: mark token starts in the
    # raw bytes and give each token the number of newlines before it as its line index.
    buf = np.frombuffer(data, dtype=np.uint8)
    is_space = _IS_SPACE[buf]
    token_start = ~is_space
    token_start[1:] &= is_space[:-1]
    starts = np.flatnonzero(token_start)
    if starts.size == 0:
        raise DataError(f"{src}: trial list is empty; expected lines 'LABEL ENROLL TEST' or 'ENROLL TEST'")
    token_line = np.searchsorted(np.flatnonzero(buf == _NEWLINE), starts)
    fields = np.bincount(token_line)
    used = np.flatnonzero(fields)
    n_fields = int(fields[used[0]])
    if n_fields not in (2, 3):
        raise DataError(
            f"{src}, line {used[0] + 1}: {n_fields} fields; expected 'LABEL ENROLL TEST' "
            "or 'ENROLL TEST'"
        )
    odd = used[fields[used] != n_fields]
    if odd.size:
        line = int(odd[0])
        raise DataError(
            f"{src}, line {line + 1}: {int(fields[line])} fields, but line {used[0] + 1} has "
            f"{n_fields}; every line must be 'LABEL ENROLL TEST' or every line 'ENROLL TEST'"
        )

    if text.isascii():
        # For ASCII text str.split() splits on exactly the bytes in _IS_SPACE.
        tokens = text.split()
    else:
        # str.split() would also split on Unicode spaces (e.g. U+00A0) that the byte mask
        # does not see, so split the bytes the same way as the mask and decode each token.
        tokens = [t.decode("utf-8") for t in data.translate(_SEPARATORS_TO_SPACE).split()]
    enroll = np.array(tokens[n_fields - 2 :: n_fields], dtype=str)
    test = np.array(tokens[n_fields - 1 :: n_fields], dtype=str)

    labels = None
    if n_fields == 3:
        # Labels are nearly always the single bytes "0"/"1": decide those straight from the
        # raw bytes; only other spellings ("target", "Nontarget", junk) look at the tokens.
        label_starts = starts[0::3]
        single = is_space[np.minimum(label_starts + 1, buf.size - 1)] | (label_starts + 1 == buf.size)
        first = buf[label_starts]
        target = single & (first == ord("1"))
        nontarget = single & (first == ord("0"))
        other = np.flatnonzero(~(target | nontarget))
        if other.size:
            words = np.array([tokens[3 * i] for i in other], dtype=str)
            folded = np.char.lower(words)
            target[other] = folded == "target"
            nontarget[other] = folded == "nontarget"
            bad = np.flatnonzero(~(target[other] | nontarget[other]))
            if bad.size:
                line = int(used[other[bad[0]]])
                raise DataError(
                    f"{src}, line {line + 1}: label {str(words[bad[0]])!r} is not 0/1 or "
                    f"target/nontarget ({bad.size} bad label(s) in total)"
                )
        labels = target.astype(np.int8)
    del tokens
    return Trials(labels=labels, enroll=enroll, test=test, path=src)


def _normalise_rows(matrix: np.ndarray, ids: Sequence[str] | None, what: str) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        names = [str(ids[i]) for i in zero[:5]] if ids is not None else [str(i) for i in zero[:5]]
        raise DataError(
            f"{zero.size} {what} have zero length and no direction to score "
            f"({', '.join(names)}{', ...' if zero.size > 5 else ''})"
        )
    return matrix / norms


def _as_matrix(embeddings: ArrayLike, what: str) -> np.ndarray:
    try:
        mat = np.asarray(embeddings)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} are not a numeric array ({exc})") from None
    if mat.dtype.kind not in "biuf":
        raise DataError(f"{what} must be real numbers, got dtype {mat.dtype}")
    # Keep float32 input in float32 (half the memory traffic); never compute below it.
    mat = mat.astype(np.result_type(mat.dtype, np.float32), copy=False)
    if not np.isfinite(mat).all():
        raise DataError(f"{what} contain NaN or infinity")
    return mat


def sort_unique_ids(id_array: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(order, id_array[order])`` for binary search, or DataError when an id occurs twice."""
    order = np.argsort(id_array, kind="stable")
    sorted_ids = id_array[order]
    dup = sorted_ids[1:] == sorted_ids[:-1]
    if dup.any():
        names = np.unique(sorted_ids[1:][dup])
        raise DataError(
            f"{names.size} {what} id(s) occur more than once ({', '.join(names[:5].tolist())}"
            f"{', ...' if names.size > 5 else ''}); each id must name one row"
        )
    return order, sorted_ids


def cosine_score_trials(ids: Sequence[str], embeddings: np.ndarray, trials: Trials) -> np.ndarray:
    """Cosine similarity of every trial's enrollment and test embeddings.

    Rows are L2-normalised once and trial ids are mapped to rows with ``searchsorted`` (once
    per run of repeated ids). When the trials reuse few utterances (the usual case: every
    pair of a few thousand) the scores are gathered from one BLAS product of the used rows;
    otherwise row-wise dot products are taken in chunks with ``einsum``. Either way there is
    no Python work per trial.

    Arguments
    ---------
    ids : Sequence[str]
        Unique id of each embedding row (utterances, or enrolled speaker models).
    embeddings : np.ndarray
        ``(len(ids), d)`` matrix. float32 input is scored in float32, float64 in float64.
    trials : Trials
        The trials; every enrollment and test id must be in ``ids``.

    Returns
    -------
    np.ndarray
        One score in ``[-1, 1]`` per trial, in trial order.

    Raises
    ------
    DataError
        If ids are duplicated or do not match the rows, embeddings are non-finite or zero,
        or trial ids are missing (the message lists up to 5 of them and their count).
    """
    mat = _as_matrix(embeddings, "embeddings")
    id_array = np.asarray(ids, dtype=str)
    if mat.ndim != 2 or id_array.ndim != 1 or id_array.shape[0] != mat.shape[0]:
        raise DataError(
            f"need one id per embedding row: got {id_array.shape[0] if id_array.ndim else 1} ids "
            f"and embeddings of shape {mat.shape}"
        )
    if id_array.size == 0:
        raise DataError("no embeddings to score the trials with (empty id list)")
    order, sorted_ids = sort_unique_ids(id_array, "embedding")

    def rows_of(wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Trial lists are usually grouped by enrollment id, so look up each run of equal
        # ids once; string binary search is the most expensive step of scoring.
        heads = np.flatnonzero(np.concatenate(([True], wanted[1:] != wanted[:-1])))
        grouped = heads.size < wanted.size // 2
        keys = wanted[heads] if grouped else wanted
        pos = np.minimum(np.searchsorted(sorted_ids, keys), sorted_ids.size - 1)
        found = sorted_ids[pos] == keys
        rows = order[pos]
        if grouped:
            rows = np.repeat(rows, np.diff(np.append(heads, wanted.size)))
        return rows, np.unique(keys[~found])

    enroll_rows, missing_enroll = rows_of(np.asarray(trials.enroll, dtype=str))
    test_rows, missing_test = rows_of(np.asarray(trials.test, dtype=str))
    missing = np.unique(np.concatenate((missing_enroll, missing_test)))
    if missing.size:
        where = f" of {trials.path}" if trials.path is not None else ""
        raise DataError(
            f"{missing.size} trial id(s){where} have no embedding: "
            f"{', '.join(missing[:5].tolist())}{', ...' if missing.size > 5 else ''}; "
            "extract embeddings for every utterance in the trial list"
        )
    if enroll_rows.size == 0:
        return np.empty(0, dtype=mat.dtype)

    unit = _normalise_rows(mat, id_array, "embedding rows")
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

    Arguments
    ---------
    embeddings : array_like
        ``(n, d)`` enrollment embeddings (a single ``(d,)`` vector is treated as ``n = 1``).

    Returns
    -------
    np.ndarray
        Unit-length ``(d,)`` vector.

    Raises
    ------
    DataError
        If there are no rows, a row is zero or non-finite, or the rows cancel out.
    """
    mat = _as_matrix(embeddings, "enrollment embeddings")
    if mat.ndim == 1:
        mat = mat[None, :]
    if mat.ndim != 2 or mat.shape[0] == 0 or mat.shape[1] == 0:
        raise DataError(f"enrollment embeddings must be a non-empty (n, d) matrix, got shape {mat.shape}")
    mean = _normalise_rows(mat, None, "enrollment embedding rows").mean(axis=0)
    norm = np.linalg.norm(mean)
    if norm == 0:
        raise DataError("enrollment embeddings cancel out (their mean direction is zero)")
    return mean / norm


def cosine_similarity(a: ArrayLike, b: ArrayLike) -> float:
    """Cosine similarity of two embedding vectors.

    Arguments
    ---------
    a, b : array_like
        Vectors of the same length.

    Returns
    -------
    float
        ``a . b / (|a| |b|)`` in ``[-1, 1]``.

    Raises
    ------
    DataError
        If the shapes differ or a vector is zero or non-finite.
    """
    va = _as_matrix(a, "embedding a").reshape(-1)
    vb = _as_matrix(b, "embedding b").reshape(-1)
    if va.shape != vb.shape:
        raise DataError(f"cannot compare embeddings of different sizes ({va.size} and {vb.size})")
    na, nb = np.linalg.norm(va), np.linalg.norm(vb)
    if na == 0 or nb == 0:
        raise DataError("cannot compute the cosine similarity of a zero-length embedding")
    # Rounding can push |cos| a hair above 1; clip so callers can rely on the range.
    return float(np.clip(np.dot(va, vb) / (na * nb), -1.0, 1.0))


def write_scores(path: str | os.PathLike[str], trials: Trials, scores: ArrayLike) -> Path:
    """Write ``ENROLL TEST SCORE [LABEL]`` lines, atomically.

    The lines go to a temporary file in the same folder, which then replaces ``path``, so a
    reader never sees a partial score file. Scores are written with 6 decimals; the label
    column (0/1) is present only when the trials are labelled.

    Arguments
    ---------
    path : str or os.PathLike
        Output file; parent folders are created.
    trials : Trials
        The scored trials.
    scores : array_like
        One finite score per trial.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    DataError
        If the number of scores differs from the number of trials or a score is non-finite.
    """
    out = Path(path)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size != len(trials):
        raise DataError(f"{out}: {s.size} scores for {len(trials)} trials; need one score per trial")
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise DataError(
            f"{out}: {bad.size} scores are NaN or infinite (first for trial {int(bad[0]) + 1}: "
            f"{trials.enroll[bad[0]]} {trials.test[bad[0]]})"
        )
    columns = [trials.enroll.tolist(), trials.test.tolist(), s.tolist()]
    if trials.labels is None:
        text = "".join(f"{e} {t} {v:.6f}\n" for e, t, v in zip(*columns))
    else:
        text = "".join(
            f"{e} {t} {v:.6f} {lab}\n" for e, t, v, lab in zip(*columns, trials.labels.tolist())
        )
    return atomic_write_text(out, text)


def add_enrollment_models(ids: Sequence[str], embeddings: np.ndarray,
                          enrollments: dict[str, list[str]]) -> tuple[list[str], np.ndarray]:
    """Append one row per enrolled model (the :func:`mean_embedding` of its utterances) so trial lists
    can name models (``LABEL MODEL TEST``) as well as utterances.

    Raises:
        DataError: an enrollment utterance has no embedding, or a model id is also an utterance id.
    """
    index = {utt: row for row, utt in enumerate(ids)}
    clash = [model for model in enrollments if model in index]
    if clash:
        raise DataError(f"model ids must differ from utterance ids; {clash[0]!r} is both")
    missing = [u for utts in enrollments.values() for u in utts if u not in index]
    if missing:
        raise DataError(f"{len(missing)} enrollment utterances have no embedding (first: {missing[0]!r})")
    models = [mean_embedding(embeddings[[index[u] for u in utts]]) for utts in enrollments.values()]
    if not models:
        return list(ids), embeddings
    return list(ids) + list(enrollments), np.concatenate([embeddings, np.stack(models).astype(embeddings.dtype)])

"""Score fusion: combine several systems' scores of the same trials into one log-likelihood ratio.

Conventions:
    * :class:`LinearFusion` maps the scores ``s_1 ... s_k`` that ``k`` systems gave one trial to
      the natural-log LLR ``sum_i w_i s_i + b`` (linear logistic-regression fusion, as in the
      FoCal and BOSARIS toolkits). It is trained with the objective of
      :class:`voxprint.backends.calibration.LinearCalibration` (prior-weighted logistic regression,
      default ``p_target = 0.01``), of which it is the multi-system form: a one-system fusion is a
      linear calibration. Train it on trials of training speakers, never on the trials it will be
      evaluated on.
    * A weight is in LLR units per unit of that system's score, so scaling a system's scores by
      ``c`` divides its weight by ``c``; compare systems by ``w_i * std(s_i)``, not by ``w_i``.
      An uninformative system gets a weight near 0; one that only repeats another may get any
      sign. The offset absorbs the systems' shifts.
    * Score files (:func:`read_scores`) are the output of ``voxprint score --out`` and ``voxprint
      eval --scores``: ``ENROLL TEST SCORE [LABEL]`` lines. :func:`align_scores` lines up several
      of them on their ``(enroll, test)`` pairs, whatever their order.
    * A fusion is stored as JSON (:meth:`LinearFusion.save`), with the systems' names in order.

Example:
    >>> import numpy as np
    >>> fusion = LinearFusion(weights=(2.0, 0.5), offset=-1.0, systems=("ecapa", "ivector"))
    >>> fusion.transform(np.array([[1.0, 2.0], [0.0, 0.0]])).tolist()
    [2.0, -1.0]
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from voxprint.backends.calibration import (
    DEFAULT_P_TARGET,
    _check_prior,
    _fit_linear_llr,
    _scores_and_labels,
    read_json,
    real_scores,
)
from voxprint.data.trials import Trials
from voxprint.errors import DataError
from voxprint.fileio import atomic_write_text

__all__ = ["AlignedScores", "LinearFusion", "align_scores", "read_scores"]

_FORMAT = "voxprint-linear-fusion"
_VERSION = 1
_LABELS = {"1": 1, "0": 0, "target": 1, "nontarget": 0}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class LinearFusion:
    """Linear fusion of ``k`` systems' scores into a natural-log LLR: ``llr = sum_i w_i s_i + b``.

    Args:
        weights: One finite weight per system, in the order of ``systems``.
        offset: The intercept ``b``.
        systems: Names of the systems (distinct, non-empty); column ``i`` of a score matrix is ``systems[i]``.
        p_target: Effective target prior the fusion was trained at (recorded; it does not change the map).

    Raises:
        DataError: If a value is non-finite, the counts differ, a name is empty or repeated, or ``p_target``
            is not in (0, 1).

    Example:
        >>> fusion = LinearFusion(weights=(1.5,), offset=0.5, systems=("ecapa",))
        >>> fusion.transform([[2.0]]).tolist()
        [3.5]
    """

    weights: tuple[float, ...]
    offset: float
    systems: tuple[str, ...]
    p_target: float = DEFAULT_P_TARGET

    def __post_init__(self) -> None:
        weights = tuple(np.asarray(self.weights, dtype=object).reshape(-1).tolist())
        if not weights:
            raise DataError("a fusion needs at least one system")
        for value in (*weights, self.offset):
            if not _is_number(value) or not math.isfinite(value):
                raise DataError(f"fusion weights and offset must be finite numbers, got {value!r}")
        systems = (self.systems,) if isinstance(self.systems, str) else tuple(self.systems)
        if len(systems) != len(weights):
            raise DataError(f"{len(weights)} fusion weights for {len(systems)} system names")
        for name in systems:
            if not isinstance(name, str) or not name.strip():
                raise DataError(f"fusion system names must be non-empty strings, got {name!r}")
        if len(set(systems)) != len(systems):
            raise DataError(f"fusion system names must differ, got {list(systems)}")
        object.__setattr__(self, "weights", tuple(float(w) for w in weights))
        object.__setattr__(self, "offset", float(self.offset))
        object.__setattr__(self, "systems", systems)
        object.__setattr__(self, "p_target", _check_prior(self.p_target))

    @property
    def n_systems(self) -> int:
        """Number of fused systems."""
        return len(self.weights)

    @classmethod
    def fit(
        cls,
        score_matrix: ArrayLike,
        labels: ArrayLike,
        p_target: float = DEFAULT_P_TARGET,
        systems: Sequence[str] | None = None,
    ) -> LinearFusion:
        """Train by prior-weighted logistic regression (the objective of ``LinearCalibration.fit``).

        Minimises ``p E_tgt[log(1 + e^-(l + logit p))] + (1 - p) E_non[log(1 + e^(l + logit p))]``
        over ``l = w . s + b``, without regularisation.

        Args:
            score_matrix: ``(n, k)`` scores of training trials, one column per system (not the evaluation trials).
            labels: ``(n,)`` 1 for target, 0 for non-target.
            p_target: Effective prior of the objective, in (0, 1); see
                :mod:`voxprint.backends.calibration`.
            systems: ``k`` system names (default ``system1``, ``system2``, ...).

        Returns:
            The trained fusion.

        Raises:
            DataError: On a matrix that is not ``(n, k)``, non-finite scores, bad labels, a class absent, a system
                whose scores are all equal, a bad prior, or no positive weight (the labels are likely
                inverted).

        Example:
            >>> import numpy as np
            >>> rng = np.random.default_rng(0)
            >>> labels = np.repeat([1, 0], 500)
            >>> informative = rng.normal(2.0 * labels, 1.0)
            >>> fusion = LinearFusion.fit(np.c_[informative, rng.normal(size=1000)], labels, systems=["a", "b"])
            >>> fusion.weights[0] > 1.0 > abs(fusion.weights[1]) * 5
            True
        """
        p = _check_prior(p_target)
        matrix = np.asarray(score_matrix)
        if matrix.ndim != 2 or matrix.shape[1] < 1:
            raise DataError(f"fusion: need an (n, k) score matrix, one column per system, got shape {matrix.shape}")
        names = tuple(systems) if systems is not None else tuple(f"system{i + 1}" for i in range(matrix.shape[1]))
        if len(names) != matrix.shape[1]:
            raise DataError(f"fusion: {len(names)} system names for {matrix.shape[1]} score columns")
        columns = []
        is_target = np.zeros(0, dtype=bool)
        for i, name in enumerate(names):
            column, is_target = _scores_and_labels(matrix[:, i], labels, f"fusion system {name!r}")
            if not float(column.std()) > 0:
                raise DataError(f"fusion: the scores of system {name!r} are all equal; it carries no information")
            columns.append(column)
        weights, offset = _fit_linear_llr(np.column_stack(columns), is_target, p)
        if not (weights > 0).any():
            raise DataError(
                "fusion: no system gets a positive weight, i.e. the training trials do not score targets higher "
                "than non-targets; check the labels and that each column is one system's scores"
            )
        return cls(weights=tuple(weights.tolist()), offset=offset, systems=names, p_target=p)

    def transform(self, score_matrix: ArrayLike) -> np.ndarray:
        """Fused LLRs ``score_matrix @ weights + offset``.

        Args:
            score_matrix: ``(n, k)`` scores, column ``i`` from system ``systems[i]``.

        Returns:
            ``(n,)`` float64 LLRs.

        Raises:
            DataError: If the matrix is not ``(n, k)`` or holds a non-number or a non-finite score.

        Example:
            >>> LinearFusion(weights=(1.0, 2.0), offset=0.0, systems=("a", "b")).transform([[1.0, 1.0]]).tolist()
            [3.0]
        """
        matrix = np.asarray(score_matrix)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_systems:
            raise DataError(
                f"fusion of {self.n_systems} systems needs an (n, {self.n_systems}) score matrix, got shape "
                f"{matrix.shape}"
            )
        return real_scores(matrix, "fusion") @ np.asarray(self.weights) + self.offset

    __call__ = transform

    def to_dict(self) -> dict:
        """Plain JSON-able description (floats round-trip exactly through :func:`json.dumps`).

        Returns:
            ``{"format", "version", "systems": [{"name", "weight"}, ...], "offset", "p_target"}``.

        Example:
            >>> LinearFusion(weights=(1.0,), offset=0.0, systems=("a",)).to_dict()["systems"]
            [{'name': 'a', 'weight': 1.0}]
        """
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "systems": [{"name": n, "weight": w} for n, w in zip(self.systems, self.weights)],
            "offset": self.offset,
            "p_target": self.p_target,
        }

    @classmethod
    def from_dict(cls, doc: dict) -> LinearFusion:
        """Rebuild a fusion from :meth:`to_dict`'s output.

        Args:
            doc: The description.

        Returns:
            The fusion.

        Raises:
            DataError: If ``doc`` is not a voxprint linear fusion, is of a newer format version, or is incomplete
                or invalid.

        Example:
            >>> fusion = LinearFusion(weights=(0.5, 2.0), offset=-1.0, systems=("a", "b"))
            >>> LinearFusion.from_dict(fusion.to_dict()) == fusion
            True
        """
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise DataError(f"not a voxprint linear fusion (no format {_FORMAT!r})")
        version = doc.get("version")
        if not isinstance(version, int) or version > _VERSION:
            raise DataError(f"fusion format version {version!r} is not one this voxprint reads ({_VERSION}); "
                            "upgrade voxprint")
        try:
            systems = doc["systems"]
            if not isinstance(systems, list) or not all(isinstance(s, dict) for s in systems):
                raise DataError("fusion 'systems' must be a list of {'name', 'weight'} objects")
            return cls(weights=tuple(s["weight"] for s in systems), offset=doc["offset"],
                       systems=tuple(s["name"] for s in systems), p_target=doc["p_target"])
        except KeyError as exc:
            raise DataError(f"fusion description lacks {exc.args[0]!r}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fusion as JSON, atomically.

        Args:
            path: Output file; parent folders are created.

        Returns:
            The written file.
        """
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearFusion:
        """Read a fusion written by :meth:`save`.

        Args:
            path: The JSON file.

        Returns:
            The fusion.

        Raises:
            DataError: If the file is missing, not JSON, or not a valid voxprint linear fusion.
        """
        src = Path(path)
        doc = read_json(src, "fusion file")
        try:
            return cls.from_dict(doc)
        except DataError as exc:
            raise DataError(f"{src}: {exc}") from None


def read_scores(path: str | os.PathLike[str]) -> tuple[Trials, np.ndarray]:
    """Read a score file: ``ENROLL TEST SCORE`` or ``ENROLL TEST SCORE LABEL`` lines.

    The files of ``voxprint score --out`` and ``voxprint eval --scores``. All lines of a file have
    the same form; blank lines are ignored; labels are ``0``/``1`` or ``nontarget``/``target``.

    Args:
        path: The score file (UTF-8).

    Returns:
        ``(trials, scores)``: the trials (labels None without a label column, ``path`` set) and their
        float64 scores.

    Raises:
        DataError: If the file is missing, unreadable or empty, mixes 3- and 4-field lines, has a score that is
            not a finite number, or an unknown label; the message gives the line number.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "scores.txt"
        >>> _ = path.write_text("ann u1 0.75 1\\nann u2 -0.25 0\\n")
        >>> trials, scores = read_scores(path)
        >>> trials.enroll.tolist(), scores.tolist(), trials.labels.tolist()
        (['ann', 'ann'], [0.75, -0.25], [1, 0])
    """
    src = Path(path)
    try:
        text = src.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"score file not found: {src}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{src}: not valid UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise DataError(f"cannot read score file {src}: {exc.strerror or exc}") from None
    rows = [(number, fields) for number, fields in enumerate((line.split() for line in text.splitlines()), 1)
            if fields]
    if not rows:
        raise DataError(f"{src}: score file is empty; expected lines 'ENROLL TEST SCORE [LABEL]'")
    first, n_fields = rows[0][0], len(rows[0][1])
    if n_fields not in (3, 4):
        raise DataError(f"{src}, line {first}: {n_fields} fields; expected 'ENROLL TEST SCORE [LABEL]'")
    for number, fields in rows:
        if len(fields) != n_fields:
            raise DataError(f"{src}, line {number}: {len(fields)} fields, but line {first} has {n_fields}; "
                            "every line must be 'ENROLL TEST SCORE' or every line 'ENROLL TEST SCORE LABEL'")
    scores = np.empty(len(rows), dtype=np.float64)
    for i, (number, fields) in enumerate(rows):
        try:
            scores[i] = float(fields[2])
        except ValueError:
            raise DataError(f"{src}, line {number}: score {fields[2]!r} is not a number") from None
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise DataError(f"{src}, line {rows[bad[0]][0]}: score {rows[bad[0]][1][2]!r} is not finite "
                        f"({bad.size} non-finite score(s) in total)")
    labels = None
    if n_fields == 4:
        labels = np.empty(len(rows), dtype=np.int8)
        for i, (number, fields) in enumerate(rows):
            label = _LABELS.get(fields[3].lower())
            if label is None:
                raise DataError(f"{src}, line {number}: label {fields[3]!r} is not 0/1 or target/nontarget")
            labels[i] = label
    enroll = np.array([fields[0] for _, fields in rows], dtype=str)
    test = np.array([fields[1] for _, fields in rows], dtype=str)
    return Trials(labels=labels, enroll=enroll, test=test, path=src), scores


@dataclass(frozen=True, eq=False)
class AlignedScores:
    """Several systems' scores of the same trials, one column per system (see :func:`align_scores`).

    Args:
        trials: The trials, in the first list's order; labels where any list had them.
        matrix: ``(n, k)`` float64 scores; column ``i`` from the ``i``-th list.
        dropped: Trials of each list left out (non-zero only with ``common_only``).
    """

    trials: Trials
    matrix: np.ndarray
    dropped: tuple[int, ...]


def _name(trials: Trials, i: int) -> str:
    return str(trials.path) if trials.path is not None else f"score list {i + 1}"


def _pair_keys(trials: Trials) -> list[str]:
    # Ids never contain NUL (they come from whitespace-separated files), so the key is unambiguous.
    return [f"{e}\0{t}" for e, t in zip(trials.enroll.tolist(), trials.test.tolist())]


def _pair_text(key: str) -> str:
    return key.replace("\0", " ")


def _index(trials: Trials, i: int) -> tuple[list[str], dict[str, int]]:
    keys = _pair_keys(trials)
    index: dict[str, int] = {}
    for row, key in enumerate(keys):
        if index.setdefault(key, row) != row:
            raise DataError(f"{_name(trials, i)}: the pair '{_pair_text(key)}' is scored twice (trials "
                            f"{index[key] + 1} and {row + 1}); each trial pair must appear once")
    return keys, index


def align_scores(
    score_lists: Sequence[tuple[Trials, ArrayLike]], common_only: bool = False
) -> AlignedScores:
    """Line up several systems' scores on their ``(enroll, test)`` pairs.

    Every list must score the same pairs, in any order; the result follows the first list's
    order. Labels, where lists have them, must agree.

    Args:
        score_lists: ``(trials, scores)`` of each system, e.g. from :func:`read_scores`.
        common_only: Keep only the pairs every list scores (their count per list is in ``dropped``)
            instead of refusing lists that differ.

    Returns:
        The aligned scores.

    Raises:
        DataError: If no list is given, a list scores a pair twice or has a score count unlike its trial count,
            a list lacks pairs of the first or has pairs the first lacks (unless ``common_only``; the message
            names the file and the count), no pair is common to all, or two lists disagree on a label.

    Example:
        >>> a = (Trials(labels=None, enroll=["x", "x"], test=["u", "v"]), [0.1, 0.2])
        >>> b = (Trials(labels=[0, 1], enroll=["x", "x"], test=["v", "u"]), [2.0, 1.0])
        >>> aligned = align_scores([a, b])
        >>> aligned.matrix.tolist(), aligned.trials.labels.tolist()
        ([[0.1, 1.0], [0.2, 2.0]], [1, 0])
    """
    if not score_lists:
        raise DataError("no score lists to align")
    lists = []
    for i, (trials, scores) in enumerate(score_lists):
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.size != len(trials):
            raise DataError(f"{_name(trials, i)}: {s.size} scores for {len(trials)} trials")
        lists.append((trials, s, *_index(trials, i)))
    ref_trials, _, ref_keys, _ = lists[0]
    ref_name = _name(ref_trials, 0)
    keep = np.ones(len(ref_keys), dtype=bool)
    for i, (trials, _, keys, index) in enumerate(lists[1:], 1):
        present = np.fromiter((key in index for key in ref_keys), dtype=bool, count=len(ref_keys))
        if common_only:
            keep &= present
            continue
        if not present.all():
            first = ref_keys[int(np.flatnonzero(~present)[0])]
            raise DataError(
                f"{_name(trials, i)} lacks {int((~present).sum())} of the {len(ref_keys)} trial pairs of {ref_name} "
                f"(first: '{_pair_text(first)}'); score the same trials with every system, or keep only the "
                "pairs all files share (--common-only)"
            )
        if len(keys) > len(ref_keys):
            ref_index = lists[0][3]
            extra = [key for key in keys if key not in ref_index]
            raise DataError(
                f"{_name(trials, i)} has {len(extra)} trial pairs that {ref_name} lacks (first: "
                f"'{_pair_text(extra[0])}'); score the same trials with every system, or keep only the pairs all "
                "files share (--common-only)"
            )
    kept = [key for key, k in zip(ref_keys, keep.tolist()) if k]
    if not kept:
        raise DataError(f"no trial pair is scored in all {len(lists)} score lists")
    matrix = np.empty((len(kept), len(lists)), dtype=np.float64)
    labels = None
    labels_from = ""
    for i, (trials, s, keys, index) in enumerate(lists):
        rows = np.fromiter((index[key] for key in kept), dtype=np.int64, count=len(kept))
        matrix[:, i] = s[rows]
        if trials.labels is None:
            continue
        these = np.asarray(trials.labels)[rows].astype(np.int8)
        if labels is None:
            labels, labels_from = these, _name(trials, i)
            continue
        differ = np.flatnonzero(labels != these)
        if differ.size:
            j = int(differ[0])
            raise DataError(
                f"{_name(trials, i)} and {labels_from} disagree on the label of {differ.size} of {len(kept)} trial "
                f"pairs (first: '{_pair_text(kept[j])}': {these[j]} vs {labels[j]}); they must come from the same "
                "trial list"
            )
    ref_rows = np.flatnonzero(keep)
    aligned = Trials(labels=labels, enroll=ref_trials.enroll[ref_rows], test=ref_trials.test[ref_rows])
    dropped = tuple(len(keys) - len(kept) for _, _, keys, _ in lists)
    return AlignedScores(trials=aligned, matrix=matrix, dropped=dropped)

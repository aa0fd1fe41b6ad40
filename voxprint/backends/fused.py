"""The back-end of a fusion of models: each part scores its own slice of the embedding with its own back-end,
and a :class:`~voxprint.backends.fusion.LinearFusion` adds the parts' scores into one log-likelihood ratio.

A fused embedding is the concatenation of the parts' unit embeddings divided by ``sqrt(k)`` (``k`` parts),
so it is a unit vector too; :func:`split_parts` recovers each part's unit embedding (also from the mean of
several fused embeddings: the normalised mean of each slice is that part's normalised mean). The models
that make such embeddings are :class:`~voxprint.inference.fused.FusedEmbedder`. This module imports no torch.

Example:
    >>> rows = join_parts([np.array([[0.6, 0.8]]), np.array([[1.0, 0.0, 0.0]])])
    >>> round(float(np.linalg.norm(rows)), 6), [p.astype(float).round(2).tolist() for p in split_parts(rows, (2, 3))]
    (1.0, [[[0.6, 0.8]], [[1.0, 0.0, 0.0]]])
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxprint.backends.fusion import LinearFusion
from voxprint.backends.rows import as_matrix, unit_rows
from voxprint.data.trials import Trials
from voxprint.errors import DataError

__all__ = ["FusedBackend", "join_parts", "split_parts"]


def join_parts(parts: Sequence[np.ndarray]) -> np.ndarray:
    """``(n, sum d_i)`` fused unit rows from each part's ``(n, d_i)`` unit rows (see the module docstring)."""
    return (np.concatenate(parts, axis=1) / np.sqrt(len(parts))).astype(np.float32)


def split_parts(embeddings: np.ndarray, dims: Sequence[int]) -> list[np.ndarray]:
    """Each part's unit rows from fused embeddings ``(n, sum(dims))`` (or one fused embedding).

    Raises:
        DataError: the width is not ``sum(dims)``.
    """
    mat = as_matrix(embeddings, "fused embeddings")
    mat = mat[None, :] if mat.ndim == 1 else mat
    if mat.ndim != 2 or mat.shape[1] != sum(dims):
        raise DataError(f"fused embeddings must have {sum(dims)} values per row ({' + '.join(map(str, dims))}), "
                        f"got shape {mat.shape}")
    bounds = np.cumsum((0, *dims))
    return [unit_rows(mat[:, a:b], "fused embedding part") for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class FusedBackend:
    """Scores trials of fused embeddings: every part's back-end scores its slice, the fusion adds them.

    Attributes:
        parts: each part's :class:`~voxprint.backends.backend.ScoringBackend`.
        dims: each part's embedding size, in the order of the concatenation.
        fusion: maps the ``(n, k)`` matrix of the parts' scores to log-likelihood ratios.
    """

    parts: tuple[Any, ...]
    dims: tuple[int, ...]
    fusion: LinearFusion
    kind = "fused"
    norm = "none"

    def __post_init__(self) -> None:
        if not (len(self.parts) == len(self.dims) == self.fusion.n_systems) or len(self.parts) < 2:
            raise DataError(f"a fusion needs two or more parts, each with a size and a weight; got {len(self.parts)} "
                            f"back-ends, {len(self.dims)} sizes and {self.fusion.n_systems} weights")

    @property
    def calibration(self) -> LinearFusion:
        """The fusion: what makes the parts' scores one log-likelihood ratio (a calibrated back-end's role)."""
        return self.fusion

    @property
    def name(self) -> str:
        """E.g. ``"fusion(plda+calibrated, plda+calibrated)"``."""
        return f"fusion({', '.join(part.name for part in self.parts)})"

    @property
    def scale(self) -> str:
        """What the scores are, in words."""
        return f"log-likelihood ratio (fusion of {len(self.parts)} models)"

    def split(self, embeddings: np.ndarray) -> list[np.ndarray]:
        """Each part's unit embeddings (:func:`split_parts`)."""
        return split_parts(embeddings, self.dims)

    def part_scores(self, ids: Sequence[str], embeddings: np.ndarray, trials: Trials,
                    enrollments: Mapping[str, Sequence[str]] | None = None) -> np.ndarray:
        """``(len(trials), k)`` scores of each part's back-end on its own slice of the embeddings."""
        return np.column_stack([part.score_trials(ids, rows, trials, enrollments)
                                for part, rows in zip(self.parts, self.split(embeddings))])

    def score_trials(self, ids: Sequence[str], embeddings: np.ndarray, trials: Trials,
                     enrollments: Mapping[str, Sequence[str]] | None = None) -> np.ndarray:
        """Fused log-likelihood ratios of a trial list (the arguments of
        :meth:`~voxprint.backends.backend.ScoringBackend.score_trials`)."""
        return self.fusion.transform(self.part_scores(ids, embeddings, trials, enrollments))

    raw_scores = score_trials  # the fusion is the whole back-end: there is no score before it

    def score(self, enroll: np.ndarray, test: np.ndarray) -> float:
        """Score of one test embedding against a speaker enrolled from the rows of ``enroll``, with each part's
        speaker model as the speaker store keeps it (:class:`~voxprint.identification.scoring.FusedScoring`)."""
        from voxprint.identification.scoring import FusedScoring

        return FusedScoring(self).score(enroll, test)

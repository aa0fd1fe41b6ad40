"""Linear discriminant analysis (LDA) of labelled speaker embeddings.

:class:`LDA` is fitted from the within- and between-speaker scatter of labelled embeddings:
``y = (x - mean) @ projection``. The output is whitened for the within-speaker scatter (identity)
and its between-speaker scatter is diagonal, strongest direction first (the Kaldi
``ivector-compute-lda`` convention). :class:`SpeakerStatistics` (per-speaker sums and the
within-speaker scatter) is shared with PLDA training (:mod:`voxprint.backends.plda`).

Example:
    >>> import numpy as np
    >>> x = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [4.0, 0.0], [5.0, 0.0], [4.0, 1.0]])
    >>> lda = LDA.fit(x, ["a", "a", "a", "b", "b", "b"])
    >>> lda.dim, (lda.transform(x)[:, 0] > 0).tolist()  # one direction, separating the two speakers
    (1, [False, False, False, True, True, True])
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike

from voxprint.backends.rows import as_matrix, as_rows
from voxprint.errors import DataError

__all__ = ["LDA", "SpeakerStatistics"]

# Added to the within-speaker scatter, times its mean variance, before LDA: keeps the
# generalised eigenproblem well posed when some directions carry (almost) no within-speaker
# variation, at a negligible cost to the transform.
_LDA_REG = 1e-6


def symmetric(m: np.ndarray) -> np.ndarray:
    """The symmetric part ``(m + m') / 2`` of a square matrix (removes rounding asymmetry)."""
    return 0.5 * (m + m.T)


@dataclass(frozen=True)
class SpeakerStatistics:
    """Per-speaker statistics of labelled embeddings, about their global mean.

    Attributes:
        mean: ``(d,)`` mean of all rows.
        centred: ``(n, d)`` rows minus ``mean``.
        counts: ``(S,)`` utterances per speaker (speakers in sorted label order).
        sums: ``(S, d)`` sum of each speaker's centred rows.
        within: ``(d, d)`` within-speaker scatter divided by ``n`` (symmetric).
    """

    mean: np.ndarray
    centred: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    within: np.ndarray

    @property
    def class_means(self) -> np.ndarray:
        """``(S, d)`` mean of each speaker's centred rows."""
        return self.sums / self.counts[:, None]

    @classmethod
    def of(cls, x: np.ndarray, labels: ArrayLike) -> SpeakerStatistics:
        """Statistics of the float64 ``(n, d)`` rows ``x`` with speaker ``labels``.

        Args:
            x: ``(n, d)`` float64 rows.
            labels: ``(n,)`` speaker label of each row.

        Returns:
            The statistics.

        Raises:
            DataError: there is not one label per row, or there are fewer than two speakers.
        """
        lab = np.asarray(labels)
        n = x.shape[0]
        if lab.ndim != 1 or lab.shape[0] != n:
            raise DataError(f"need one speaker label per embedding row: {lab.size} labels for {n} rows")
        _, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
        if counts.size < 2:
            raise DataError(
                f"the training embeddings have {counts.size} speaker(s); LDA and PLDA need at least two"
            )
        order = np.argsort(inverse, kind="stable")
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        # Working about the mean: the sums of squares lose nothing to cancellation.
        mean = x.mean(axis=0)
        centred = x - mean
        sums = np.add.reduceat(centred[order], starts, axis=0)
        # Residuals rather than X'X - sum n m m': no cancellation when speakers are far apart.
        resid = centred[order] - np.repeat(sums / counts[:, None], counts, axis=0)
        return cls(mean, centred, counts, sums, symmetric(resid.T @ resid / n))


def _fix_signs(vectors: np.ndarray) -> np.ndarray:
    # Eigenvectors are defined up to sign; make the largest entry of each column positive so
    # the same data always gives the same transform.
    big = np.argmax(np.abs(vectors), axis=0)
    return vectors * np.where(vectors[big, np.arange(vectors.shape[1])] < 0, -1.0, 1.0)


class LDA:
    """Linear discriminant analysis: ``transform(x) = (x - mean) @ projection``.

    Build it with :meth:`fit`, or directly from known parameters.

    Args:
        mean: ``(d,)`` training mean subtracted first.
        projection: ``(d, dim)`` projection; columns are discriminant directions, strongest first.

    Raises:
        DataError: If the shapes do not match or a value is non-finite.
    """

    def __init__(self, mean: ArrayLike, projection: ArrayLike) -> None:
        self.mean = as_matrix(mean, "LDA mean").astype(np.float64).reshape(-1)
        self.projection = as_matrix(projection, "LDA projection").astype(np.float64)
        shape = self.projection.shape
        if len(shape) != 2 or shape[0] != self.mean.size or shape[1] == 0:
            raise DataError(
                f"LDA projection must be ({self.mean.size}, dim), got shape {self.projection.shape}"
            )

    @property
    def input_dim(self) -> int:
        """Dimension of the embeddings the transform takes."""
        return int(self.projection.shape[0])

    @property
    def dim(self) -> int:
        """Output dimension."""
        return int(self.projection.shape[1])

    @classmethod
    def fit(cls, embeddings: ArrayLike, labels: ArrayLike, dim: int | None = None) -> LDA:
        """Fit LDA to labelled embeddings.

        Solves ``S_b v = lambda S_w v`` for the between-speaker scatter ``S_b`` (speaker
        means about the global mean, weighted by utterance count) and the within-speaker
        scatter ``S_w``, both divided by the number of utterances, and keeps the ``dim``
        directions of largest ``lambda``, scaled so that ``v' S_w v = 1``. ``S_w`` gets a
        ridge of 1e-6 times its mean variance so a rank-deficient scatter still works.

        Args:
            embeddings: ``(n, d)`` training embeddings.
            labels: ``(n,)`` speaker label of each row (strings or integers).
            dim: Output dimension, at most ``min(d, speakers - 1)`` (the rank of ``S_b``); None
                takes that maximum.

        Returns:
            The fitted transform.

        Raises:
            DataError: If the embeddings are not a finite ``(n, d)`` matrix, labels do not match, there
                are fewer than two speakers, no speaker has two utterances, or ``dim`` is out of
                range.
        """
        x = as_rows(embeddings, "LDA training embeddings").astype(np.float64, copy=False)
        stats = SpeakerStatistics.of(x, labels)
        counts = stats.counts
        max_dim = min(x.shape[1], counts.size - 1)
        if dim is None:
            dim = max_dim
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= max_dim:
            raise DataError(
                f"LDA dimension must be an integer from 1 to {max_dim} (min(embedding dim {x.shape[1]}, "
                f"speakers {counts.size} - 1)), got {dim!r}"
            )
        if counts.max() < 2:
            raise DataError(
                "every training speaker has a single utterance, so within-speaker variation is "
                "unknown; LDA needs speakers with two or more utterances"
            )
        class_means = stats.class_means
        s_w = stats.within.copy()
        s_b = (class_means * counts[:, None]).T @ class_means / x.shape[0]
        s_w[np.diag_indices_from(s_w)] += _LDA_REG * max(np.trace(s_w) / s_w.shape[0], np.finfo(float).tiny)
        try:
            _, vectors = scipy.linalg.eigh(symmetric(s_b), symmetric(s_w))
        except np.linalg.LinAlgError:
            raise DataError(
                "the within-speaker scatter of the LDA training embeddings is singular; check for "
                "constant or duplicated embedding dimensions"
            ) from None
        # eigh returns ascending eigenvalues with v' S_w v = I.
        projection = _fix_signs(vectors[:, ::-1][:, :dim])
        return cls(stats.mean, projection)

    def transform(self, embeddings: ArrayLike) -> np.ndarray:
        """Project embeddings: ``(x - mean) @ projection``.

        Args:
            embeddings: ``(n, d)`` matrix or one ``(d,)`` vector.

        Returns:
            ``(n, dim)`` (or ``(dim,)``) float64.

        Raises:
            DataError: If the dimension is not ``input_dim`` or a value is non-finite.
        """
        x = as_matrix(embeddings, "embeddings").astype(np.float64, copy=False)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_dim:
            raise DataError(f"LDA expects {self.input_dim}-dimensional embeddings, got shape {x.shape}")
        return (x - self.mean) @ self.projection

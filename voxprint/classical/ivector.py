"""The i-vector: total-variability subspace training by EM and posterior-mean extraction.

Dehak, Kenny, Dehak, Dumouchel and Ouellet, "Front-end factor analysis for speaker verification",
IEEE TASLP 19(4), 2011: a recording's mean supervector is ``M = m + T w`` with ``w ~ N(0, I)``; the
i-vector is the posterior mean of ``w`` given the recording's Baum-Welch statistics on the UBM
(section II-C). T is trained by EM as in Kenny's eigenvoice estimation (Kenny, Boulianne and
Dumouchel, IEEE TSAP 2005), treating every recording as a different speaker.

The statistics are centred on the UBM means and whitened by its standard deviations, so the UBM
covariances become identities and drop out of every formula: for a recording with occupancies N_c
and centred, whitened first-order statistics F_c,

    L = I + sum_c N_c T_c' T_c,        E[w] = L^-1 sum_c T_c' F_c,        E[w w'] = L^-1 + E[w] E[w]'.

The M-step solves ``T_c (sum_u N_uc E[w w']_u) = sum_u F_uc E[w]_u'`` for every component at once,
and the minimum-divergence step (Brummer; Kaldi's ``ivector-extractor``) rescales T so that the
i-vectors' second moment stays the identity, which speeds convergence. Every step is a handful of
matrix products over all recordings (in blocks, for memory); nothing loops over recordings.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voxprint.classical.gmm import DiagonalGMM
from voxprint.errors import ConfigError, DataError

__all__ = ["BaumWelch", "Posteriors", "component_grams", "extract_ivectors", "ivector_posteriors", "train_total_variability"]

#: Recordings per block in the vectorised passes (a block's (n, R, R) precisions stay near 300 MB for R = 400).
BLOCK = 256


@dataclass
class BaumWelch:
    """Zeroth- and first-order statistics of recordings, centred on a UBM and whitened by its deviations.

    Attributes:
        zeroth: (n, K) occupancies.
        first: (n, K, D) centred, whitened first-order statistics ``(F_c - N_c mu_c) / sigma_c``.
    """

    zeroth: np.ndarray
    first: np.ndarray

    @classmethod
    def of(cls, ubm: DiagonalGMM, recordings: list[np.ndarray], top_c: int | None = None) -> "BaumWelch":
        """The statistics of each recording's frames (T_i, D) under ``ubm``."""
        zeroth = np.zeros((len(recordings), ubm.num_components))
        first = np.zeros((len(recordings), ubm.num_components, ubm.dim))
        for i, frames in enumerate(recordings):
            stats = ubm.statistics(frames, top_c=top_c)
            zeroth[i], first[i] = stats.zeroth, stats.first
        return cls.centred(ubm, zeroth, first)

    @classmethod
    def centred(cls, ubm: DiagonalGMM, zeroth: np.ndarray, first: np.ndarray) -> "BaumWelch":
        """Centre raw first-order statistics (n, K, D) on the UBM's means and whiten them."""
        deviations = np.sqrt(ubm.variances)
        return cls(np.asarray(zeroth, dtype=np.float64),
                   (np.asarray(first, dtype=np.float64) - zeroth[:, :, None] * ubm.means) / deviations)

    def __len__(self) -> int:
        return int(self.zeroth.shape[0])


@dataclass
class Posteriors:
    """What the E-step gives for n recordings.

    Attributes:
        means: (n, R) posterior means of ``w``: the i-vectors.
        covariances: (n, R, R) posterior covariances ``L^-1`` (None unless requested).
        log_likelihood: mean over recordings of the statistics' log-likelihood under T, up to terms
            that do not depend on T: ``-1/2 log|L| + 1/2 b' L^-1 b`` with ``b = sum_c T_c' F_c``. EM
            never decreases it.
    """

    means: np.ndarray
    covariances: np.ndarray | None
    log_likelihood: float


def component_grams(total_variability: np.ndarray) -> np.ndarray:
    """``T_c' T_c`` of every component, flattened to (K, R * R) so that one product with the occupancies
    gives every recording's precision. It depends on T alone: an extractor computes it once."""
    k, _, rank = total_variability.shape
    return np.einsum("kdr,kds->krs", total_variability, total_variability).reshape(k, rank * rank)


def ivector_posteriors(stats: BaumWelch, total_variability: np.ndarray, with_covariance: bool = False,
                       grams: np.ndarray | None = None) -> Posteriors:
    """The posterior of every recording's latent factor ``w`` (the E-step).

    Args:
        stats: centred, whitened statistics of n recordings.
        total_variability: T as (K, D, R).
        with_covariance: also return every ``L^-1``.
        grams: :func:`component_grams` of T when already computed.
    """
    k, d, rank = total_variability.shape
    if stats.first.shape[1:] != (k, d):
        raise DataError(f"statistics of a ({stats.first.shape[1]}, {stats.first.shape[2]}) UBM do not fit a "
                        f"total-variability matrix of ({k}, {d}, {rank})")
    gram = component_grams(total_variability) if grams is None else grams
    projection = total_variability.reshape(k * d, rank)
    means = np.zeros((len(stats), rank))
    covariances = np.zeros((len(stats), rank, rank)) if with_covariance else None
    eye = np.eye(rank)
    log_likelihood = 0.0
    for start in range(0, len(stats), BLOCK):
        block = slice(start, start + BLOCK)
        precision = eye + (stats.zeroth[block] @ gram).reshape(-1, rank, rank)
        linear = stats.first[block].reshape(-1, k * d) @ projection
        # Precisions are symmetric positive definite (I plus a sum of Gram matrices): Cholesky solves.
        factor = np.linalg.cholesky(precision)
        means[block] = _cholesky_solve(factor, linear[:, :, None])[:, :, 0]
        log_likelihood += float(-np.log(np.diagonal(factor, axis1=1, axis2=2)).sum()
                                + 0.5 * np.sum(linear * means[block]))
        if covariances is not None:
            covariances[block] = _cholesky_solve(factor, np.broadcast_to(eye, precision.shape))
    return Posteriors(means, covariances, log_likelihood / max(len(stats), 1))


def extract_ivectors(stats: BaumWelch, total_variability: np.ndarray, grams: np.ndarray | None = None) -> np.ndarray:
    """The i-vectors (n, R): posterior means of the recordings' latent factors.

    Example:
        >>> ubm = DiagonalGMM(np.array([1.0]), np.zeros((1, 2)), np.ones((1, 2)))
        >>> stats = BaumWelch.centred(ubm, np.array([[3.0]]), np.array([[[3.0, 0.0]]]))
        >>> extract_ivectors(stats, np.array([[[1.0], [0.0]]]))  # L = 1 + 3, w = 3 / 4
        array([[0.75]])
    """
    return ivector_posteriors(stats, total_variability, grams=grams).means


def train_total_variability(stats: BaumWelch, rank: int, iterations: int = 6, seed: int = 0,
                            minimum_divergence: bool = True,
                            on_iteration: Callable[[int, float], None] | None = None) -> np.ndarray:
    """T (K, D, R) by EM on the statistics of the training recordings.

    Args:
        stats: centred, whitened statistics of the training recordings.
        rank: R, the i-vector dimension.
        iterations: EM iterations.
        seed: seed of the random initial T.
        minimum_divergence: rescale T after each M-step so the i-vectors' second moment is I.
        on_iteration: called ``(iteration, log-likelihood per recording before the step)`` (see
            :class:`Posteriors`; it never decreases).

    Raises:
        ConfigError: ``rank`` is not positive or exceeds the supervector size.
    """
    n, k, d = stats.first.shape
    if not 0 < rank <= k * d:
        raise ConfigError(f"the i-vector rank must be between 1 and the supervector size {k * d}, not {rank}")
    if n < 2:
        raise DataError("training a total-variability matrix needs at least two recordings")
    rng = np.random.default_rng(seed)
    # A small random start: the first E-step then sees the prior, and EM grows T from the data.
    total_variability = rng.standard_normal((k, d, rank)) * 0.1
    for iteration in range(iterations):
        posteriors = ivector_posteriors(stats, total_variability, with_covariance=True)
        means, covariances = posteriors.means, posteriors.covariances
        second_moments = covariances + means[:, :, None] * means[:, None, :]
        cross = stats.first.reshape(n, k * d).T @ means  # (K D, R): sum_u F_u E[w_u]'
        weighted = (stats.zeroth.T @ second_moments.reshape(n, rank * rank)).reshape(k, rank, rank)
        # T_c = cross_c A_c^-1 with A_c symmetric positive definite, for all components at once.
        total_variability = np.linalg.solve(weighted, cross.reshape(k, d, rank).transpose(0, 2, 1)).transpose(0, 2, 1)
        if minimum_divergence:
            moment = second_moments.mean(axis=0)
            total_variability = total_variability @ np.linalg.cholesky(moment)
        if on_iteration is not None:
            on_iteration(iteration, posteriors.log_likelihood)
    return total_variability


def _cholesky_solve(factor: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve ``(L L') x = rhs`` for a batch of lower-triangular factors L."""
    # numpy has no batched triangular solve; two general solves on triangular matrices are exact and,
    # at R <= 400, cheaper than forming the inverse.
    return np.linalg.solve(factor.transpose(0, 2, 1), np.linalg.solve(factor, rhs))

"""Diagonal-covariance Gaussian mixtures: the universal background model (UBM) of GMM-UBM and the i-vector.

Everything is vectorised over frames (a chunk of frames at a time, so memory stays bounded whatever
the amount of speech): per-component log-likelihoods are two matrix products, the E-step one
exponent, the M-step three matrix products. Reynolds, Quatieri and Dunn, "Speaker verification using
adapted Gaussian mixture models", Digital Signal Processing 10 (2000): the UBM is trained by EM, a
speaker's model is the UBM with means MAP-adapted to the speaker's frames (section 3.1, eq. 1-4,
relevance factor r), and a test is scored by the log-likelihood ratio of speaker model and UBM over
the top-C UBM components of each frame (section 3.3, "fast scoring").
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from voxprint.errors import ConfigError, DataError

__all__ = ["DiagonalGMM", "FrameStatistics", "llr_matrix", "map_adapt_means", "train_ubm"]

#: Frames per chunk in the vectorised passes: (chunk x K) float64 matrices stay near 80 MB for K = 512.
CHUNK_FRAMES = 20_000
_LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class FrameStatistics:
    """Zeroth-, first- and second-order statistics of frames under a mixture's posteriors.

    Attributes:
        zeroth: (K,) occupancies N_c = sum_t gamma_t(c).
        first: (K, D) sums F_c = sum_t gamma_t(c) x_t.
        second: (K, D) sums S_c = sum_t gamma_t(c) x_t**2 (None when not requested).
        log_likelihood: total log-likelihood of the frames under the mixture.
        frames: number of frames.
    """

    zeroth: np.ndarray
    first: np.ndarray
    second: np.ndarray | None
    log_likelihood: float
    frames: int

    def __add__(self, other: "FrameStatistics") -> "FrameStatistics":
        second = None if self.second is None or other.second is None else self.second + other.second
        return FrameStatistics(self.zeroth + other.zeroth, self.first + other.first, second,
                               self.log_likelihood + other.log_likelihood, self.frames + other.frames)


class DiagonalGMM:
    """A mixture of K diagonal-covariance Gaussians in D dimensions (float64 parameters).

    Args:
        weights: (K,) mixture weights, positive, summing to 1.
        means: (K, D) component means.
        variances: (K, D) diagonal variances, positive.

    Example:
        >>> gmm = DiagonalGMM(np.array([0.5, 0.5]), np.array([[-2.0], [2.0]]), np.ones((2, 1)))
        >>> gmm.posteriors(np.array([[-2.0], [2.0]])).round(3)
        array([[1., 0.],
               [0., 1.]])
    """

    def __init__(self, weights: np.ndarray, means: np.ndarray, variances: np.ndarray):
        self.weights = np.asarray(weights, dtype=np.float64)
        self.means = np.atleast_2d(np.asarray(means, dtype=np.float64))
        self.variances = np.atleast_2d(np.asarray(variances, dtype=np.float64))
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.variances.shape != (k, d):
            raise ConfigError(f"a GMM needs weights (K,), means (K, D) and variances (K, D); got "
                              f"{self.weights.shape}, {self.means.shape}, {self.variances.shape}")
        if not (np.all(self.variances > 0) and np.all(self.weights > 0)):
            raise ConfigError("GMM variances and weights must be positive")
        self._cache()

    def _cache(self) -> None:
        # log N(x; mu, var) = -0.5 * sum_d (x_d^2 / var_d - 2 x_d mu_d / var_d + mu_d^2 / var_d + log(2 pi var_d))
        self._precisions = 1.0 / self.variances
        self._scaled_means = self.means * self._precisions
        self._constants = (np.log(self.weights) - 0.5 * (np.sum(self.means * self._scaled_means, axis=1)
                                                         + np.sum(np.log(self.variances), axis=1)
                                                         + self.dim * _LOG_2PI))

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def component_log_likelihoods(self, frames: np.ndarray) -> np.ndarray:
        """(T, K) log(w_c N(x_t; mu_c, var_c)) of frames (T, D)."""
        x = np.asarray(frames, dtype=np.float64)
        return (x @ self._scaled_means.T) - 0.5 * ((x * x) @ self._precisions.T) + self._constants

    def log_likelihood(self, frames: np.ndarray) -> float:
        """Mean log-likelihood per frame of frames (T, D)."""
        total = sum(float(_logsumexp(self.component_log_likelihoods(c)).sum()) for c in _chunks(frames))
        return total / max(len(frames), 1)

    def posteriors(self, frames: np.ndarray, top_c: int | None = None) -> np.ndarray:
        """(T, K) component posteriors of frames (T, D); with ``top_c``, zero outside each frame's top C
        components and renormalised over them."""
        scores = _keep_top_c(self.component_log_likelihoods(frames), top_c)
        return np.exp(scores - _logsumexp(scores)[:, None])

    def statistics(self, frames: np.ndarray, second_order: bool = False, top_c: int | None = None) -> FrameStatistics:
        """Baum-Welch statistics of frames (T, D) under this mixture's posteriors, a chunk at a time.

        Example:
            >>> gmm = DiagonalGMM(np.array([1.0]), np.zeros((1, 2)), np.ones((1, 2)))
            >>> stats = gmm.statistics(np.array([[1.0, 2.0], [3.0, 4.0]]))
            >>> stats.zeroth, stats.first
            (array([2.]), array([[4., 6.]]))
        """
        k, d = self.means.shape
        total = FrameStatistics(np.zeros(k), np.zeros((k, d)), np.zeros((k, d)) if second_order else None, 0.0, 0)
        for chunk in _chunks(frames):
            scores = _keep_top_c(self.component_log_likelihoods(chunk), top_c)
            norm = _logsumexp(scores)
            gamma = np.exp(scores - norm[:, None])
            total = total + FrameStatistics(gamma.sum(axis=0), gamma.T @ chunk,
                                            gamma.T @ (chunk * chunk) if second_order else None,
                                            float(norm.sum()), len(chunk))
        return total

    def maximization(self, stats: FrameStatistics, variance_floor: np.ndarray | float = 1e-6,
                     min_occupancy: float = 1e-3) -> "DiagonalGMM":
        """The M-step: the mixture that maximises the expected log-likelihood of ``stats``.

        A component that almost no frame chose keeps its parameters (and a tiny weight) instead of
        dividing by zero; variances are floored at ``variance_floor``.
        """
        if stats.second is None:
            raise DataError("the M-step needs second-order statistics")
        alive = stats.zeroth > min_occupancy
        occupancy = np.where(alive, stats.zeroth, 1.0)[:, None]
        means = np.where(alive[:, None], stats.first / occupancy, self.means)
        variances = np.where(alive[:, None], stats.second / occupancy - means ** 2, self.variances)
        variances = np.maximum(variances, variance_floor)
        weights = np.maximum(stats.zeroth, min_occupancy)
        return DiagonalGMM(weights / weights.sum(), means, variances)

    def split(self, perturbation: float = 0.2) -> "DiagonalGMM":
        """Twice the components: each mean moved by +-``perturbation`` standard deviations along its
        largest-variance dimension, weights halved (the binary splitting of HTK and the MSR Identity Toolbox)."""
        offset = np.zeros_like(self.means)
        widest = np.argmax(self.variances, axis=1)
        offset[np.arange(self.num_components), widest] = perturbation * np.sqrt(self.variances[np.arange(self.num_components), widest])
        return DiagonalGMM(np.concatenate([self.weights, self.weights]) / 2.0,
                           np.concatenate([self.means - offset, self.means + offset]),
                           np.concatenate([self.variances, self.variances]))

    def top_components(self, frames: np.ndarray, top_c: int) -> tuple[np.ndarray, np.ndarray]:
        """Each frame's ``top_c`` best components (T, C) and their log(w_c N(x_t)) (T, C)."""
        scores = self.component_log_likelihoods(frames)
        top_c = min(top_c, self.num_components)
        index = np.argpartition(scores, -top_c, axis=1)[:, -top_c:]
        return index, np.take_along_axis(scores, index, axis=1)

    def llr_top_c(self, adapted_means: np.ndarray, frames: np.ndarray, top_c: int = 5) -> float:
        """Mean per-frame log-likelihood ratio of a MAP-adapted speaker model (these ``adapted_means``,
        this mixture's weights and variances) against this UBM, over each frame's top-C UBM components
        (Reynolds et al. 2000, section 3.3).

        Example:
            >>> ubm = DiagonalGMM(np.array([0.5, 0.5]), np.array([[-1.0], [1.0]]), np.ones((2, 1)))
            >>> ubm.llr_top_c(ubm.means, np.array([[0.3]]), top_c=2)
            0.0
        """
        index, ubm_scores = self.top_components(frames, top_c)
        return float(np.mean(self.adapted_top_c_scores(adapted_means, frames, index, ubm_scores)
                             - _logsumexp(ubm_scores)))

    def adapted_top_c_scores(self, adapted_means: np.ndarray, frames: np.ndarray, index: np.ndarray,
                             ubm_scores: np.ndarray) -> np.ndarray:
        """log sum over each frame's top components of the adapted model's w_c N(x_t): (T,).

        Only the means differ from the UBM, so the adapted log-likelihoods are the UBM's plus
        ``a_c . x_t - b_c`` with ``a_c = (m_c - mu_c) / var_c`` and
        ``b_c = (m_c^2 - mu_c^2) / (2 var_c)`` summed over dimensions. Only each frame's C top components
        are needed: with few of them (C <= K / 8), C dot products per frame; else one matrix product.
        """
        delta = np.asarray(adapted_means, dtype=np.float64) - self.means
        linear = delta * self._precisions
        offsets = 0.5 * np.sum(linear * (np.asarray(adapted_means) + self.means), axis=1)
        x = np.asarray(frames, dtype=np.float64)
        if 8 * index.shape[1] <= self.num_components:
            shift = np.stack([np.einsum("td,td->t", x, linear[index[:, c]]) for c in range(index.shape[1])], axis=1)
        else:
            shift = np.take_along_axis(x @ linear.T, index, axis=1)
        return _logsumexp(ubm_scores + shift - offsets[index])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The parameters as named arrays (the form a model file stores)."""
        return {"weights": self.weights, "means": self.means, "variances": self.variances}


def map_adapt_means(ubm: DiagonalGMM, stats: FrameStatistics, relevance: float) -> np.ndarray:
    """MAP-adapted means (K, D) of a speaker from the statistics of their frames (Reynolds et al. 2000, eq. 1-4).

    ``alpha_c = N_c / (N_c + r)``; ``m_c = alpha_c F_c / N_c + (1 - alpha_c) mu_c = (F_c + r mu_c) / (N_c + r)``.
    ``r = 0`` gives the maximum-likelihood means of the frames (components without frames keep the
    UBM's); ``r = inf`` gives the UBM's means. Statistics of several recordings add up, which is how a
    speaker is enrolled from several: pool, then adapt.

    Example:
        >>> ubm = DiagonalGMM(np.array([1.0]), np.zeros((1, 1)), np.ones((1, 1)))
        >>> stats = ubm.statistics(np.array([[2.0], [4.0]]))
        >>> map_adapt_means(ubm, stats, 0.0), map_adapt_means(ubm, stats, 2.0), map_adapt_means(ubm, stats, np.inf)
        (array([[3.]]), array([[1.5]]), array([[0.]]))
    """
    if relevance < 0 or math.isnan(relevance):
        raise ConfigError(f"the relevance factor must be >= 0, not {relevance}")
    if math.isinf(relevance):
        return ubm.means.copy()
    occupancy = stats.zeroth[:, None]
    denominator = occupancy + relevance
    has_data = denominator > 0
    return np.where(has_data, (stats.first + relevance * ubm.means) / np.where(has_data, denominator, 1.0), ubm.means)


def llr_matrix(ubm: DiagonalGMM, speaker_means: Sequence[np.ndarray], tests: Sequence[np.ndarray],
               top_c: int = 5) -> np.ndarray:
    """Top-C log-likelihood ratios (n_speakers, n_tests) of many speaker models against many tests.

    Equal to :meth:`DiagonalGMM.llr_top_c` for every pair. The UBM's top-C selection is done once per
    test frame, and the adapted log-likelihoods are computed only where they are needed: for each
    component, the frames that selected it times that component's adaptation in every speaker model,
    one matrix product (T C D S operations in all, instead of T K D S for a dense product).

    Example:
        >>> ubm = DiagonalGMM(np.array([0.5, 0.5]), np.array([[-1.0], [1.0]]), np.ones((2, 1)))
        >>> speakers, tests = [ubm.means + 0.5, ubm.means - 0.5], [np.array([[1.2], [0.8]]), np.array([[-1.0]])]
        >>> bool(np.allclose(llr_matrix(ubm, speakers, tests, top_c=1),
        ...                  [[ubm.llr_top_c(m, t, top_c=1) for t in tests] for m in speakers]))
        True
    """
    lengths = np.array([len(t) for t in tests])
    if np.any(lengths == 0):
        raise DataError("a test recording has no frames to score")
    top_c = min(top_c, ubm.num_components)
    means = np.stack([np.asarray(m, dtype=np.float64) for m in speaker_means])  # (S, K, D)
    linear = (means - ubm.means) * ubm._precisions  # a_sc = (m_sc - mu_c) / var_c
    offsets = 0.5 * np.sum(linear * (means + ubm.means), axis=2)  # b_sc, (S, K)
    # Per-component blocks (D, S) and (S,), contiguous for the products below.
    blocks = np.ascontiguousarray(linear.transpose(1, 2, 0))
    block_offsets = np.ascontiguousarray(offsets.T)
    owners = np.repeat(np.arange(len(tests)), lengths)
    frames = np.concatenate([np.asarray(t, dtype=np.float64) for t in tests], axis=0)
    result = np.zeros((len(tests), len(means)))
    chunk_frames = max(1, 20_000_000 // (top_c * len(means)))  # (chunk, C, S) float64 stays near 160 MB
    for begin in range(0, len(frames), chunk_frames):
        chunk = frames[begin:begin + chunk_frames]
        index, ubm_scores = ubm.top_components(chunk, top_c)
        flat = index.ravel()
        order = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[order], np.arange(ubm.num_components + 1))
        shift = np.empty((len(chunk) * top_c, len(means)))
        for component in np.flatnonzero(np.diff(bounds)):
            positions = order[bounds[component]:bounds[component + 1]]
            shift[positions] = chunk[positions // top_c] @ blocks[component] - block_offsets[component]
        adapted = ubm_scores[:, :, None] + shift.reshape(len(chunk), top_c, len(means))
        peak = adapted.max(axis=1)
        frame_llr = peak + np.log(np.exp(adapted - peak[:, None, :]).sum(axis=1)) \
            - _logsumexp(ubm_scores)[:, None]
        chunk_owners = owners[begin:begin + len(chunk)]
        starts = np.flatnonzero(np.r_[True, chunk_owners[1:] != chunk_owners[:-1]])
        result[chunk_owners[starts]] += np.add.reduceat(frame_llr, starts, axis=0)
    return (result / lengths[:, None]).T


def train_ubm(frames: np.ndarray, num_components: int, iterations: int = 8, split_iterations: int = 3,
              variance_floor: float = 0.01,
              on_iteration: Callable[[int, int, float], None] | None = None) -> DiagonalGMM:
    """A UBM by binary splitting and EM: 1 component, split and re-estimate until ``num_components``.

    Args:
        frames: (T, D) pooled frames of the training speakers.
        num_components: K, a power of two.
        iterations: EM iterations at the final size.
        split_iterations: EM iterations after each intermediate split.
        variance_floor: variances are floored at this fraction of the data's variance per dimension
            (Kaldi and the MSR Identity Toolbox floor the same way), so a component cannot collapse on
            a few identical frames.
        on_iteration: called ``(components, iteration, mean log-likelihood per frame before the step)``.

    Returns:
        The trained mixture.

    Raises:
        ConfigError: ``num_components`` is not a power of two.
        DataError: fewer frames than components.
    """
    if num_components < 1 or num_components & (num_components - 1):
        raise ConfigError(f"num_components must be a power of two (1, 2, 4, ... 512), not {num_components}")
    frames = np.asarray(frames, dtype=np.float64)
    if len(frames) < 10 * num_components:
        raise DataError(f"{len(frames)} frames cannot train {num_components} Gaussians; need at least "
                        f"{10 * num_components} (more speech, or fewer components)")
    floor = variance_floor * frames.var(axis=0)
    gmm = DiagonalGMM(np.ones(1), frames.mean(axis=0, keepdims=True), np.maximum(frames.var(axis=0, keepdims=True), floor))
    while True:
        final = gmm.num_components == num_components
        for iteration in range(iterations if final else split_iterations):
            stats = gmm.statistics(frames, second_order=True)
            if on_iteration is not None:
                on_iteration(gmm.num_components, iteration, stats.log_likelihood / stats.frames)
            gmm = gmm.maximization(stats, variance_floor=floor)
        if final:
            return gmm
        gmm = gmm.split()


def _keep_top_c(scores: np.ndarray, top_c: int | None) -> np.ndarray:
    """(T, K) scores with all but each frame's ``top_c`` best set to -inf (unchanged when None or >= K)."""
    if top_c is None or top_c >= scores.shape[1]:
        return scores
    cut = np.partition(scores, -top_c, axis=1)[:, -top_c][:, None]
    return np.where(scores >= cut, scores, -np.inf)


def _logsumexp(scores: np.ndarray) -> np.ndarray:
    peak = np.max(scores, axis=1)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    return peak + np.log(np.sum(np.exp(scores - peak[:, None]), axis=1))


def _chunks(frames: np.ndarray, size: int = CHUNK_FRAMES) -> Iterator[np.ndarray]:
    frames = np.asarray(frames, dtype=np.float64)
    for start in range(0, len(frames), size):
        yield frames[start:start + size]

"""The i-vector extractor (Dehak et al. 2011) as an encoder: UBM statistics -> posterior mean of the latent factor.

An i-vector run folder is a model folder like any other: ``voxprint eval``, ``verify``, ``identify``,
``fit-backend`` (LDA, length normalisation, PLDA, calibration: the classical back-end) all use it.
Its config sets ``inference.window_frames`` large enough that a recording is one segment: the
i-vector of a whole recording, not a mean of window i-vectors.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from voxprint.classical.encoder import StatisticalEncoder, StepReport, host_array
from voxprint.classical.ivector import BaumWelch, component_grams, extract_ivectors, train_total_variability
from voxprint.errors import ConfigError
from voxprint.registry import MODELS


@MODELS.register("ivector")
class IVectorExtractor(StatisticalEncoder):
    """UBM + total-variability matrix T; the embedding is the i-vector (R values).

    Args:
        input_dim: cepstra per frame.
        num_components: UBM size K (a power of two).
        rank: R, the i-vector dimension (the rank of T).
        deltas: derivatives appended to the cepstra.
        top_c: components per frame kept in the posteriors (None: all).

    Example:
        >>> encoder = IVectorExtractor(input_dim=4, num_components=2, rank=3)
        >>> encoder(torch.randn(2, 50, 4)).shape  # untrained: a random T
        torch.Size([2, 3])
    """

    def __init__(self, input_dim: int, num_components: int = 256, rank: int = 100, deltas: int = 2,
                 top_c: int | None = None):
        super().__init__(input_dim, num_components, deltas, top_c)
        if not 0 < rank <= num_components * self.frame_dim:
            raise ConfigError(f"rank must be between 1 and the supervector size {num_components * self.frame_dim}, "
                              f"not {rank}")
        self.embedding_dim = rank
        # Freshly built, T is small and random (seeded by torch's generator, as neural weights are), the
        # start EM also uses: an untrained extractor gives random projections, not zeros.
        self.register_buffer("total_variability",
                             0.1 * torch.randn(num_components, self.frame_dim, rank, dtype=torch.float64))

    def set_total_variability(self, matrix: np.ndarray) -> None:
        """Store a trained T (K, D, R)."""
        self.total_variability.copy_(torch.from_numpy(np.asarray(matrix, dtype=np.float64)))
        self.reset_cache()

    def reset_cache(self) -> None:
        super().reset_cache()
        self._host_total_variability: np.ndarray | None = None
        self._grams: np.ndarray | None = None

    @property
    def host_total_variability(self) -> np.ndarray:
        """T as a numpy array, made once per T (on a GPU the buffer is copied to the host, not on every call)."""
        if self._host_total_variability is None:
            self._host_total_variability = host_array(self.total_variability)
        return self._host_total_variability

    @property
    def grams(self) -> np.ndarray:
        """``T_c' T_c`` of every component, computed once per T (the bulk of one extraction otherwise)."""
        if self._grams is None:
            self._grams = component_grams(self.host_total_variability)
        return self._grams

    def fit(self, recordings: list[np.ndarray], options: dict[str, Any], seed: int = 0,
            report: StepReport | None = None) -> None:
        """The UBM, then T by ``tv_iterations`` EM steps on every training recording's statistics."""
        super().fit(recordings, options, seed, report)
        self.set_total_variability(train_total_variability(
            self.statistics(recordings), self.embedding_dim, iterations=options["tv_iterations"], seed=seed,
            on_iteration=None if report is None else lambda i, ll: report("total variability", i, ll)))

    def statistics(self, segments: list[np.ndarray]) -> BaumWelch:
        """Centred, whitened Baum-Welch statistics of processed segments."""
        return BaumWelch.of(self.ubm, segments, top_c=self.top_c)

    def embed_frames(self, segments: list[np.ndarray]) -> np.ndarray:
        return extract_ivectors(self.statistics(segments), self.host_total_variability, grams=self.grams)

"""GMM-UBM (Reynolds, Quatieri and Dunn 2000) as an encoder: MAP adaptation and the top-C likelihood ratio.

Verification with a GMM-UBM run folder (``voxprint eval``, ``verify``) scores the test's frames with
the log-likelihood ratio of the speaker's MAP-adapted model against the UBM over each frame's top-C
UBM components (:class:`~voxprint.inference.frame_scoring.FrameScoringModel`): the paper's test, not
an embedding comparison. Enrollment from several recordings pools their statistics before adapting.

The verbs that need one fixed-size vector per recording (``embed``, the speaker store behind
``identify``, diarization) get the GMM mean supervector of Campbell, Sturim and Reynolds ("Support
vector machines using GMM supervectors", IEEE SPL 2006): ``sqrt(w_c) (m_c - mu_c) / sigma_c`` of the
MAP-adapted means m, whose inner product is their KL-divergence kernel.
"""
from __future__ import annotations

import numpy as np

from voxprint.classical.encoder import StatisticalEncoder
from voxprint.classical.gmm import FrameStatistics, map_adapt_means
from voxprint.errors import ConfigError
from voxprint.registry import MODELS


@MODELS.register("gmm_ubm")
class GmmUbm(StatisticalEncoder):
    """A UBM whose speaker models are MAP adaptations of its means.

    Args:
        input_dim: cepstra per frame.
        num_components: UBM size K (a power of two).
        relevance_factor: r of the MAP adaptation (Reynolds et al. use 16).
        top_c: Gaussians per frame in the likelihood ratio (Reynolds et al. use 5).
        deltas: derivatives appended to the cepstra.

    Attributes:
        scores_frames: True: verification scores frames against adapted models, not embeddings.

    Example:
        >>> import torch
        >>> encoder = GmmUbm(input_dim=4, num_components=2)
        >>> encoder(torch.randn(1, 50, 4)).shape  # the mean supervector: K * D values
        torch.Size([1, 24])
    """

    scores_frames = True

    def __init__(self, input_dim: int, num_components: int = 256, relevance_factor: float = 16.0, top_c: int = 5,
                 deltas: int = 2):
        super().__init__(input_dim, num_components, deltas, top_c)
        if relevance_factor < 0:
            raise ConfigError(f"relevance_factor must be >= 0, not {relevance_factor}")
        self.relevance_factor = float(relevance_factor)
        self.embedding_dim = num_components * self.frame_dim

    def pooled_statistics(self, segments: list[np.ndarray]) -> FrameStatistics:
        """Statistics of all the segments' frames together (a speaker enrolled from several recordings)."""
        stats = [self.ubm.statistics(frames) for frames in segments]
        return sum(stats[1:], stats[0])

    def speaker_means(self, segments: list[np.ndarray]) -> np.ndarray:
        """MAP-adapted means (K, D) of a speaker from the processed frames of their recordings."""
        return map_adapt_means(self.ubm, self.pooled_statistics(segments), self.relevance_factor)

    def llr(self, speaker_means: np.ndarray, frames: np.ndarray) -> float:
        """Mean per-frame top-C log-likelihood ratio of processed test frames."""
        return self.ubm.llr_top_c(speaker_means, frames, top_c=self.top_c)

    def embed_frames(self, segments: list[np.ndarray]) -> np.ndarray:
        ubm = self.ubm
        scale = np.sqrt(ubm.weights)[:, None] / np.sqrt(ubm.variances)
        rows = [(scale * (self.speaker_means([frames]) - ubm.means)).reshape(-1) for frames in segments]
        return np.stack(rows)

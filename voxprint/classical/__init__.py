"""Classical speaker models: the GMM-UBM (Reynolds et al. 2000) and the i-vector (Dehak et al. 2011).

The maths lives here in numpy (:mod:`~voxprint.classical.gmm`, :mod:`~voxprint.classical.ivector`,
:mod:`~voxprint.classical.frames`); the registered encoders that make them systems like the neural ones
are in :mod:`voxprint.models.gmm_ubm` and :mod:`voxprint.models.ivector`, and their EM training in
:mod:`voxprint.training.statistical`.
"""
from voxprint.classical.frames import add_deltas, classical_frames, mean_variance_normalise
from voxprint.classical.gmm import DiagonalGMM, FrameStatistics, map_adapt_means, train_ubm
from voxprint.classical.ivector import BaumWelch, extract_ivectors, ivector_posteriors, train_total_variability

__all__ = [
    "BaumWelch",
    "DiagonalGMM",
    "FrameStatistics",
    "add_deltas",
    "classical_frames",
    "extract_ivectors",
    "ivector_posteriors",
    "map_adapt_means",
    "mean_variance_normalise",
    "train_total_variability",
    "train_ubm",
]

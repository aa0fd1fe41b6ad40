"""Verification metrics (EER, minDCF, DET curves) and DET plots."""
from voxprint.metrics.plots import plot_det
from voxprint.metrics.verification import (
    VerificationResult,
    compute_eer,
    compute_min_dcf,
    det_curve,
    evaluate_scores,
)

__all__ = [
    "VerificationResult",
    "compute_eer",
    "compute_min_dcf",
    "det_curve",
    "evaluate_scores",
    "plot_det",
]

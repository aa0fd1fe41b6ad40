"""Scoring back-ends: cosine scoring (:mod:`.scoring`), the rows of an embedding table (:mod:`.rows`);
score normalisation (:mod:`.score_norm`), LDA (:mod:`.lda`), PLDA (:mod:`.plda`), calibration
(:mod:`.calibration`) and a model's stored back-end (:mod:`.backend`) in their modules, imported on
demand because they pull in scipy and scikit-learn. Trial lists are in :mod:`voxprint.data.trials`."""
from voxprint.backends.scoring import (
    add_enrollment_models,
    cosine_score_trials,
    cosine_similarity,
    mean_embedding,
)

__all__ = [
    "add_enrollment_models",
    "cosine_score_trials",
    "cosine_similarity",
    "mean_embedding",
]

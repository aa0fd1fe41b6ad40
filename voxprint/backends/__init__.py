"""Scoring back-ends: trial lists, cosine scoring and score files (here); score normalisation
(:mod:`.score_norm`), LDA + PLDA (:mod:`.plda`) and calibration (:mod:`.calibration`) in their modules,
imported on demand because they pull in scipy and scikit-learn."""
from voxprint.backends.scoring import (
    Trials,
    cosine_score_trials,
    cosine_similarity,
    mean_embedding,
    read_trials,
    write_scores,
)

__all__ = [
    "Trials",
    "cosine_score_trials",
    "cosine_similarity",
    "mean_embedding",
    "read_trials",
    "write_scores",
]

"""Scoring back-ends: trial lists, cosine scoring and score files."""
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

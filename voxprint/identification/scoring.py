"""Score every test embedding against every speaker model: the one interface identification is measured through.

A scorer maps ``(models (M, d), tests (T, d))`` to a ``(T, M)`` score matrix. :func:`backend_scorer` wraps
a model's back-end (cosine, AS-norm or PLDA, calibrated or not) exactly as the speaker store scores
with it; :func:`cosine_scorer` is plain cosine, the standard use of peers such as Resemblyzer.

Example:
    >>> models = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> cosine_scorer(models, np.array([[0.6, 0.8]])).tolist()
    [[0.6, 0.8]]
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from voxprint.backends.rows import as_rows, unit_rows

__all__ = ["Scorer", "backend_scorer", "cosine_scorer"]

#: ``scorer(models, tests) -> (len(tests), len(models))`` scores.
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def cosine_scorer(models: np.ndarray, tests: np.ndarray) -> np.ndarray:
    """Cosine of every test row with every model row.

    Args:
        models: ``(M, d)`` speaker models.
        tests: ``(T, d)`` test embeddings.

    Returns:
        ``(T, M)`` cosines.
    """
    m = unit_rows(as_rows(models, "speaker models"), "speaker models")
    t = unit_rows(as_rows(tests, "test embeddings"), "test embeddings")
    return (t @ m.T).astype(np.float64)


def backend_scorer(backend: Any) -> Scorer:
    """A scorer that uses ``backend`` (a :class:`~voxprint.backends.backend.ScoringBackend`) as the speaker
    store does: each speaker model is one row (the normalised mean of its enrollment embeddings).

    Args:
        backend: the back-end, e.g. ``model.backend``.

    Returns:
        The scorer.
    """
    from voxprint.data.trials import Trials

    def score(models: np.ndarray, tests: np.ndarray) -> np.ndarray:
        models, tests = as_rows(models, "speaker models"), as_rows(tests, "test embeddings")
        model_ids = np.char.add("m", np.arange(len(models)).astype(str))
        test_ids = np.char.add("t", np.arange(len(tests)).astype(str))
        trials = Trials(labels=None, enroll=np.tile(model_ids, len(tests)), test=np.repeat(test_ids, len(models)))
        ids = model_ids.tolist() + test_ids.tolist()
        scores = backend.score_trials(ids, np.concatenate([models, tests]), trials)
        return np.asarray(scores, dtype=np.float64).reshape(len(tests), len(models))

    return score

"""Speaker models and their scores: one definition for the speaker store and for the eval-id protocol.

A back-end needs its own kind of speaker model, made from a speaker's enrollment embeddings
(:func:`speaker_scoring` picks it):

- :class:`CentroidScoring`, for cosine back-ends (with or without S-norm / AS-norm): the normalised mean of
  the unit enrollment embeddings, scored as one embedding;
- :class:`PLDAScoring`, for the PLDA back-end: the exact ``n``-utterance PLDA model, whose sufficient
  statistics are the number ``n`` of enrollments and the mean of their embeddings in the PLDA space; a
  test scores against it by a closed form (:meth:`~voxprint.backends.plda.TwoCovariancePLDA.speaker_vectors`),
  so its posterior of the speaker sharpens as enrollments are added instead of pooling them into one
  utterance.

Both say how a gallery is searched (:mod:`voxprint.store.index`): a vector per speaker and a vector per
test whose inner product ranks speakers exactly as the back-end's raw score does (the cosine; the PLDA
log-likelihood ratio).

A *scorer* maps ``(enrollments, tests (T, d))`` to a ``(T, M)`` score matrix, where ``enrollments`` holds
each of the ``M`` speakers' enrollment embeddings (a list of ``(n_i, d)`` arrays; a 2-D array is one
single-utterance speaker per row). :func:`backend_scorer` wraps a model's back-end (cosine, AS-norm or PLDA,
calibrated or not) exactly as the speaker store scores with it; :func:`cosine_scorer` is plain cosine of the
centroid, the standard use of peers such as Resemblyzer.

Example:
    >>> models = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> cosine_scorer(models, np.array([[0.6, 0.8]])).tolist()
    [[0.6, 0.8]]
    >>> cosine_scorer([np.array([[1.0, 0.0], [0.0, 1.0]])], np.array([[0.6, 0.8]])).round(4).tolist()
    [[0.9899]]
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

from voxprint.backends.rows import as_matrix, as_rows, unit_rows
from voxprint.backends.scoring import mean_embedding
from voxprint.errors import DataError

__all__ = ["CentroidScoring", "Enrollments", "FusedScoring", "PLDAScoring", "Scorer", "SpeakerScoring",
           "backend_scorer", "cosine_scorer", "enrollment_groups", "speaker_scoring"]

#: Each speaker's enrollment embeddings: ``(n_i, d)`` arrays, or one ``(M, d)`` array of one-utterance speakers.
Enrollments = Sequence[np.ndarray] | np.ndarray
#: ``scorer(enrollments, tests) -> (len(tests), len(enrollments))`` scores.
Scorer = Callable[[Enrollments, np.ndarray], np.ndarray]


def enrollment_groups(enrollments: Enrollments) -> list[np.ndarray]:
    """Each speaker's enrollment embeddings as a non-empty ``(n_i, d)`` array.

    Example:
        >>> [g.shape for g in enrollment_groups(np.zeros((2, 3)) + 1)]
        [(1, 3), (1, 3)]
        >>> [g.shape for g in enrollment_groups([np.ones(3), np.ones((4, 3))])]
        [(1, 3), (4, 3)]
    """
    if isinstance(enrollments, np.ndarray) and enrollments.ndim == 2:
        return [as_rows(row[None, :], "enrollment embeddings") for row in enrollments]
    groups = []
    for group in enrollments:
        mat = as_matrix(group, "enrollment embeddings")
        groups.append(as_rows(mat[None, :] if mat.ndim == 1 else mat, "enrollment embeddings"))
    return groups


class SpeakerScoring:
    """How a back-end keeps and scores speaker models (see the module docstring); subclasses fill it in.

    Attributes:
        kind: ``"centroid"`` or ``"plda"``.
        metric: what the search index compares: ``"cosine"`` (unit vectors) or ``"inner_product"``.
        stores_model: whether the store keeps the model in its own column (the centroid is kept anyway).
        backend: the :class:`~voxprint.backends.backend.ScoringBackend`.
    """

    kind = ""
    metric = "cosine"
    stores_model = False

    def __init__(self, backend: Any):
        self.backend = backend

    def models(self, enrollments: Enrollments) -> tuple[np.ndarray, np.ndarray]:
        """``(M, k)`` speaker models and ``(M,)`` enrollment counts from each speaker's enrollment embeddings."""
        raise NotImplementedError

    def scores(self, models: np.ndarray, counts: np.ndarray, tests: np.ndarray) -> np.ndarray:
        """``(T, M)`` back-end scores (its calibration applied when it has one) of tests against speaker models."""
        raise NotImplementedError

    def score(self, enroll: np.ndarray, test: np.ndarray) -> float:
        """The score of one test embedding against one speaker enrolled from the rows of ``enroll`` (what
        ``verify`` computes, as the speaker store scores a stored speaker)."""
        models, counts = self.models([np.atleast_2d(enroll)])
        return float(self.scores(models, counts, np.atleast_2d(test))[0, 0])

    def search_vectors(self, models: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``(M, k')`` rows whose inner product with :meth:`query_vectors` ranks like the back-end's raw score."""
        raise NotImplementedError

    def query_vectors(self, tests: np.ndarray) -> np.ndarray:
        """``(T, k')`` rows of test embeddings for :meth:`search_vectors`."""
        raise NotImplementedError

    @property
    def tag(self) -> bytes:
        """What a stored model of this back-end is tagged with, so one made by another back-end is not used."""
        return self.kind.encode()

    def model_width(self, embedding_dim: int) -> int:
        """The size of one speaker model of this back-end for embeddings of ``embedding_dim`` values."""
        return embedding_dim

    def encode(self, model: np.ndarray, count: int) -> bytes | None:
        """The stored form of one speaker model: :attr:`tag`, then ``count`` and the model as float64 (None when
        nothing beyond the centroid is stored)."""
        if not self.stores_model:
            return None
        return self.tag + np.concatenate(([float(count)], np.asarray(model, dtype=np.float64))).tobytes()

    def decode(self, blob: bytes | None, count: int) -> np.ndarray | None:
        """A stored model, or None when ``blob`` is missing, damaged (wrong size, non-finite), of another back-end
        (another tag) or of another enrollment count: the caller then derives it again."""
        if not self.stores_model or blob is None:
            return None
        blob = bytes(blob)
        # A stored model's width does not depend on the embedding size (PLDA: its dimension; a fusion: its parts').
        if len(blob) != len(self.tag) + 8 * (self.model_width(0) + 1) or blob[:len(self.tag)] != self.tag:
            return None
        values = np.frombuffer(blob, dtype=np.float64, offset=len(self.tag))
        return values[1:].copy() if values[0] == count and np.isfinite(values).all() else None


class CentroidScoring(SpeakerScoring):
    """Cosine back-ends: the model is the normalised mean of the unit enrollment embeddings (the store's
    centroid column), scored as one embedding by the back-end (S-norm / AS-norm and calibration included).

    Example:
        >>> from voxprint.backends.backend import ScoringBackend
        >>> scoring = CentroidScoring(ScoringBackend())
        >>> models, counts = scoring.models([np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0]])])
        >>> scoring.scores(models, counts, np.array([[0.0, 2.0]])).round(4).tolist()
        [[0.7071, 1.0]]
    """

    kind = "centroid"

    def models(self, enrollments: Enrollments) -> tuple[np.ndarray, np.ndarray]:
        groups = enrollment_groups(enrollments)
        if not groups:
            raise DataError("no speaker to make a model of")
        models = np.stack([mean_embedding(g) for g in groups]).astype(np.float32)
        return models, np.array([len(g) for g in groups], dtype=np.int64)

    def scores(self, models: np.ndarray, counts: np.ndarray, tests: np.ndarray) -> np.ndarray:
        from voxprint.data.trials import Trials

        models, tests = as_rows(models, "speaker models"), as_rows(tests, "test embeddings")
        model_ids = np.char.add("m", np.arange(len(models)).astype(str))
        test_ids = np.char.add("t", np.arange(len(tests)).astype(str))
        trials = Trials(labels=None, enroll=np.tile(model_ids, len(tests)), test=np.repeat(test_ids, len(models)))
        ids = model_ids.tolist() + test_ids.tolist()
        scores = self.backend.score_trials(ids, np.concatenate([models, tests]), trials)
        return np.asarray(scores, dtype=np.float64).reshape(len(tests), len(models))

    def search_vectors(self, models: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return models

    def query_vectors(self, tests: np.ndarray) -> np.ndarray:
        tests = as_matrix(tests, "test embeddings")
        return unit_rows(as_rows(tests[None, :] if tests.ndim == 1 else tests, "test embeddings"), "test embeddings")


class PLDAScoring(SpeakerScoring):
    """The PLDA back-end: the exact ``n``-utterance model, kept as ``n`` and the mean of the enrollments in the
    PLDA space (:meth:`~voxprint.backends.plda.PLDABackend.enrollment_mean`), scored by the closed form of
    :meth:`~voxprint.backends.plda.TwoCovariancePLDA.speaker_vectors` and calibrated by the back-end's
    calibration when it has one. Searched by inner product: a speaker's row is ``w(n, f)`` and a test's
    ``q(t)`` (in the coordinates of :meth:`~voxprint.backends.plda.TwoCovariancePLDA.search_vectors`), so
    the index's scores are the exact uncalibrated LLRs.

    Stored form: 8 bytes of the back-end's :meth:`~voxprint.backends.plda.PLDABackend.fingerprint`, then
    ``n`` and the mean as float64; a model made with another back-end or for another count is not used.
    """

    kind = "plda"
    metric = "inner_product"
    stores_model = True

    def __init__(self, backend: Any):
        super().__init__(backend)
        self.plda = backend.plda

    @functools.cached_property
    def tag(self) -> bytes:
        """The back-end's fingerprint that stored models carry (hashing every parameter: only when a model is
        stored or read, not on every score)."""
        return bytes.fromhex(self.plda.fingerprint()[:16])

    def model_width(self, embedding_dim: int) -> int:
        return int(self.plda.dim)

    def models(self, enrollments: Enrollments) -> tuple[np.ndarray, np.ndarray]:
        groups = enrollment_groups(enrollments)
        if not groups:
            raise DataError("no speaker to make a model of")
        counts = np.array([len(g) for g in groups], dtype=np.int64)
        # One transform for every enrollment, then per-speaker means (the PLDA space is where they average).
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        sums = np.add.reduceat(self.plda.transform(np.concatenate(groups)), starts, axis=0)
        return sums / counts[:, None], counts

    def raw_scores(self, models: np.ndarray, counts: np.ndarray, tests: np.ndarray) -> np.ndarray:
        """``(T, M)`` exact PLDA log-likelihood ratios, before the back-end's calibration."""
        tests = as_matrix(tests, "test embeddings")
        return self.plda.score_models(models, counts, tests[None, :] if tests.ndim == 1 else tests)

    def scores(self, models: np.ndarray, counts: np.ndarray, tests: np.ndarray) -> np.ndarray:
        raw = self.raw_scores(models, counts, tests)
        calibration = self.backend.calibration
        return raw if calibration is None else np.asarray(calibration.transform(raw), dtype=np.float64)

    def search_vectors(self, models: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return self.plda.plda.search_vectors(models, counts)

    def query_vectors(self, tests: np.ndarray) -> np.ndarray:
        tests = as_matrix(tests, "test embeddings")
        return self.plda.plda.search_queries(self.plda.transform(tests[None, :] if tests.ndim == 1 else tests))



class FusedScoring(SpeakerScoring):
    """A fusion of models (:class:`~voxprint.backends.fused.FusedBackend`): each part keeps the speaker model
    its own back-end needs, made from its slice of the enrollments, and a test's score is the fusion of the
    parts' scores. A speaker's model is the parts' models side by side.

    Searched by inner product: a part's score is ``scale_i * (row_i . query_i) + offset_i`` (its linear
    calibration, or none) and the fusion weighs it by ``w_i``, so rows ``[w_i scale_i row_i]`` and queries
    ``[query_i]`` rank speakers exactly by the fused score when every part is searched exactly (PLDA parts,
    plain cosine parts); a normalised-cosine part ranks by its cosine, and the store rescores the candidates.

    Stored form: 8 bytes of a tag of the parts' back-ends and the fusion weights, then ``n`` and the model as
    float64.
    """

    kind = "fused"
    metric = "inner_product"
    stores_model = True

    def __init__(self, backend: Any):
        super().__init__(backend)
        self.parts = [speaker_scoring(part) for part in backend.parts]
        self.widths = [part.model_width(dim) for part, dim in zip(self.parts, backend.dims)]

    @functools.cached_property
    def tag(self) -> bytes:
        digest = hashlib.sha256(b"".join(part.tag for part in self.parts))
        digest.update(np.asarray(self.backend.fusion.weights, dtype=np.float64).tobytes())
        return digest.digest()[:8]

    def model_width(self, embedding_dim: int) -> int:
        return sum(self.widths)

    def _model_parts(self, models: np.ndarray) -> list[np.ndarray]:
        models = as_matrix(models, "speaker models")
        models = models[None, :] if models.ndim == 1 else models
        bounds = np.cumsum((0, *self.widths))
        return [models[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def _test_parts(self, tests: np.ndarray) -> list[np.ndarray]:
        return self.backend.split(tests)

    def models(self, enrollments: Enrollments) -> tuple[np.ndarray, np.ndarray]:
        groups = enrollment_groups(enrollments)
        if not groups:
            raise DataError("no speaker to make a model of")
        per_part = zip(*(self.backend.split(group) for group in groups))  # part -> each speaker's rows
        made = [part.models(list(rows)) for part, rows in zip(self.parts, per_part)]
        return np.concatenate([m.astype(np.float64) for m, _ in made], axis=1), made[0][1]

    def scores(self, models: np.ndarray, counts: np.ndarray, tests: np.ndarray) -> np.ndarray:
        columns = [part.scores(m, counts, t) for part, m, t in
                   zip(self.parts, self._model_parts(models), self._test_parts(tests))]
        stacked = np.stack(columns, axis=-1)
        return self.backend.fusion.transform(stacked.reshape(-1, len(columns))).reshape(stacked.shape[:2])

    def search_vectors(self, models: np.ndarray, counts: np.ndarray) -> np.ndarray:
        rows = []
        for part, m, weight in zip(self.parts, self._model_parts(models), self.backend.fusion.weights):
            slope = getattr(part.backend.calibration, "scale", 1.0)  # a linear calibration's slope
            rows.append(weight * slope * np.asarray(part.search_vectors(m, counts), dtype=np.float64))
        return np.concatenate(rows, axis=1)

    def query_vectors(self, tests: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(part.query_vectors(t), dtype=np.float64)
                               for part, t in zip(self.parts, self._test_parts(tests))], axis=1)


#: The speaker models of each back-end kind; any other kind (cosine, normalised or not) keeps centroids.
SCORINGS: dict[str, type[SpeakerScoring]] = {"plda": PLDAScoring, "fused": FusedScoring}


def speaker_scoring(backend: Any) -> SpeakerScoring:
    """The speaker models a back-end needs: :class:`PLDAScoring` for PLDA, :class:`FusedScoring` for a fusion of
    models, :class:`CentroidScoring` otherwise.

    Example:
        >>> from voxprint.backends.backend import ScoringBackend
        >>> speaker_scoring(ScoringBackend()).kind
        'centroid'
    """
    return SCORINGS.get(getattr(backend, "kind", "cosine"), CentroidScoring)(backend)


def cosine_scorer(enrollments: Enrollments, tests: np.ndarray) -> np.ndarray:
    """Cosine of every test row with every speaker's centroid (normalised mean of its unit embeddings).

    Args:
        enrollments: each speaker's enrollment embeddings (see the module docstring).
        tests: ``(T, d)`` test embeddings.

    Returns:
        ``(T, M)`` cosines.
    """
    m = np.stack([mean_embedding(g) for g in enrollment_groups(enrollments)])
    t = unit_rows(as_rows(tests, "test embeddings"), "test embeddings")
    return (t @ m.T).astype(np.float64)


def backend_scorer(backend: Any) -> Scorer:
    """A scorer that uses ``backend`` (a :class:`~voxprint.backends.backend.ScoringBackend`) as the speaker
    store does: each speaker's model is :func:`speaker_scoring`'s (the exact ``n``-utterance model for PLDA,
    the centroid for cosine), scored with :meth:`SpeakerScoring.scores`.

    Args:
        backend: the back-end, e.g. ``model.backend``.

    Returns:
        The scorer.
    """
    scoring = speaker_scoring(backend)

    def score(enrollments: Enrollments, tests: np.ndarray) -> np.ndarray:
        models, counts = scoring.models(enrollments)
        return scoring.scores(models, counts, as_rows(tests, "test embeddings"))

    return score

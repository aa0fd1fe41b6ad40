"""Spherical k-means: cosine clustering of embeddings on the unit sphere.

Rows and centroids live on the unit sphere and each row joins its most similar centroid; a centroid
is the normalised mean of its members (Dhillon & Modha, 2001). Seeding is k-means++ under the cosine
distance ``1 - cos``, repeated ``restarts`` times from one seeded generator; the run with the highest
total cosine to its centroids wins, so a result depends only on the data and the seed.

Used to clean speaker labels (:mod:`voxprint.data.cleaning`, K = 2 per speaker), and meant for
diarization (clustering the segments of one recording).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from voxprint.backends.rows import as_rows, unit_rows

__all__ = ["SphericalKMeans", "cosine_silhouette", "spherical_kmeans"]


class SphericalKMeans(NamedTuple):
    """The result of :func:`spherical_kmeans`.

    Attributes:
        labels: ``(n,)`` cluster of each row, in ``0 .. k-1``.
        centroids: ``(k, d)`` unit-length centroids.
        objective: Total cosine of the rows to their centroids (higher is tighter).
    """

    labels: np.ndarray
    centroids: np.ndarray
    objective: float

    @property
    def sizes(self) -> np.ndarray:
        """``(k,)`` number of rows in each cluster (a cluster may be empty when rows coincide)."""
        return np.bincount(self.labels, minlength=len(self.centroids))


def _plus_plus_init(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with the cosine distance ``1 - cos``: far-apart rows are likely seeds."""
    centroids = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        distance = np.clip(1.0 - (x @ np.stack(centroids).T).max(axis=1), 0.0, None)
        total = distance.sum()
        index = rng.choice(len(x), p=distance / total) if total > 0 else rng.integers(len(x))
        centroids.append(x[index])
    return np.stack(centroids)


def _lloyd(x: np.ndarray, centroids: np.ndarray, iterations: int) -> SphericalKMeans:
    """Lloyd iterations from the given centroids until the assignments settle (or ``iterations``)."""
    labels = np.full(len(x), -1)
    for _ in range(iterations):
        similarity = x @ centroids.T
        new_labels = similarity.argmax(axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for j in range(len(centroids)):
            members = x[labels == j]
            if len(members):
                mean = members.sum(axis=0)
                norm = np.linalg.norm(mean)
                # Members summing to zero (antipodal pairs) leave the direction undefined: keep the old one.
                centroids[j] = mean / norm if norm > 0 else centroids[j]
            else:
                # An emptied cluster restarts at the row its own centroid explains worst.
                worst = (x * centroids[labels]).sum(axis=1).argmin()
                centroids[j] = x[worst]
                labels[worst] = j
    objective = float((x * centroids[labels]).sum())
    return SphericalKMeans(labels, centroids, objective)


def spherical_kmeans(x: ArrayLike, k: int = 2, iterations: int = 50, seed: int = 0,
                     restarts: int = 4) -> SphericalKMeans:
    """Cosine k-means of the rows of ``x`` (see the module docstring).

    Args:
        x: ``(n, d)`` matrix of finite, non-zero rows (e.g. embeddings); their lengths are ignored.
        k: Number of clusters (``1 <= k <= n``).
        iterations: Maximum Lloyd iterations per restart (it stops earlier when assignments settle).
        seed: Seed of the initialisation.
        restarts: Number of seedings tried.

    Returns:
        SphericalKMeans: ``labels`` (n,), unit-norm ``centroids`` (k, d) and the ``objective``;
            it unpacks as ``labels, centroids, objective``.

    Raises:
        ValueError: If ``k`` is not between 1 and the number of rows.
        DataError: If ``x`` is not a non-empty ``(n, d)`` matrix, or a row is zero or non-finite.

    Example:
        >>> x = np.array([[1.0, 0.1], [2.0, -0.1], [0.1, 1.0], [-0.1, 3.0]])
        >>> labels, centroids, _ = spherical_kmeans(x, k=2)
        >>> bool(labels[0] == labels[1] != labels[2] == labels[3])
        True
        >>> np.allclose(np.linalg.norm(centroids, axis=1), 1.0)
        True
    """
    unit = unit_rows(as_rows(x, "rows to cluster").astype(np.float64, copy=False), "rows to cluster",
                     why="have zero length and no direction to cluster")
    if not 1 <= k <= len(unit):
        raise ValueError(f"k must be between 1 and the number of rows ({len(unit)}), got {k}")
    rng = np.random.default_rng(seed)
    best: SphericalKMeans | None = None
    for _ in range(max(1, restarts)):
        run = _lloyd(unit, _plus_plus_init(unit, k, rng), iterations)
        if best is None or run.objective > best.objective + 1e-12:
            best = run
    assert best is not None
    return best


def cosine_silhouette(x: ArrayLike, labels: ArrayLike) -> float:
    """Mean silhouette of a clustering under the cosine distance ``1 - cos`` (scikit-learn's).

    Near 1 when the clusters are tight and far apart, near 0 when they overlap; it tells a real
    split from an arbitrary one.

    Args:
        x: ``(n, d)`` rows that were clustered.
        labels: ``(n,)`` cluster of each row, with at least two clusters and fewer than ``n``.

    Returns:
        float: The silhouette score, in ``[-1, 1]``.

    Example:
        >>> x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
        >>> round(cosine_silhouette(x, [0, 0, 1, 1]), 2)
        0.99
    """
    from sklearn.metrics import silhouette_score  # slow import, needed only here

    return float(silhouette_score(x, labels, metric="cosine"))

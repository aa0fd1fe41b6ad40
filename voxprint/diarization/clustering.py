"""Clustering the window embeddings of one recording into speakers.

Four methods, all on unit-length embeddings in time order (docs/benchmarks.md, "Diarization",
compares them on simulated conversations of unseen speakers):

- ``spectral`` (the default): spectral clustering of a **nearest-neighbour graph** (the p-neighbour
  pruning of Park et al., "Auto-Tuning Spectral Clustering for Speaker Diarization Using Normalized
  Maximum Eigengap", 2019, as WeSpeaker uses it): each window keeps its :data:`NEIGHBOURS` most
  similar windows (cosine, negatives clipped to 0), the graph is symmetrised, and the eigenvalues of
  its normalised Laplacian ``I - D^-1/2 A D^-1/2`` give the count by the largest eigengap
  ``lambda_k - lambda_(k-1)``; the rows of the first ``k`` eigenvectors are clustered with cosine
  k-means (:func:`voxprint.clustering.spherical_kmeans`). Windows that share audio (overlapping
  windows) may not be each other's neighbours: otherwise each window's nearest neighbours are just
  its two overlapping ones and a turn becomes its own community. The estimated count is then checked
  cluster by cluster: two clusters whose windows together pass the single-speaker test below are one
  voice (a speaker whose turns sound different enough to form two communities of the graph) and are
  merged, the most alike pair first. With the constants already chosen for that test, this raised the
  exact-count rate on the evaluation half and left the calibration half's unchanged.
- ``wang``: the affinity refinement of Wang et al. ("Speaker Diarization with LSTM", ICASSP 2018,
  section 2.3), configured as Google's ``spectralcluster`` package does for that paper: the affinity
  ``(1 + cos) / 2`` goes through *crop diagonal*, *Gaussian blur* (sigma 1 window), *row-wise
  thresholding* (entries below 95 % of the row maximum times 0.01), *symmetrisation* ``max(A, A^T)``,
  *diffusion* ``A A^T`` and *row-wise max normalisation*; the count is the largest eigengap ratio
  ``lambda_k / lambda_(k+1)`` of the refined matrix (eigenvalues below 0.01 ignored).
- ``spectralcluster``: that package itself (``icassp2018_clusterer`` settings), for comparison; it is
  optional (``pip install spectralcluster``).
- ``ahc``: agglomerative clustering (average linkage) of cosine scores, stopped when the best
  remaining merge's average cosine falls below :data:`AHC_THRESHOLD`.

With 1.5 s windows of the bundled model, a speaker's windows from different turns agree at a median
cosine of about 0.45 and two speakers' at about 0.0, but the tails overlap, and Wang et al.'s 95 %
row threshold keeps so few entries that a speaker's turns fall apart into several clusters.

One speaker or several: the eigengap cannot say "one" well (two speakers' graph is sometimes less
connected inside than one speaker's), so with ``min_speakers=1`` a recording is called single-speaker
first when either test says so: the best 2-way split of its windows (cosine k-means) leaves two
groups whose centroids are at least :data:`SINGLE_SPEAKER_COSINE` alike, or the second-smallest
eigenvalue of the neighbour graph's normalised Laplacian (its algebraic connectivity: near 0 for two
weakly linked groups, larger for one well-mixed group) is above :data:`SINGLE_SPEAKER_CONNECTIVITY`.
Each test raised the exact-count rate on the calibration recordings (20 of the 64 are one speaker), and
both together did best; ``bench/diarization.py --calibrate`` prints the sweep (a split cosine of 2.0 switches
the split test off). The ``ahc`` threshold decides it by itself.

After ``spectral`` and ``wang``, windows are reassigned to their closest cluster centroid until no
window moves (k-means steps in the embedding space), which fixes windows that the graph placed by
their neighbours alone. ``num_speakers`` fixes the count; ``min_speakers`` and ``max_speakers``
bound the estimate. :data:`NEIGHBOURS`, :data:`SINGLE_SPEAKER_CONNECTIVITY`, :data:`SINGLE_SPEAKER_COSINE`
and :data:`AHC_THRESHOLD` were chosen, with the pipeline's fusion weight, on simulated conversations of half
of the speechocean762 dev speakers, comparing windows as the pipeline does by default (bundled ECAPA fused
with the bundled i-vector; ``bench/diarization.py --calibrate``); the benchmark uses the other half.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter

from voxprint.backends.rows import as_rows, unit_rows
from voxprint.clustering import spherical_kmeans
from voxprint.errors import VoxprintError

__all__ = ["AHC_THRESHOLD", "NEIGHBOURS", "SINGLE_SPEAKER_CONNECTIVITY", "SINGLE_SPEAKER_COSINE",
           "agglomerative_clustering",
           "cluster_embeddings", "eigengap_count", "neighbour_graph", "refine_affinity", "spectral_clustering",
           "wang_clustering"]

ClusterMethod = Literal["spectral", "wang", "spectralcluster", "ahc"]
METHODS = ("spectral", "wang", "spectralcluster", "ahc")

#: Neighbours each window keeps in the graph (at least 1 % of the windows on long recordings).
NEIGHBOURS = 10
#: ... but at most one in this many windows: in a short recording a speaker may have only a handful of
#: windows, and with more neighbours than that every window links to the other voices too (a 17 s
#: two-speaker conversation then looks like one speaker).
NEIGHBOUR_SHARE = 4
#: Above this algebraic connectivity of the neighbour graph a recording is one speaker.
SINGLE_SPEAKER_CONNECTIVITY = 0.3
#: ... and so it is when the two halves of its best 2-way split are at least this alike (cosine of centroids).
SINGLE_SPEAKER_COSINE = 0.65
#: Average-linkage stopping threshold on the cosine of the pipeline's 1.5 s window vectors (bundled model + i-vector).
AHC_THRESHOLD = 0.2
#: Eigenvalues below this never count as a speaker in Wang et al.'s eigengap (``spectralcluster``'s value).
STOP_EIGENVALUE = 1e-2
#: Above this many windows the graph's eigenvectors come from a sparse solver.
DENSE_LIMIT = 1500
#: The most windows ``wang``, ``spectralcluster`` and ``ahc`` take (their n x n matrices; about 37 min of
#: speech with 0.75 s hops); ``spectral`` has no limit.
MAX_DENSE_WINDOWS = 3000


def _unit(embeddings: np.ndarray) -> np.ndarray:
    rows = as_rows(embeddings, "embeddings to cluster").astype(np.float64, copy=False)
    return unit_rows(rows, "embeddings to cluster", why="have zero length")


def _count_bounds(n: int, num_speakers: int | None, min_speakers: int, max_speakers: int) -> tuple[int, int]:
    """The allowed speaker counts for ``n`` windows, checked."""
    if num_speakers is not None:
        if num_speakers < 1:
            raise VoxprintError(f"num_speakers must be at least 1, got {num_speakers}")
        min_speakers = max_speakers = num_speakers
    if min_speakers < 1 or max_speakers < min_speakers:
        raise VoxprintError(f"need 1 <= min_speakers <= max_speakers, got {min_speakers} and {max_speakers}")
    return min(min_speakers, n), min(max_speakers, n)


def neighbour_graph(unit: np.ndarray, neighbours: int = NEIGHBOURS, starts: np.ndarray | None = None,
                    ends: np.ndarray | None = None, block: int = 1024) -> "csr_matrix":
    """The symmetric nearest-neighbour affinity graph of the ``spectral`` method (a sparse matrix).

    Rows are processed ``block`` at a time, so memory grows with ``n * block``, not ``n ** 2``.

    Args:
        unit: ``(n, d)`` unit embeddings.
        neighbours: neighbours kept per window (at most a quarter of the windows, at least 3, and at least
            1 % of them on long recordings).
        starts: ``(n,)`` window start times; with ``ends``, windows that share audio are not neighbours.
        ends: ``(n,)`` window end times.
        block: rows per step.

    Returns:
        ``(n, n)`` sparse affinity: ``max(cos, 0)`` between neighbours, averaged with its transpose.

    Example:
        >>> x = np.repeat(np.eye(2), 4, axis=0) + 0.05 * np.random.default_rng(0).normal(size=(8, 2))
        >>> graph = neighbour_graph(x / np.linalg.norm(x, axis=1, keepdims=True), neighbours=3)
        >>> graph[:4, :4].nnz, graph[:4, 4:].nnz
        (12, 0)
    """
    from scipy.sparse import csr_matrix

    n = len(unit)
    keep = int(min(n - 1, max(min(neighbours, n // NEIGHBOUR_SHARE), 3, 0.01 * n)))
    if keep < 1:
        return csr_matrix((n, n))
    rows, cols, values = [], [], []
    for first in range(0, n, block):
        last = min(n, first + block)
        similarity = unit[first:last] @ unit.T
        candidates = similarity.copy()
        candidates[np.arange(last - first), np.arange(first, last)] = -np.inf
        if starts is not None and ends is not None:
            shared = (starts[first:last, None] < ends[None, :]) & (starts[None, :] < ends[first:last, None])
            candidates[shared] = -np.inf
        nearest = np.argpartition(-candidates, keep - 1, axis=1)[:, :keep]
        local = np.arange(last - first)[:, None]
        allowed = np.isfinite(candidates[local, nearest])
        rows.append(np.broadcast_to(local + first, nearest.shape)[allowed])
        cols.append(nearest[allowed])
        values.append(np.maximum(similarity[local, nearest][allowed], 0.0))
    graph = csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return ((graph + graph.T) * 0.5).tocsr()


def _laplacian_eigen(graph: "csr_matrix", count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` smallest eigenvalues (ascending) and eigenvectors of the normalised Laplacian."""
    from scipy.sparse import diags

    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = diags(1.0 / np.sqrt(np.maximum(degree, 1e-12)))
    normalised = (scale @ graph @ scale).tocsr()
    n = graph.shape[0]
    count = min(count, n)
    if n <= DENSE_LIMIT or count >= n - 1:
        from scipy.linalg import LinAlgError, eigh

        laplacian = np.eye(n) - normalised.toarray()
        try:
            return eigh(laplacian, subset_by_index=[0, count - 1])
        except LinAlgError:
            # LAPACK's subset solvers (?syevr, ?syevx) can fail outright on exactly repeated eigenvalues, which a
            # graph with isolated windows has (each adds an eigenvalue 1); the full solver does not.
            values, vectors = np.linalg.eigh(laplacian)
            return values[:count], vectors[:, :count]
    from scipy.sparse.linalg import eigsh

    # The smallest eigenvalues of I - M are the largest of the sparse M: Lanczos finds those fast.
    top, vectors = eigsh(normalised, k=count, which="LA")
    order = np.argsort(-top)
    return 1.0 - top[order], vectors[:, order]


def _kmeans_refine(unit: np.ndarray, labels: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Move each window to its closest cluster centroid until none moves (k-means steps)."""
    for _ in range(iterations):
        sums = np.zeros((int(labels.max()) + 1, unit.shape[1]))
        np.add.at(sums, labels, unit)
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        moved = (unit @ centroids.T).argmax(axis=1)
        if np.array_equal(moved, labels):
            break
        labels = _relabel(moved)
    return labels


def _connectivity(unit: np.ndarray, starts: np.ndarray | None, ends: np.ndarray | None) -> float:
    """The algebraic connectivity (second-smallest normalised Laplacian eigenvalue) of the neighbour graph."""
    if len(unit) < 3:
        return 1.0
    values, _ = _laplacian_eigen(neighbour_graph(unit, starts=starts, ends=ends), 2)
    return float(values[1])


def _single_speaker(unit: np.ndarray, connectivity: float, limit: float = SINGLE_SPEAKER_CONNECTIVITY,
                    cosine: float = SINGLE_SPEAKER_COSINE, seed: int = 0) -> bool:
    """Whether the windows are one voice (see the module docstring): a well-connected graph or an idle split."""
    if len(unit) < 3 or connectivity > limit:
        return True
    split = spherical_kmeans(unit, 2, seed=seed)
    return float(split.centroids[0] @ split.centroids[1]) >= cosine


def spectral_clustering(embeddings: np.ndarray, num_speakers: int | None = None, min_speakers: int = 1,
                        max_speakers: int = 8, starts: np.ndarray | None = None, ends: np.ndarray | None = None,
                        neighbours: int = NEIGHBOURS, connectivity: float = SINGLE_SPEAKER_CONNECTIVITY,
                        single_cosine: float = SINGLE_SPEAKER_COSINE, seed: int = 0) -> np.ndarray:
    """Spectral clustering of the nearest-neighbour graph with the eigengap count (the default method).

    Args:
        embeddings: ``(n, d)`` embeddings in time order.
        num_speakers: the number of speakers, when known.
        min_speakers: the fewest speakers to find.
        max_speakers: the most speakers to find.
        starts: ``(n,)`` window start times (with ``ends``: windows sharing audio are not neighbours).
        ends: ``(n,)`` window end times.
        neighbours: neighbours per window.
        connectivity: above this algebraic connectivity the recording is one speaker (``min_speakers=1``).
        single_cosine: ... and so it is when its 2-way split's centroids are at least this alike.
        seed: seed of the k-means initialisation.

    Returns:
        ``(n,)`` labels ``0 .. k-1`` in order of first appearance.

    Raises:
        VoxprintError: inconsistent speaker counts.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> centres = rng.normal(size=(3, 16))
        >>> x = np.repeat(centres, 30, axis=0) + 0.3 * rng.normal(size=(90, 16))
        >>> labels = spectral_clustering(x)
        >>> len(set(labels)), [len(set(labels[i:i + 30])) for i in (0, 30, 60)]
        (3, [1, 1, 1])
    """
    unit = _unit(embeddings)
    low, high = _count_bounds(len(unit), num_speakers, min_speakers, max_speakers)
    if high <= 1 or len(unit) < 3:
        return np.zeros(len(unit), dtype=np.int64) if high <= 1 else np.arange(len(unit), dtype=np.int64)
    values, vectors = _laplacian_eigen(neighbour_graph(unit, neighbours, starts, ends), high + 1)
    if low <= 1 and _single_speaker(unit, values[1], connectivity, single_cosine, seed):
        return np.zeros(len(unit), dtype=np.int64)
    low = max(low, 2)
    count = low if low == high else int(np.argmax(np.diff(values[low - 1:high + 1]))) + low
    first = spherical_kmeans(_spectral_rows(vectors[:, :count]), count, seed=seed).labels
    labels = _kmeans_refine(unit, _relabel(first))
    if low == high:
        return labels
    return _merge_single_voices(unit, labels, low, starts, ends, connectivity, single_cosine, seed)


def _merge_single_voices(unit: np.ndarray, labels: np.ndarray, min_count: int, starts: np.ndarray | None,
                         ends: np.ndarray | None, connectivity: float = SINGLE_SPEAKER_CONNECTIVITY,
                         single_cosine: float = SINGLE_SPEAKER_COSINE, seed: int = 0) -> np.ndarray:
    """Merge two clusters whose windows together pass the single-speaker test, most alike pair first, until no
    pair does (or ``min_count`` clusters are left): the eigengap's count checked cluster by cluster with the test
    that decides one speaker against several for a whole recording."""
    while int(labels.max()) + 1 > min_count:
        sums = np.zeros((int(labels.max()) + 1, unit.shape[1]))
        np.add.at(sums, labels, unit)
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        alike = centroids @ centroids.T
        pairs = sorted(((a, b) for a in range(len(alike)) for b in range(a + 1, len(alike))), key=lambda p: -alike[p])
        for a, b in pairs:
            members = (labels == a) | (labels == b)
            both = unit[members]
            found = _connectivity(both, None if starts is None else starts[members],
                                  None if ends is None else ends[members])
            if _single_speaker(both, found, connectivity, single_cosine, seed):
                labels = _kmeans_refine(unit, _relabel(np.where(labels == b, a, labels)))
                break
        else:
            break
    return labels


def _spectral_rows(vectors: np.ndarray) -> np.ndarray:
    """Eigenvector rows for k-means; an all-zero row (an isolated window) gets a tiny constant direction."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.where(norms > 1e-12, vectors, 1e-6)


def refine_affinity(embeddings: np.ndarray, p_percentile: float = 0.95, sigma: float = 1.0,
                    soft: float = 0.01) -> np.ndarray:
    """The affinity matrix of Wang et al. after their refinement sequence (see the module docstring).

    Args:
        embeddings: ``(n, d)`` embeddings in time order.
        p_percentile: row-wise threshold as a fraction of the row's maximum.
        sigma: standard deviation of the Gaussian blur, in windows (0: no blur).
        soft: factor applied to the entries below the row threshold.

    Returns:
        ``(n, n)`` refined affinity (rows max-normalised, so not symmetric).

    Example:
        >>> x = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]])
        >>> (refine_affinity(x) > 0.5).astype(int)
        array([[1, 1, 0, 0],
               [1, 1, 0, 0],
               [0, 0, 1, 1],
               [0, 0, 1, 1]])
    """
    unit = _unit(embeddings)
    affinity = (1.0 + unit @ unit.T) / 2.0
    np.fill_diagonal(affinity, 0.0)
    np.fill_diagonal(affinity, affinity.max(axis=1))                        # crop diagonal
    if sigma > 0:
        affinity = gaussian_filter(affinity, sigma=sigma)                    # Gaussian blur
    small = affinity < p_percentile * affinity.max(axis=1, keepdims=True)   # row-wise threshold
    affinity = np.where(small, affinity * soft, affinity)
    affinity = np.maximum(affinity, affinity.T)                             # symmetrise
    affinity = affinity @ affinity.T                                        # diffuse
    return affinity / affinity.max(axis=1, keepdims=True)                   # row-wise max normalisation


def eigengap_count(eigenvalues: np.ndarray, min_count: int = 1, max_count: int | None = None) -> int:
    """The number of clusters by the largest eigengap ratio ``lambda_k / lambda_(k+1)`` (Wang et al.).

    Args:
        eigenvalues: eigenvalues in descending order.
        min_count: smallest count allowed.
        max_count: largest count allowed (default: all).

    Returns:
        The count ``k`` in ``[min_count, max_count]`` with the largest ratio among eigenvalues of at least
        :data:`STOP_EIGENVALUE` (``min_count`` when none qualifies).

    Example:
        >>> eigengap_count(np.array([4.0, 2.0, 1.9, 0.2, 0.1]))
        3
        >>> eigengap_count(np.array([4.0, 2.0, 1.9, 0.2, 0.1]), max_count=2)
        1
    """
    values = np.asarray(eigenvalues, dtype=np.float64)
    max_count = len(values) - 1 if max_count is None else min(max_count, len(values) - 1)
    best, best_ratio = min_count, -np.inf
    for k in range(max(1, min_count), max_count + 1):
        if values[k - 1] < STOP_EIGENVALUE:
            break
        ratio = values[k - 1] / (values[k] + 1e-10)
        if ratio > best_ratio:
            best, best_ratio = k, ratio
    return best


def wang_clustering(embeddings: np.ndarray, num_speakers: int | None = None, min_speakers: int = 1,
                    max_speakers: int = 8, starts: np.ndarray | None = None, ends: np.ndarray | None = None,
                    p_percentile: float = 0.95, sigma: float = 1.0, seed: int = 0) -> np.ndarray:
    """Spectral clustering with Wang et al.'s refinement and eigengap-ratio count (see the module docstring).

    Args:
        embeddings: ``(n, d)`` embeddings in time order.
        num_speakers: the number of speakers, when known.
        min_speakers: the fewest speakers to find.
        max_speakers: the most speakers to find.
        starts: ``(n,)`` window start times, for the single-speaker test (as in :func:`spectral_clustering`).
        ends: ``(n,)`` window end times.
        p_percentile: the row-wise threshold of the refinement.
        sigma: the Gaussian blur of the refinement.
        seed: seed of the k-means initialisation.

    Returns:
        ``(n,)`` labels ``0 .. k-1`` in order of first appearance.

    Raises:
        VoxprintError: inconsistent speaker counts.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> centres = rng.normal(size=(2, 16))
        >>> x = np.repeat(centres, 10, axis=0) + 0.1 * rng.normal(size=(20, 16))
        >>> wang_clustering(x, num_speakers=2).tolist() == [0] * 10 + [1] * 10
        True
    """
    unit = _unit(embeddings)
    low, high = _count_bounds(len(unit), num_speakers, min_speakers, max_speakers)
    if high <= 1 or low <= 1 and _single_speaker(unit, _connectivity(unit, starts, ends), seed=seed):
        return np.zeros(len(unit), dtype=np.int64)
    low = max(low, 2)
    if len(unit) <= low:
        return np.arange(len(unit), dtype=np.int64)
    values, vectors = np.linalg.eig(refine_affinity(unit, p_percentile, sigma))
    order = np.argsort(-values.real, kind="stable")
    values, vectors = values.real[order], vectors.real[:, order]
    count = eigengap_count(values, low, high) if low != high else low
    labels = _relabel(spherical_kmeans(_spectral_rows(vectors[:, :count]), count, seed=seed).labels)
    return _kmeans_refine(unit, labels)


def agglomerative_clustering(embeddings: np.ndarray, threshold: float = AHC_THRESHOLD,
                             num_speakers: int | None = None, min_speakers: int = 1,
                             max_speakers: int = 8) -> np.ndarray:
    """Average-linkage clustering of cosine scores, stopped at ``threshold`` (or at the speaker count).

    Args:
        embeddings: ``(n, d)`` embeddings.
        threshold: clusters whose average cosine is below this are not merged.
        num_speakers: the number of speakers, when known (the threshold is then unused).
        min_speakers: the fewest clusters.
        max_speakers: the most clusters.

    Returns:
        ``(n,)`` labels ``0 .. k-1`` in order of first appearance.

    Raises:
        VoxprintError: inconsistent speaker counts.

    Example:
        >>> x = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1], [0.05, 1]])
        >>> agglomerative_clustering(x).tolist()
        [0, 0, 1, 1, 1]
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    unit = _unit(embeddings)
    low, high = _count_bounds(len(unit), num_speakers, min_speakers, max_speakers)
    if len(unit) == 1:
        return np.zeros(1, dtype=np.int64)
    tree = linkage(unit, method="average", metric="cosine")
    labels = fcluster(tree, t=1.0 - threshold, criterion="distance")
    count = len(np.unique(labels))
    if not low <= count <= high:
        labels = fcluster(tree, t=min(max(count, low), high), criterion="maxclust")
    return _relabel(labels)


def _spectralcluster_package(embeddings: np.ndarray, num_speakers: int | None, min_speakers: int,
                             max_speakers: int) -> np.ndarray:
    """The ``spectralcluster`` package's ICASSP 2018 configuration (for comparison; an optional package)."""
    try:
        from spectralcluster import configs
    except ImportError:
        raise VoxprintError("method 'spectralcluster' needs the spectralcluster package "
                            "(pip install spectralcluster)") from None
    unit = _unit(embeddings)
    low, high = _count_bounds(len(unit), num_speakers, min_speakers, max_speakers)
    if high <= 1:
        return np.zeros(len(unit), dtype=np.int64)
    if len(unit) <= 2:
        return np.arange(len(unit), dtype=np.int64)
    # The package's own single-speaker fallback applies when min_clusters is 1.
    clusterer = configs.SpectralClusterer(
        min_clusters=low, max_clusters=high, autotune=None, laplacian_type=None,
        refinement_options=configs.icassp2018_refinement_options, custom_dist="cosine")
    return _relabel(clusterer.predict(unit))


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered ``0, 1, ...`` in order of first appearance."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))
    return rank[inverse].astype(np.int64)


def cluster_embeddings(embeddings: np.ndarray, method: ClusterMethod = "spectral", num_speakers: int | None = None,
                       min_speakers: int = 1, max_speakers: int = 8, threshold: float | None = None,
                       starts: np.ndarray | None = None, ends: np.ndarray | None = None, seed: int = 0,
                       **options: float) -> np.ndarray:
    """Speaker labels of window embeddings with the chosen method (see the module docstring).

    Args:
        embeddings: ``(n, d)`` embeddings in time order.
        method: ``spectral`` (neighbour graph, the default), ``wang`` (Wang et al.'s refinement),
            ``spectralcluster`` (Google's package, same configuration) or ``ahc`` (average linkage).
        num_speakers: the number of speakers, when known.
        min_speakers: the fewest speakers.
        max_speakers: the most speakers.
        threshold: the AHC stopping threshold (default :data:`AHC_THRESHOLD`).
        starts: ``(n,)`` window start times (with ``ends``: windows that share audio are not neighbours).
        ends: ``(n,)`` window end times.
        seed: seed of the k-means initialisation.
        **options: settings of the method's function (``neighbours``, ``connectivity`` of :func:`spectral_clustering`;
            ``p_percentile``, ``sigma`` of :func:`wang_clustering`).

    Returns:
        ``(n,)`` labels ``0 .. k-1`` in order of first appearance.

    Raises:
        VoxprintError: an unknown method, inconsistent speaker counts, or too many windows for a dense method.

    Example:
        >>> x = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]])
        >>> cluster_embeddings(x, "ahc").tolist(), cluster_embeddings(x, num_speakers=1).tolist()
        ([0, 0, 1, 1], [0, 0, 0, 0])
    """
    if method not in METHODS:
        raise VoxprintError(f"unknown clustering method {method!r}; use {', '.join(METHODS)}")
    _count_bounds(max(len(embeddings), 1), num_speakers, min_speakers, max_speakers)
    if len(embeddings) == 0:
        return np.zeros(0, dtype=np.int64)
    if method == "spectral":
        return spectral_clustering(embeddings, num_speakers, min_speakers, max_speakers, starts, ends, seed=seed,
                                   **options)
    if len(embeddings) > MAX_DENSE_WINDOWS:
        raise VoxprintError(f"clustering method {method!r} takes at most {MAX_DENSE_WINDOWS} windows (this recording "
                            f"has {len(embeddings)}); use the spectral method for long recordings")
    if method == "wang":
        return wang_clustering(embeddings, num_speakers, min_speakers, max_speakers, starts, ends, seed=seed,
                               **options)
    if method == "ahc":
        return agglomerative_clustering(embeddings, AHC_THRESHOLD if threshold is None else threshold,
                                        num_speakers, min_speakers, max_speakers)
    return _spectralcluster_package(embeddings, num_speakers, min_speakers, max_speakers)

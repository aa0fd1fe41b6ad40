"""Nearest speaker models by cosine or inner product: the search half of identification, from ten speakers
to millions.

A :class:`SpeakerIndex` is derived from the speaker store (its ids and unit speaker models), never the
system of record: it remembers the store :attr:`~voxprint.store.sqlite.EmbeddingTable.version` it was
built at, and :class:`~voxprint.store.speakers.SpeakerStore` rebuilds it when the store has changed.

Two kinds, one interface:

- ``"exact"``: the models in one float32 matrix; a query is one BLAS matrix-vector product (a block of
  queries, one matrix-matrix product) and an ``argpartition``. Every answer is the true top-k.
- ``"faiss"``: an inverted-file index (FAISS ``IndexIVFScalarQuantizer`` with 8-bit codes, inner
  product of unit vectors) under an ``IndexRefineFlat``. The models are split into about 2 sqrt(N)
  lists by k-means; a query scans the ``nprobe`` lists whose centres are nearest to it, comparing
  8-bit codes (a quarter of the memory traffic of float32, so twice the lists in the same time), and
  the best ``4 k`` candidates are rescored with their float32 models: the scores returned are exact
  cosines. It may miss a true neighbour (recall@5 measured against exact search in
  docs/benchmarks.md, "Speaker search at scale", and on real embeddings in tests/test_store_index.py).

``kind="auto"`` picks exact search below :data:`EXACT_MAX_SPEAKERS` speakers and FAISS from there on.

Two metrics:

- ``"cosine"``: the models and queries are unit vectors (the centroids of cosine back-ends);
- ``"inner_product"``: models and queries are kept as given and scored by their inner product. This is
  how PLDA searches: the exact log-likelihood ratio of a test ``t`` against a speaker enrolled with ``n``
  utterances is ``q(t) . w(n, f)`` for a test vector ``q`` and a speaker vector ``w``
  (:meth:`voxprint.backends.plda.TwoCovariancePLDA.speaker_vectors` derives it), so exact search returns
  the true top-k LLRs and FAISS searches them as maximum inner product. For FAISS the speaker rows get one
  more coordinate, ``sqrt(R^2 - |w|^2)`` with ``R`` the largest row norm at build, and the queries a 0
  there (Bachrach et al., RecSys 2014): the inner products are unchanged, and with every row of norm ``R``
  the largest inner product is the smallest angle, which is what the inverted lists' k-means partitions well.

Example:
    >>> import numpy as np
    >>> models = np.eye(3, dtype=np.float32)
    >>> index = SpeakerIndex.build(["ann", "bob", "eve"], models, version=7)
    >>> ids, scores = index.search(np.array([0.6, 0.8, 0.0]), k=2)
    >>> ids, np.round(scores.astype(float), 2).tolist(), index.kind, index.version, len(index)
    ([['bob', 'ann']], [[0.8, 0.6]], 'exact', 7, 3)
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from voxprint.backends.rows import as_matrix, unit_rows
from voxprint.errors import DataError, StoreError

__all__ = ["EXACT_MAX_SPEAKERS", "KINDS", "METRICS", "SpeakerIndex", "list_count", "probe_count"]

#: The index kinds :meth:`SpeakerIndex.build` accepts.
KINDS = ("auto", "exact", "faiss")
#: What an index compares (see the module docstring).
METRICS = ("cosine", "inner_product")

#: ``kind="auto"`` searches exactly below this many speakers and with FAISS from there on. Measured by
#: ``bench/speaker_search.py`` (docs/benchmarks.md, "Speaker search at scale"): the smallest gallery at
#: which one exact top-5 query on one thread takes 1 ms or more and FAISS answers it at least twice as
#: fast. Below it a query costs less than the rest of identification, and exact search has recall 1
#: and no k-means build each time the store changes.
EXACT_MAX_SPEAKERS = 20_000

#: Lists scanned per query: an eighth of them, and at least 16. On the synthetic galleries of the
#: benchmark this gives recall@5 of about 0.97 at 10^6 speakers in under 10 ms; fewer lists cost recall
#: there (a 16th: 0.94), more cost time (a quarter: 0.98 in 15 ms).
MIN_PROBES = 16
PROBE_FRACTION = 1 / 8
#: Candidates rescored with float32 models per neighbour asked for (8-bit codes rank them roughly).
REFINE_FACTOR = 4
# k-means for the list centres: 64 training points per list (a sample of large galleries) and FAISS's
# 10 iterations keep the build of 10^6 speakers under a minute on one core; nprobe makes up for
# rougher centres.
_TRAIN_POINTS_PER_LIST = 64
# Queries scored per exact block: a block of query x speaker scores stays below 2**24 cells (64 MiB).
_EXACT_BLOCK_CELLS = 1 << 24


#: FAISS rows are zero-padded to a multiple of this many values (see :func:`_lifted`).
SCAN_ALIGNMENT = 8


def _faiss() -> Any:
    """The ``faiss`` module, imported on first use (the exact index needs none)."""
    try:
        import faiss
    except ImportError:
        raise StoreError("FAISS is not installed; `pip install faiss-cpu`, or build the index with "
                         "kind='exact'") from None
    return faiss


def _faiss_available() -> bool:
    try:
        _faiss()
    except StoreError:
        return False
    return True


def list_count(speakers: int) -> int:
    """The number of inverted lists for a FAISS index of ``speakers`` models: the power of two nearest
    to 2 sqrt(speakers) (finer lists than sqrt(N) rank better for the same scan; many more would make
    the k-means of a build of 10^6 speakers take minutes on one core).

    Example:
        >>> list_count(1_000_000), list_count(300), list_count(1)
        (2048, 32, 2)
    """
    return 2 ** max(0, round(math.log2(2 * math.sqrt(max(speakers, 1)))))


def probe_count(lists: int) -> int:
    """Lists scanned per query for an index of ``lists`` lists (:data:`MIN_PROBES`, :data:`PROBE_FRACTION`).

    Example:
        >>> probe_count(2048), probe_count(32), probe_count(4)
        (256, 16, 4)
    """
    return min(lists, max(MIN_PROBES, math.ceil(lists * PROBE_FRACTION)))


class SpeakerIndex:
    """The speaker models of a store, searchable by cosine or inner product; make one with :meth:`build`.

    Attributes:
        kind: ``"exact"`` or ``"faiss"``.
        version: the store version the index was built at (None when built from other data).
        ids: the speaker ids, in row order (row ``i`` of every search result is ``ids[i]``).
        dim: the size of the models and queries.
        metric: ``"cosine"`` or ``"inner_product"`` (see the module docstring).
    """

    def __init__(self, kind: str, ids: list[str], dim: int, version: int | None, matrix: np.ndarray | None = None,
                 faiss_index: Any = None, metric: str = "cosine", radius: float | None = None) -> None:
        self.kind = kind
        self.ids = ids
        self.dim = dim
        self.version = version
        self.metric = metric
        # The FAISS inner-product index's common row norm R (its extra coordinate makes every row that long).
        self._radius = radius
        # The exact kind keeps its models in a buffer with spare rows, so that add() is amortised O(dim).
        self._buffer = matrix
        self._faiss = faiss_index
        self._known: set[str] | None = None  # the ids as a set, made on the first add()

    @classmethod
    def build(cls, ids: Sequence[str], matrix: np.ndarray, kind: str = "auto",
              version: int | None = None, metric: str = "cosine") -> SpeakerIndex:
        """Index speaker models.

        Args:
            ids: one unique id per row of ``matrix``.
            matrix: ``(N, D)`` speaker models (for ``"cosine"``: unit rows, others are normalised). ``N``
                may be 0.
            kind: ``"exact"``, ``"faiss"``, or ``"auto"`` (exact below :data:`EXACT_MAX_SPEAKERS`
                speakers; exact with a warning if FAISS is not installed).
            version: the store version the models were read at.
            metric: ``"cosine"`` or ``"inner_product"`` (see the module docstring).

        Returns:
            The index.

        Raises:
            StoreError: an unknown kind or metric, or ``kind="faiss"`` without FAISS installed.
            DataError: ids and rows differ in number, or a row is not finite (or, for cosine, zero).

        Example:
            >>> index = SpeakerIndex.build(["a", "b"], np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 2.0]]),
            ...                            metric="inner_product")
            >>> ids, scores = index.search(np.array([2.0, 1.0, 1.0]), k=2)
            >>> ids, scores.tolist()
            ([['b', 'a']], [[3.0, 1.0]])
        """
        if kind not in KINDS:
            raise StoreError(f"unknown speaker index kind {kind!r}; use one of {', '.join(KINDS)}")
        if metric not in METRICS:
            raise StoreError(f"unknown speaker index metric {metric!r}; use one of {', '.join(METRICS)}")
        ids = list(ids)
        rows = _model_matrix(matrix, len(ids), metric)
        if kind == "auto":
            kind = "exact" if len(ids) < EXACT_MAX_SPEAKERS else "faiss"
            if kind == "faiss" and not _faiss_available():
                warnings.warn(f"FAISS is not installed: searching {len(ids)} speakers exactly (slower); "
                              "`pip install faiss-cpu`", stacklevel=2)
                kind = "exact"
        if kind == "exact" or len(ids) == 0:
            return cls("exact", ids, rows.shape[1], version, matrix=np.array(rows, dtype=np.float32, order="C"),
                       metric=metric)
        radius = float(np.linalg.norm(rows, axis=1).max()) if metric == "inner_product" else None
        return cls("faiss", ids, rows.shape[1], version, faiss_index=_ivf_index(_lifted(rows, radius)),
                   metric=metric, radius=radius)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nprobe(self) -> int | None:
        """Lists scanned per query by a FAISS index (None for exact search)."""
        return None if self._faiss is None else int(_faiss().downcast_index(self._faiss.base_index).nprobe)

    def _matrix(self) -> np.ndarray:
        return self._buffer[:len(self.ids)]

    def add(self, ids: Sequence[str], matrix: np.ndarray, version: int | None = None) -> None:
        """Add new speakers without rebuilding (a FAISS index files them under its existing lists).

        Args:
            ids: ids not yet in the index, one per row.
            matrix: ``(n, D)`` their speaker models.
            version: the store version after the addition (kept as :attr:`version` when given).

        Raises:
            StoreError: an id is already in the index (a changed speaker model needs a rebuild).
            DataError: malformed rows (as :meth:`build`).
        """
        ids = list(ids)
        rows = _model_matrix(matrix, len(ids), self.metric, self.dim)
        clash = next((i for i in ids if i in self._known_ids()), None)
        if clash is None and len(set(ids)) < len(ids):
            clash = next(i for i in ids if ids.count(i) > 1)
        if clash is not None:
            raise StoreError(f"speaker {clash!r} is already in the index; rebuild it to change a speaker model")
        if self._faiss is not None:
            # Filed under the nearest list; the float32 copy appended in order. A row longer than the
            # build's R gets 0 as its extra coordinate: its inner products stay exact, only its list is rougher.
            self._faiss.add(_lifted(rows, self._radius))
        else:
            have = len(self.ids)
            if have + len(ids) > self._buffer.shape[0]:
                # Growing by a quarter keeps adds amortised O(dim) without doubling 10^6 models at once.
                size = max(self._buffer.shape[0] + self._buffer.shape[0] // 4, have + len(ids), 16)
                grown = np.empty((size, self.dim), dtype=np.float32)
                grown[:have] = self._buffer[:have]
                self._buffer = grown
            self._buffer[have:have + len(ids)] = rows
        self.ids.extend(ids)
        self._known.update(ids)
        if version is not None:
            self.version = version

    def replace(self, speaker_id: str, model: np.ndarray, version: int | None = None) -> None:
        """Change one speaker's model in place (exact search only: FAISS files a row under a list it cannot move).

        Raises:
            StoreError: a FAISS index, or a speaker not in the index.
            DataError: a malformed row (as :meth:`build`).
        """
        row = self._row(speaker_id, "change a speaker model")
        self._buffer[row] = _model_matrix(np.atleast_2d(model), 1, self.metric, self.dim)[0]
        if version is not None:
            self.version = version

    def remove(self, speaker_id: str, version: int | None = None) -> None:
        """Drop one speaker (exact search only; later rows move up one).

        Raises:
            StoreError: a FAISS index, or a speaker not in the index.
        """
        row = self._row(speaker_id, "remove a speaker")
        have = len(self.ids)
        self._buffer[row:have - 1] = self._buffer[row + 1:have]
        del self.ids[row]
        self._known_ids().discard(speaker_id)
        if version is not None:
            self.version = version

    def rename(self, speaker_id: str, new_id: str, version: int | None = None) -> None:
        """Give a speaker's row a new id (either kind: rows map to ids through :attr:`ids`).

        Raises:
            StoreError: ``speaker_id`` is not in the index, or ``new_id`` already is.
        """
        if speaker_id not in self:
            raise StoreError(f"speaker {speaker_id!r} is not in the index")
        if new_id != speaker_id and new_id in self:
            raise StoreError(f"speaker {new_id!r} is already in the index")
        self.ids[self.ids.index(speaker_id)] = new_id
        self._known_ids().discard(speaker_id)
        self._known_ids().add(new_id)
        if version is not None:
            self.version = version

    def row(self, speaker_id: str) -> int:
        """The row of a speaker (O(N))."""
        if speaker_id not in self:
            raise StoreError(f"speaker {speaker_id!r} is not in the index")
        return self.ids.index(speaker_id)

    def _row(self, speaker_id: str, action: str) -> int:
        if self._faiss is not None:
            raise StoreError(f"a FAISS index cannot {action} in place; rebuild it")
        return self.row(speaker_id)

    def _known_ids(self) -> set[str]:
        """The ids in the index, as a set (kept up to date by :meth:`add`)."""
        if self._known is None:
            self._known = set(self.ids)
        return self._known

    def __contains__(self, speaker_id: object) -> bool:
        return speaker_id in self._known_ids()

    def search_rows(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest speakers of each query, as row numbers (see :meth:`search`).

        Returns:
            ``(rows, scores)``: two ``(Q, k')`` arrays, best first, with ``k' = min(k, len(self))``; a
            FAISS index that finds fewer than ``k'`` speakers in the lists it scans pads with row -1
            and score ``-inf``.
        """
        q = _queries(queries, self.dim, self.metric)
        k = min(int(k), len(self))
        if k <= 0:
            return np.zeros((q.shape[0], 0), dtype=np.int64), np.zeros((q.shape[0], 0), dtype=np.float32)
        if self._faiss is not None:
            scores, rows = self._faiss.search(_lifted(q, 0.0 if self._radius is not None else None), k)
            return rows, np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        matrix = self._matrix()
        rows = np.empty((q.shape[0], k), dtype=np.int64)
        scores = np.empty((q.shape[0], k), dtype=np.float32)
        step = max(1, _EXACT_BLOCK_CELLS // max(len(self), 1))
        for lo in range(0, q.shape[0], step):
            block = q[lo:lo + step]
            # One query is a matrix-vector product; a block of them one matrix-matrix product (the inner
            # product of unit rows is their cosine).
            cos = matrix @ block[0] if block.shape[0] == 1 else block @ matrix.T
            cos = cos.reshape(block.shape[0], -1)
            top = np.argpartition(-cos, k - 1, axis=1)[:, :k] if k < cos.shape[1] else \
                np.broadcast_to(np.arange(cos.shape[1]), cos.shape)
            best = np.take_along_axis(cos, top, axis=1)
            order = np.argsort(-best, axis=1, kind="stable")
            rows[lo:lo + step] = np.take_along_axis(top, order, axis=1)
            scores[lo:lo + step] = np.take_along_axis(best, order, axis=1)
        return rows, scores

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """The ``k`` speakers nearest to each query by cosine (or with the largest inner product).

        Args:
            queries: ``(Q, D)`` embeddings, or one ``(D,)`` embedding (treated as ``Q = 1``); for cosine
                they are L2-normalised here.
            k: how many speakers per query (at most the index's size).

        Returns:
            ``(ids, scores)``: for each query the ids of its nearest speakers, best first, and their
            cosines (inner products) as a ``(Q, k')`` float32 array (a FAISS index that finds fewer than
            ``k'`` speakers lists fewer ids and pads the scores with ``-inf``).

        Raises:
            DataError: a query of another size than the index's, or not finite (or, for cosine, zero).
        """
        rows, scores = self.search_rows(queries, k)
        return [[self.ids[r] for r in row if r >= 0] for row in rows.tolist()], scores

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The speaker models of ``rows`` (row numbers as :meth:`search_rows` returns), ``(len(rows), D)``."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if self._faiss is not None:
            stored = _faiss().downcast_index(self._faiss.refine_index).reconstruct_batch(rows)
            return stored[:, :self.dim]  # without the inner-product index's extra coordinate
        return self._matrix()[rows]


def _lifted(rows: np.ndarray, radius: float | None) -> np.ndarray:
    """``rows`` as the FAISS index holds them: with the extra coordinate of the inner-product index (see the
    module docstring; ``sqrt(radius^2 - |row|^2)``, at least 0, for speaker rows, 0 for queries: ``radius=0``;
    none for cosine: ``radius=None``), then zeros up to a multiple of 8 values, which change no inner product
    but let FAISS's 8-bit code scanner take its vectorised path (it has one only for such widths: a 249-wide
    PLDA row scanned about 8 times slower).

    Example:
        >>> _lifted(np.array([[3.0, 4.0]], np.float32), 5.0).round(3).tolist()
        [[3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
        >>> _lifted(np.zeros((1, 16), np.float32), None).shape
        (1, 16)
    """
    columns = [rows]
    if radius is not None:
        extra = np.sqrt(np.maximum(radius * radius - np.einsum("ij,ij->i", rows, rows, dtype=np.float64), 0.0))
        columns.append(extra[:, None].astype(np.float32))
    width = sum(c.shape[1] for c in columns)
    if width % SCAN_ALIGNMENT:
        columns.append(np.zeros((len(rows), SCAN_ALIGNMENT - width % SCAN_ALIGNMENT), dtype=np.float32))
    return rows if len(columns) == 1 else np.ascontiguousarray(np.hstack(columns), dtype=np.float32)


def _model_matrix(matrix: np.ndarray, count: int, metric: str, dim: int | None = None) -> np.ndarray:
    """``matrix`` checked to hold ``count`` finite rows (of ``dim`` values), as float32; L2-normalised for cosine."""
    mat = as_matrix(matrix, "speaker models")
    if mat.ndim != 2 or mat.shape[0] != count or (dim is not None and mat.shape[1] != dim):
        want = f"({count}, {dim if dim is not None else 'D'})"
        raise DataError(f"need one speaker model per id: got {count} ids and models of shape {mat.shape}, "
                        f"want {want}")
    if metric != "cosine" or count == 0:
        return np.ascontiguousarray(mat, dtype=np.float32)
    norms = np.linalg.norm(mat, axis=1)
    if np.all(np.abs(norms - 1.0) <= 1e-6):
        # Store models are unit already: kept as they are, the rows vectors() returns for back-end
        # rescoring are bit for bit the store's.
        return np.ascontiguousarray(mat, dtype=np.float32)
    return np.ascontiguousarray(unit_rows(mat, "speaker models"), dtype=np.float32)


def _queries(queries: np.ndarray, dim: int, metric: str = "cosine") -> np.ndarray:
    """Queries as a C-contiguous ``(Q, dim)`` float32 array (of unit rows, for cosine)."""
    q = as_matrix(queries, "query embeddings")
    q = q[None, :] if q.ndim == 1 else q
    if q.ndim != 2 or q.shape[1] != dim:
        raise DataError(f"query embeddings of shape {np.shape(queries)} do not match the index's {dim} dimensions")
    return np.ascontiguousarray(unit_rows(q, "query embeddings") if metric == "cosine" else q, dtype=np.float32)


def _ivf_index(rows: np.ndarray) -> Any:
    """A FAISS inverted-file index of 8-bit codes (inner product), with float32 rescoring, of ``rows`` of one
    length (unit rows, or inner-product rows lifted by :func:`_lifted`)."""
    faiss = _faiss()
    lists = list_count(rows.shape[0])
    quantizer = faiss.IndexFlatIP(rows.shape[1])
    coarse = faiss.IndexIVFScalarQuantizer(quantizer, rows.shape[1], lists, faiss.ScalarQuantizer.QT_8bit,
                                           faiss.METRIC_INNER_PRODUCT)
    coarse.cp.max_points_per_centroid = _TRAIN_POINTS_PER_LIST  # FAISS samples larger galleries (fixed seed)
    coarse.cp.min_points_per_centroid = 1  # small galleries: train anyway, without FAISS's warning
    coarse.train(rows)
    coarse.nprobe = probe_count(lists)
    # The refine index keeps the float32 models in row order: exact scores, and vectors() by row.
    index = faiss.IndexRefineFlat(coarse)
    index.k_factor = REFINE_FACTOR
    index.add(rows)
    return index

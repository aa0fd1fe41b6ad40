"""Speaker-label cleaning of training data with spherical k-means (Kaseva & Kurimo, SphereDiar).

Crawled or crowd-sourced speaker corpora contain utterances filed under the wrong speaker. For each
speaker, the utterance embeddings are split into two groups with spherical k-means (K = 2); when one
group clearly holds the majority (more than ``majority`` of the utterances) and the split is clearly
real (cosine silhouette above ``silhouette``), the minority group is taken to be someone else and is
removed. A speaker whose utterances all come from one voice splits into two overlapping halves with a
low silhouette, and is kept whole.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from voxprint.data import DataFolder, write_data_folder
from voxprint.errors import ConfigError, DataError
from voxprint.fileio import atomic_write_text

__all__ = ["CleaningReport", "SpeakerDecision", "clean_data_folder", "clean_speakers", "spherical_kmeans",
           "write_clean_folder"]

REPORT_NAME = "report.tsv"


def _unit_rows(x: ArrayLike) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty (n, d) matrix, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.all(norms > 0) or not np.all(np.isfinite(x)):
        raise ValueError("rows must be finite and non-zero to be put on the unit sphere")
    return x / norms


def _plus_plus_init(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with the cosine distance ``1 - cos``: far-apart rows are likely seeds."""
    centroids = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        distance = np.clip(1.0 - (x @ np.stack(centroids).T).max(axis=1), 0.0, None)
        total = distance.sum()
        index = rng.choice(len(x), p=distance / total) if total > 0 else rng.integers(len(x))
        centroids.append(x[index])
    return np.stack(centroids)


def _lloyd(x: np.ndarray, centroids: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray, float]:
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
    return labels, centroids, objective


def spherical_kmeans(x: ArrayLike, k: int = 2, iterations: int = 50, seed: int = 0,
                     restarts: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Cosine k-means: rows and centroids live on the unit sphere; each row joins its most similar centroid.

    Rows are L2-normalised first; a centroid is the normalised mean of its members (Dhillon & Modha,
    2001). Seeding is k-means++ under the cosine distance, repeated ``restarts`` times from one seeded
    generator, and the run with the highest total cosine to its centroids wins, so the result is
    deterministic for a given ``seed``.

    Arguments
    ---------
    x : array_like
        ``(n, d)`` matrix of non-zero rows (e.g. embeddings).
    k : int
        Number of clusters (``1 <= k <= n``).
    iterations : int
        Maximum Lloyd iterations per restart (it stops earlier when assignments settle).
    seed : int
        Seed of the initialisation.
    restarts : int
        Number of seedings tried.

    Returns
    -------
    tuple of np.ndarray
        ``labels`` (n,) in ``0 .. k-1`` and unit-norm ``centroids`` (k, d).

    Example
    -------
    >>> x = np.array([[1.0, 0.1], [2.0, -0.1], [0.1, 1.0], [-0.1, 3.0]])
    >>> labels, centroids = spherical_kmeans(x, k=2)
    >>> bool(labels[0] == labels[1] != labels[2] == labels[3])
    True
    >>> np.allclose(np.linalg.norm(centroids, axis=1), 1.0)
    True
    """
    unit = _unit_rows(x)
    if not 1 <= k <= len(unit):
        raise ValueError(f"k must be between 1 and the number of rows ({len(unit)}), got {k}")
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(max(1, restarts)):
        run = _lloyd(unit, _plus_plus_init(unit, k, rng), iterations)
        if best is None or run[2] > best[2] + 1e-12:
            best = run
    assert best is not None
    return best[0], best[1]


@dataclass
class SpeakerDecision:
    """The cleaning outcome of one speaker.

    Attributes:
        speaker: speaker id.
        utterances: utterances the speaker had.
        kept: utterances kept.
        removed: ids of the removed utterances (empty when the speaker is kept whole).
        silhouette: cosine silhouette of the K=2 split (None when the speaker has too few utterances).
        reason: why the speaker was cleaned or kept.
    """

    speaker: str
    utterances: int
    kept: int
    removed: list[str] = field(default_factory=list)
    silhouette: float | None = None
    reason: str = ""


@dataclass
class CleaningReport:
    """Per-speaker decisions of :func:`clean_speakers` and the thresholds used."""

    rows: list[SpeakerDecision]
    majority: float
    silhouette: float

    @property
    def removed(self) -> set[str]:
        """Every removed utterance id."""
        return {utt for row in self.rows for utt in row.removed}

    @property
    def cleaned_speakers(self) -> list[str]:
        """Speakers that lost utterances."""
        return [row.speaker for row in self.rows if row.removed]

    def to_tsv(self) -> str:
        """The report as a tab-separated table with a header line (``-`` for none/undefined)."""
        lines = ["speaker\tutterances\tkept\tsilhouette\treason\tremoved"]
        for row in self.rows:
            sil = "-" if row.silhouette is None else f"{row.silhouette:.4f}"
            removed = ",".join(row.removed) or "-"
            lines.append(f"{row.speaker}\t{row.utterances}\t{row.kept}\t{sil}\t{row.reason}\t{removed}")
        return "\n".join(lines) + "\n"


def clean_speakers(ids: Sequence[str], embeddings: ArrayLike, utt2spk: Mapping[str, str], majority: float = 0.6,
                   silhouette: float = 0.3, seed: int = 0) -> CleaningReport:
    """Find utterances filed under the wrong speaker with a per-speaker K=2 spherical k-means.

    For each speaker, the utterance embeddings are split into groups G1 (the larger) and G2. The
    minority G2 is removed when ``|G1| > majority * (|G1| + |G2|)`` and the cosine silhouette
    score of the split exceeds ``silhouette``; otherwise every utterance is kept. Speakers with
    fewer than three utterances cannot be judged (the silhouette needs a split with a group of two)
    and are kept.

    Arguments
    ---------
    ids : Sequence[str]
        Utterance ids, one per embedding row.
    embeddings : array_like
        ``(n, d)`` utterance embeddings.
    utt2spk : Mapping[str, str]
        Utterance -> speaker (extra entries are ignored).
    majority : float
        Fraction of a speaker's utterances the larger group must exceed, in [0.5, 1).
    silhouette : float
        Silhouette the split must exceed, in [-1, 1].
    seed : int
        Seed of the k-means initialisation.

    Returns
    -------
    CleaningReport
        One row per speaker, in sorted speaker order.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> a, b = np.eye(8)[0], np.eye(8)[1]
    >>> emb = np.vstack([a + 0.1 * rng.standard_normal((6, 8)), b + 0.1 * rng.standard_normal((2, 8))])
    >>> ids = [f"u{i}" for i in range(8)]
    >>> report = clean_speakers(ids, emb, {u: "spk" for u in ids})
    >>> report.rows[0].removed, report.rows[0].kept
    (['u6', 'u7'], 6)
    """
    from sklearn.metrics import silhouette_score

    if not 0.5 <= majority < 1.0:
        raise ConfigError(f"majority must be in [0.5, 1), got {majority}")
    if not -1.0 <= silhouette <= 1.0:
        raise ConfigError(f"silhouette must be in [-1, 1], got {silhouette}")
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        raise DataError(f"{len(ids)} ids but embeddings of shape {matrix.shape}; they must match one to one")
    missing = [utt for utt in ids if utt not in utt2spk]
    if missing:
        raise DataError(f"{len(missing)} utterances have no speaker in utt2spk (first: {missing[0]!r})")
    by_speaker: dict[str, list[int]] = {}
    for row, utt in enumerate(ids):
        by_speaker.setdefault(utt2spk[utt], []).append(row)

    rows: list[SpeakerDecision] = []
    for speaker in sorted(by_speaker):
        members = by_speaker[speaker]
        n = len(members)
        if n < 3:
            rows.append(SpeakerDecision(speaker, n, n, reason="kept: fewer than 3 utterances"))
            continue
        x = matrix[members]
        labels, _ = spherical_kmeans(x, k=2, seed=seed)
        sizes = np.bincount(labels, minlength=2)
        if sizes.min() == 0:  # identical embeddings: nothing to split
            rows.append(SpeakerDecision(speaker, n, n, reason="kept: one group"))
            continue
        score = float(silhouette_score(x, labels, metric="cosine"))
        major = int(sizes.argmax())
        if sizes[major] <= majority * n:
            reason = f"kept: no majority group ({sizes[major]}/{n} <= {majority:g})"
        elif score <= silhouette:
            reason = f"kept: silhouette {score:.3f} <= {silhouette:g}"
        else:
            removed = sorted(ids[members[i]] for i in np.flatnonzero(labels != major))
            rows.append(SpeakerDecision(speaker, n, n - len(removed), removed, score,
                                        reason=f"removed minority group of {len(removed)}"))
            continue
        rows.append(SpeakerDecision(speaker, n, n, silhouette=score, reason=reason))
    return CleaningReport(rows, majority, silhouette)


def write_clean_folder(folder: DataFolder, report: CleaningReport, out_dir: str | os.PathLike) -> Path:
    """Write ``folder`` without the utterances ``report`` removed, as a Kaldi folder, plus ``report.tsv``.

    Arguments
    ---------
    folder : DataFolder
        The data folder that was cleaned.
    report : CleaningReport
        The decisions of :func:`clean_speakers` on it.
    out_dir : str or os.PathLike
        Output folder (``wav.scp``, ``utt2spk``, ``spk2utt``, ``report.tsv``).

    Returns
    -------
    Path
        The output folder.
    """
    removed = report.removed
    unknown = removed - set(folder.wav)
    if unknown:
        raise DataError(f"the report removes {len(unknown)} utterances that are not in the folder "
                        f"(first: {min(unknown)!r}); was it made from another folder?")
    wav = {utt: path for utt, path in folder.wav.items() if utt not in removed}
    if not wav:
        raise DataError("cleaning removed every utterance; nothing to write")
    cleaned = DataFolder(wav=wav, utt2spk={utt: folder.utt2spk[utt] for utt in wav}, root=folder.root)
    out = write_data_folder(cleaned, out_dir)
    atomic_write_text(out / REPORT_NAME, report.to_tsv())
    return out


def clean_data_folder(folder: DataFolder, embedder: Any, out_dir: str | os.PathLike, majority: float = 0.6,
                      silhouette: float = 0.3, progress: bool = False) -> tuple[Path, CleaningReport]:
    """Embed every utterance of ``folder``, clean its speakers and write the cleaned folder.

    What ``voxprint clean`` does: :func:`clean_speakers` on the embeddings, then
    :func:`write_clean_folder` into ``out_dir``.

    Arguments
    ---------
    folder : DataFolder
        The data folder to clean.
    embedder : SpeakerModel
        Anything with ``embed_folder(root, progress=...) -> (ids, matrix)``, e.g. a loaded model.
    out_dir : str or os.PathLike
        Output folder.
    majority, silhouette : float
        The thresholds of :func:`clean_speakers`.
    progress : bool
        Show a progress bar while embedding.

    Returns
    -------
    tuple[Path, CleaningReport]
        The output folder and the decisions.
    """
    ids, matrix = embedder.embed_folder(folder.root, progress=progress)
    report = clean_speakers(ids, matrix, folder.utt2spk, majority=majority, silhouette=silhouette)
    return write_clean_folder(folder, report, out_dir), report

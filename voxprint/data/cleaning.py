"""Speaker-label cleaning of training data with spherical k-means (Kaseva & Kurimo, SphereDiar).

Crawled or crowd-sourced speaker corpora contain utterances filed under the wrong speaker. For each
speaker, the utterance embeddings are split into two groups with spherical k-means (K = 2); when one
group clearly holds the majority (more than ``majority`` of the utterances) and the split is clearly
real (cosine silhouette above ``silhouette``), the minority group is taken to be someone else and is
removed. A speaker whose utterances all come from one voice splits into two overlapping halves with a
low silhouette, and is kept whole. The clustering itself is :func:`voxprint.clustering.spherical_kmeans`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from voxprint.clustering import cosine_silhouette, spherical_kmeans
from voxprint.data.folder import DataFolder, write_data_folder
from voxprint.errors import ConfigError, DataError
from voxprint.fileio import atomic_write_text

__all__ = ["REPORT_NAME", "CleaningReport", "SpeakerDecision", "clean_data_folder", "clean_speakers",
           "write_clean_folder"]

REPORT_NAME = "report.tsv"


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
    """Per-speaker decisions of :func:`clean_speakers` and the thresholds used.

    Attributes:
        rows: one decision per speaker, in sorted speaker order.
        majority: the majority threshold used.
        silhouette: the silhouette threshold used.
        skipped: recordings that could not be embedded (id -> why); they were not judged and stay in
            the cleaned folder.
    """

    rows: list[SpeakerDecision]
    majority: float
    silhouette: float
    skipped: dict[str, str] = field(default_factory=dict)

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

    Args:
        ids: Utterance ids, one per embedding row.
        embeddings: ``(n, d)`` utterance embeddings.
        utt2spk: Utterance -> speaker (extra entries are ignored).
        majority: Fraction of a speaker's utterances the larger group must exceed, in [0.5, 1).
        silhouette: Silhouette the split must exceed, in [-1, 1].
        seed: Seed of the k-means initialisation.

    Returns:
        One row per speaker, in sorted speaker order.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a, b = np.eye(8)[0], np.eye(8)[1]
        >>> emb = np.vstack([a + 0.1 * rng.standard_normal((6, 8)), b + 0.1 * rng.standard_normal((2, 8))])
        >>> ids = [f"u{i}" for i in range(8)]
        >>> report = clean_speakers(ids, emb, {u: "spk" for u in ids})
        >>> report.rows[0].removed, report.rows[0].kept
        (['u6', 'u7'], 6)
    """
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
        split = spherical_kmeans(x, k=2, seed=seed)
        labels, sizes = split.labels, split.sizes
        if sizes.min() == 0:  # identical embeddings: nothing to split
            rows.append(SpeakerDecision(speaker, n, n, reason="kept: one group"))
            continue
        score = cosine_silhouette(x, labels)
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

    Args:
        folder: The data folder that was cleaned.
        report: The decisions of :func:`clean_speakers` on it.
        out_dir: Output folder (``wav.scp``, ``utt2spk``, ``spk2utt``, ``report.tsv``).

    Returns:
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
                      silhouette: float = 0.3, progress: bool = False,
                      on_error: str = "fail") -> tuple[Path, CleaningReport]:
    """Embed every utterance of ``folder``, clean its speakers and write the cleaned folder.

    What ``voxprint clean`` does: :func:`clean_speakers` on the embeddings, then
    :func:`write_clean_folder` into ``out_dir``.

    Args:
        folder: The data folder to clean.
        embedder: Anything with ``embed_folder(root, progress=..., on_error=...)`` returning an object with
            ``ids``, ``embeddings`` and ``skipped`` (e.g. a loaded model).
        out_dir: Output folder.
        majority, silhouette: The thresholds of :func:`clean_speakers`.
        progress: Show a progress bar while embedding.
        on_error: ``"fail"`` on the first recording that cannot be embedded, or ``"skip"`` it: it is then
            listed in the report's ``skipped`` and kept, unjudged, in the cleaned folder.

    Returns:
        The output folder and the decisions.
    """
    embedded = embedder.embed_folder(folder.root, progress=progress, on_error=on_error)
    report = clean_speakers(embedded.ids, embedded.embeddings, folder.utt2spk, majority=majority,
                            silhouette=silhouette)
    report.skipped = dict(embedded.skipped)
    return write_clean_folder(folder, report, out_dir), report

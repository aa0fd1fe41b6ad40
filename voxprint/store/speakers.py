"""Enroll, identify and verify against a speaker store with a model.

Each speaker is kept with the speaker model the model's back-end needs
(:func:`voxprint.identification.scoring.speaker_scoring`): the centroid of its enrollment embeddings for
cosine back-ends, the exact ``n``-utterance PLDA model (``n`` and the mean of the enrollments in the PLDA
space) for PLDA, so a speaker enrolled with more recordings is modelled with the certainty they give.
``voxprint eval-id`` and the identification calibration it fits score the same models.

Identification is a search plus an open-set decision:

1. the search index (:mod:`voxprint.store.index`: exact BLAS search, FAISS above the measured crossover)
   gives the candidates with the back-end's raw score: the cosine to the centroids, or the exact PLDA
   log-likelihood ratio, which is an inner product of a test vector and a speaker vector
   (:meth:`voxprint.backends.plda.TwoCovariancePLDA.speaker_vectors`);
2. the candidates are scored with the model's back-end (for the bundled model, calibrated PLDA
   log-likelihood ratios) and the identification calibration;
3. the best candidate is returned only if ``score - ln(N) >= threshold`` for a gallery of ``N``
   speakers, else ``unknown``. With calibrated log-likelihood ratios, ``score - ln N`` is the log
   posterior odds of "this speaker" against "someone not enrolled" when the prior of being enrolled is
   spread evenly over the ``N`` speakers: the maximum of ``N`` impostor scores grows with ``N``, and the
   ``ln N`` term keeps the false-identification rate near its target as the gallery grows (measured
   in docs/benchmarks.md). The threshold is the model's ``identification`` entry in ``meta.json``
   (fitted for a stated false-identification rate), else its verification threshold.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from voxprint.audio import energy_vad_mask
from voxprint.errors import AudioError, ModelError, StoreError
from voxprint.runs.layout import model_label
from voxprint.store.sqlite import (
    EmbeddingTable,
    Enrollment,
    SpeakerRecord,
    check_speaker_id,
    decode_audio,
    encode_audio,
)

AudioInput = str | os.PathLike | np.ndarray

#: Less speech than this (after voice activity detection) is refused for enrollment.
MIN_SPEECH_SECONDS = 1.0
#: Two groups of windows whose mean voices are less alike than this (cosine) are two speakers. Measured
#: with the bundled model on speechocean762 dev: 1.5 s windows of one speaker split into groups at
#: cosine 0.27 to 0.69, of two speakers joined at -0.12 to 0.38 (9 of 12 pairs below 0.2).
MAX_VOICE_SPLIT_COSINE = 0.2
#: ... when the smaller group holds at least this share of the windows (one odd window is no speaker).
MIN_VOICE_SHARE = 0.25
#: More clipped samples than this fraction give a warning (the embedding of distorted speech drifts).
MAX_CLIPPED_FRACTION = 0.01
#: Windows of the enrollment check: 1.5 s (as diarization uses), so even short recordings get several.
CHECK_WINDOW_FRAMES = 150


def open_set_accepts(best_score: float, gallery: int, threshold: float) -> bool:
    """The open-set decision: accept the best of ``gallery`` speakers when ``best_score - ln(gallery)``
    reaches ``threshold`` (see the module docstring for why ``ln(gallery)``).

    Example:
        >>> open_set_accepts(3.0, 1, 2.0), open_set_accepts(3.0, 10, 2.0)
        (True, False)
    """
    return best_score - math.log(gallery) >= threshold


@dataclass(frozen=True)
class Candidate:
    """A speaker and its score for a recording (on the model back-end's scale)."""

    speaker: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {"speaker": self.speaker, "score": round(self.score, 4)}


@dataclass(frozen=True)
class Identification:
    """The answer to "who is this?".

    Attributes:
        speaker: the identified speaker, or None for "nobody enrolled".
        score: the best candidate's score.
        threshold: what ``score - ln(gallery)`` had to reach.
        gallery: the number of enrolled speakers searched.
        top: the best candidates, best first.
    """

    speaker: str | None
    score: float
    threshold: float
    gallery: int
    top: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {"speaker": self.speaker, "score": round(self.score, 4), "threshold": round(self.threshold, 4),
                "gallery": self.gallery, "top": [c.to_dict() for c in self.top]}


class SpeakerStore:
    """Enrolled speakers, persistent in one SQLite file, used with one model.

    Args:
        path: the store file (created on first enrollment).
        model: the :class:`~voxprint.inference.SpeakerModel` whose embeddings the store holds; a store
            made with another model is refused.
        keep_audio: keep each enrollment's audio (16 kHz FLAC) so the store can be re-embedded.
        create: whether a missing store may be created.

    Example:
        >>> import tempfile, voxprint
        >>> from voxprint.paths import data_root
        >>> dev = data_root() / "speechocean762" / "dev"
        >>> store = SpeakerStore(Path(tempfile.mkdtemp()) / "s.db", voxprint.load_model("default"))
        >>> store.enroll("5017", [dev / "SPEAKER5017" / "050170101.flac", dev / "SPEAKER5017" / "050170102.flac"]).count
        2
        >>> store.identify(dev / "SPEAKER5017" / "050170117.flac").speaker
        '5017'
    """

    def __init__(self, path: str | os.PathLike, model: Any, keep_audio: bool = False, create: bool = True):
        if model is not None and not model.stores_embeddings:
            raise ModelError(f"{model.config['model']['name']} verifies by scoring frames against adapted speaker "
                             "models, which a speaker store (one embedding per recording) cannot hold; use an "
                             "embedding model, e.g. the i-vector system, for enrollment and identification")
        self.table = EmbeddingTable(path, create=create)
        self.model = model
        self.keep_audio = keep_audio
        stored = self.table.model_identity
        if stored is not None and model is not None and stored != model.identity:
            self.table.bind_model(model.identity, model.embedding_dim, model_label_of(model))  # raises

    @property
    def model(self) -> Any:
        """The model whose embeddings the store holds (None: the store is only read, re-embedded or listed)."""
        return self._model

    @model.setter
    def model(self, model: Any) -> None:
        # The table derives each speaker's back-end model in the transaction that changes its enrollments,
        # so it is told what the back-end needs whenever the model is set (also by subclasses and reembed).
        self._model = model
        self._scoring = None
        self._index_cache = None
        self.table.scoring = self.scoring if model is not None else None

    @property
    def scoring(self) -> Any:
        """The speaker models the model's back-end needs, and how they are scored and searched
        (:func:`~voxprint.identification.scoring.speaker_scoring`)."""
        if self._scoring is None:
            if self._model is None:
                raise StoreError("this speaker store was opened without a model; open it with one to score")
            from voxprint.identification.scoring import speaker_scoring

            self._scoring = speaker_scoring(self._model.backend)
        return self._scoring

    @property
    def path(self) -> Path:
        return self.table.path

    # ---------------------------------------------------------------------------------------- enrollment

    def check_enrollment(self, wave: np.ndarray, source: str) -> tuple[float, float]:
        """Refuse recordings unfit for enrollment; returns (speech seconds, window consistency).

        Raises:
            AudioError: too little speech after voice activity detection, or windows so unlike each other
                that the recording likely holds several voices.
        """
        rate = self.model.sample_rate
        speech = float(energy_vad_mask(wave, rate).sum()) * 0.010
        if speech < MIN_SPEECH_SECONDS:
            raise AudioError(f"{source} holds {speech:.2f} s of speech, less than the {MIN_SPEECH_SECONDS:.1f} s "
                             "enrollment needs; record a longer sample")
        clipped = float(np.mean(np.abs(wave) >= 0.999))
        if clipped > MAX_CLIPPED_FRACTION:
            warnings.warn(f"{source}: {100 * clipped:.1f} % of the samples are clipped; the enrollment may be "
                          "less reliable (lower the recording level)", stacklevel=3)
        windows = self.model.with_inference(window_frames=CHECK_WINDOW_FRAMES, overlap=0.5).windows(wave)
        consistency = float((windows.embeddings @ windows.utterance_embedding()).mean())
        if len(windows) >= 6:
            from voxprint.clustering import spherical_kmeans

            split = spherical_kmeans(windows.embeddings, 2, seed=0)
            alike = float(split.centroids[0] @ split.centroids[1])
            if alike < MAX_VOICE_SPLIT_COSINE and split.sizes.min() >= MIN_VOICE_SHARE * len(windows):
                raise AudioError(f"{source} seems to hold several voices (its 1.5 s windows form two groups whose "
                                 f"voices are only {alike:.2f} alike); enroll one speaker per recording")
        return speech, consistency

    def enroll(self, speaker_id: str, audios: Sequence[AudioInput], name: str | None = None,
               sources: Sequence[str] | None = None) -> SpeakerRecord:
        """Enroll a speaker from recordings (adding to an existing speaker's enrollments).

        Every recording is checked and embedded before anything is written; the whole enrollment is one
        transaction. Recordings whose source name the speaker already has are skipped (idempotent).

        Args:
            speaker_id: the speaker's id (letters, digits, ``_.@+-``).
            audios: file paths, or arrays at the model's sample rate.
            name: display name (default: the id).
            sources: names of the recordings (default: the file paths; required for arrays).

        Raises:
            AudioError: a recording is unusable or unfit for enrollment.
            StoreError: an invalid id, another model's store, or a store that cannot be written.
        """
        check_speaker_id(speaker_id)
        self.table.check_writable()  # a read-only store refuses at once, before the recordings are embedded
        if not audios:
            raise AudioError(f"no enrollment recording given for speaker {speaker_id!r}")
        sources = list(sources) if sources is not None else [_source_name(a) for a in audios]
        enrollments, kept = [], []
        for audio, source in zip(audios, sources):
            if self.table.has_source(speaker_id, source):
                continue
            wave = self.model.load_waveform(audio, self.model.sample_rate if isinstance(audio, np.ndarray) else None)
            seconds, quality = self.check_enrollment(wave, source)
            embedding = self.model.windows(wave).utterance_embedding()
            enrollments.append(Enrollment(source, seconds, quality, embedding, self.keep_audio))
            kept.append(encode_audio(wave, self.model.sample_rate) if self.keep_audio else None)
        if not enrollments:
            return self.table.speaker(speaker_id)
        before = self.table.version
        record = self.table.add(speaker_id, enrollments, name=name, audio=kept, identity=self.model.identity,
                                model_name=model_label_of(self.model))
        self._update_index(before, self._enrolled_in_index(record.id))
        return record

    def _update_index(self, before: int, change: Callable[[Any, np.ndarray, np.ndarray], Any]) -> None:
        """Apply this store's own write to the cached search index instead of rebuilding it.

        Only when the index was current before the write and the write is the only one since (the version
        moved by exactly one): a write by another process in between leaves the index stale, and the next
        search rebuilds it. ``change(index, models, counts)`` updates the index and returns the new
        ``(models, counts)`` in its row order, or None when the index cannot take the change in place (a
        FAISS index cannot move or drop a row), which also leaves it to be rebuilt.
        """
        cached = self._index_cache
        if cached is None or cached[0].version != before or self.table.version != before + 1:
            return
        index, models, counts = cached
        updated = change(index, models, counts)
        if updated is not None:
            index.version = before + 1
            self._index_cache = (index, *updated)

    def _enrolled_in_index(self, speaker_id: str) -> Callable[[Any, np.ndarray, np.ndarray], Any]:
        """The index change of an enrollment: a new speaker's row added, an enrolled one's model replaced."""
        def change(index: Any, models: np.ndarray, counts: np.ndarray) -> Any:
            if speaker_id in index and index.kind != "exact" or not len(index):
                return None
            _, model, count, _ = self.table.speaker_models(self.scoring, speaker_id)
            vector = self.scoring.search_vectors(model, count)
            if speaker_id not in index:
                index.add([speaker_id], vector)
                return np.concatenate([models, model.astype(models.dtype)]), np.append(counts, count)
            row = index.row(speaker_id)
            index.replace(speaker_id, vector[0])
            models, counts = models.copy(), counts.copy()
            models[row], counts[row] = model[0], count[0]
            return models, counts

        return change

    def remove(self, speaker_id: str) -> None:
        """Delete a speaker."""
        before = self.table.version
        self.table.remove(speaker_id)

        def change(index: Any, models: np.ndarray, counts: np.ndarray) -> Any:
            if index.kind != "exact" or speaker_id not in index:
                return None
            row = index.row(speaker_id)
            index.remove(speaker_id)
            return np.delete(models, row, axis=0), np.delete(counts, row)

        self._update_index(before, change)

    def rename(self, speaker_id: str, new_id: str, name: str | None = None) -> SpeakerRecord:
        """Give a speaker a new id (and display name)."""
        before = self.table.version
        record = self.table.rename(speaker_id, new_id, name)

        def change(index: Any, models: np.ndarray, counts: np.ndarray) -> Any:
            if speaker_id not in index:
                return None
            index.rename(speaker_id, new_id)
            return models, counts

        self._update_index(before, change)
        return record

    def speakers(self) -> list[SpeakerRecord]:
        """Every enrolled speaker."""
        return self.table.speakers()

    def speaker(self, speaker_id: str) -> SpeakerRecord:
        """One enrolled speaker."""
        return self.table.speaker(speaker_id)

    # ------------------------------------------------------------------------------------ scoring

    def enrollment_embeddings(self, speaker_id: str) -> np.ndarray:
        """``(n, d)`` embeddings of a speaker's enrollments, oldest first (what :func:`~voxprint.diarization.spot`
        scores a stored speaker with, as :meth:`verify` does).

        Raises:
            StoreError: unknown speaker.
        """
        return np.stack([e.embedding for e in self.table.enrollments(speaker_id)])

    @property
    def identification_threshold(self) -> float:
        """The threshold of ``score - ln(gallery)`` (see the module docstring)."""
        entry = self.model.meta.get("identification", {})
        if "threshold" in entry:
            return float(entry["threshold"])
        if self.model.threshold is None:
            raise StoreError("the model has neither an identification nor a verification threshold; run "
                             "`voxprint eval-id --write-threshold` or `voxprint eval --write-threshold` on it")
        return float(self.model.threshold)

    def calibrate(self, scores: np.ndarray, test_seconds: float | None, enroll_counts: np.ndarray) -> np.ndarray:
        """Identification scores from back-end scores: the model's duration- and count-aware calibration
        when it has one (``meta.json``, ``identification.calibration``), else the back-end scores as they are.

        Args:
            scores: back-end scores of one test recording against some speakers.
            test_seconds: the test recording's duration (None when unknown: no duration correction).
            enroll_counts: each speaker's number of enrollment recordings.
        """
        entry = self.model.meta.get("identification", {}).get("calibration")
        if entry is None:
            return scores
        from voxprint.identification.calibration import QualityCalibration

        return QualityCalibration.from_dict(entry).transform(scores, test_seconds, enroll_counts)

    def identify_embedding(self, embedding: np.ndarray, top_k: int = 5, candidates: int = 50,
                           test_seconds: float | None = None) -> Identification:
        """Identify a test embedding (see the module docstring).

        Args:
            embedding: the test recording's unit embedding.
            top_k: how many candidates to report.
            candidates: how many cosine-nearest speakers the back-end rescores.
            test_seconds: the test recording's duration, for the calibration.

        Raises:
            StoreError: the store is empty.
        """
        index, models, counts = self._speaker_index()
        if not len(index):
            raise StoreError(f"speaker store {self.path} has no speakers; enroll some first")
        count = min(max(candidates, top_k), len(index))
        rows = index.search_rows(self.scoring.query_vectors(embedding), count)[0][0]
        rows = rows[rows >= 0]  # an approximate index may find fewer
        # The index ranked by the raw score in float32; the candidates get the back-end's float64 scores.
        scores = self.scoring.scores(models[rows], counts[rows], np.asarray(embedding)[None])[0]
        scores = self.calibrate(scores, test_seconds, counts[rows])
        order = np.argsort(-scores, kind="stable")
        top = [Candidate(index.ids[rows[i]], float(scores[i])) for i in order[:top_k]]
        threshold = self.identification_threshold
        best = top[0]
        accepted = open_set_accepts(best.score, len(index), threshold)
        return Identification(best.speaker if accepted else None, best.score, threshold, len(index), top)

    def _speaker_index(self) -> tuple[Any, np.ndarray, np.ndarray]:
        """The search index of the speakers, their models (:attr:`scoring`'s) and enrollment counts, in the
        index's row order; rebuilt when the store has been written since (:attr:`EmbeddingTable.version`).
        See :mod:`voxprint.store.index`."""
        from voxprint.store.index import SpeakerIndex

        # The version is read before the models: a write in between makes the index look stale, so
        # it is rebuilt once more, never kept out of date.
        version = self.table.version
        cached = self._index_cache
        if cached is None or cached[0].version != version:
            scoring = self.scoring
            ids, models, counts, derived = self.table.speaker_models(scoring)
            if derived:
                # Models a writer without this back-end left out (e.g. an earlier voxprint): kept for next time.
                self.table.save_models(scoring, derived, version)
            vectors = scoring.search_vectors(models, counts) if ids else np.zeros((0, 1), dtype=np.float32)
            index = SpeakerIndex.build(ids, vectors, version=version, metric=scoring.metric)
            cached = self._index_cache = (index, models, counts)
        return cached

    def identify(self, audio: AudioInput, top_k: int = 5) -> Identification:
        """Who is speaking in ``audio``: the best enrolled speaker, or None when nobody enrolled matches."""
        wave = self.model.load_waveform(audio, self.model.sample_rate if isinstance(audio, np.ndarray) else None)
        embedding = self.model.windows(wave).utterance_embedding()
        return self.identify_embedding(embedding, top_k=top_k, test_seconds=len(wave) / self.model.sample_rate)

    def verify(self, speaker_id: str, audio: AudioInput, threshold: float | None = None) -> dict[str, Any]:
        """Score ``audio`` against a stored speaker's model (no enrollment audio is re-embedded), as
        identification scores it: with the PLDA back-end, the exact ``n``-utterance model of its enrollments.

        Returns:
            ``{"speaker", "score", "scale", "threshold", "decision"}``.

        Raises:
            StoreError: unknown speaker, or no threshold.
        """
        _, model, count, _ = self.table.speaker_models(self.scoring, speaker_id)
        rate = self.model.sample_rate if isinstance(audio, np.ndarray) else None  # arrays are at the model's rate
        score = float(self.scoring.scores(model, count, self.model.extract_embedding(audio, rate)[None])[0, 0])
        threshold = self.model.threshold if threshold is None else threshold
        if threshold is None:
            raise StoreError("the model has no stored threshold; pass one")
        return {"speaker": speaker_id, "score": score, "scale": self.model.backend.scale, "threshold": threshold,
                "decision": "accept" if score >= threshold else "reject"}

    def reembed(self, model: Any) -> int:
        """Move the store to another model by re-embedding its kept audio; returns the enrollments redone.

        Raises:
            StoreError: some enrollments were made without ``keep_audio``.
        """
        rows = self.table.kept_audio()
        missing = [speaker for _, speaker, audio in rows if audio is None]
        if missing:
            raise StoreError(f"{len(missing)} enrollments (first: speaker {missing[0]!r}) kept no audio, so the store "
                             "cannot be re-embedded; enroll again with --keep-audio")
        embeddings = {}
        for row, _, audio in rows:
            wave, rate = decode_audio(audio)
            embeddings[row] = model.extract_embedding(wave, sample_rate=rate)
        previous = self.model
        self.model = model  # the new model's back-end makes the speaker models in the same transaction
        try:
            self.table.replace_embeddings(embeddings, model.identity, model.embedding_dim, model_label_of(model))
        except BaseException:
            self.model = previous
            raise
        return len(embeddings)


def model_label_of(model: Any) -> str | None:
    """What ``--model`` calls ``model`` (a built-in name or its folder), recorded by a store to name it in errors
    and to default to it (:func:`voxprint.runs.model_label` of its folder)."""
    return model_label(getattr(model, "model_dir", None))


def _source_name(audio: AudioInput) -> str:
    if isinstance(audio, np.ndarray):
        raise StoreError("give each array a source name (sources=[...]) so a repeated enrollment is recognised")
    return str(Path(audio))

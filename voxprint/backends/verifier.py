"""The torch-free part of a model: decoding, bulk embedding, data folders, trial lists and verification
with a model folder's stored back-end and threshold, whatever computes the window embeddings.

:class:`~voxprint.inference.SpeakerModel` (PyTorch, or an ONNX encoder inside voxprint's pipeline) and
:class:`~voxprint.export.standalone.StandaloneEmbedder` (an ONNX export without torch) both derive from
:class:`WindowedEmbedder`, so they decode, batch, skip bad recordings, read ``meta.json`` and ``backend/``
and score trial lists the same way; each supplies only its sliding-window embedder (``windows``). This
module imports no torch.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np

from voxprint.errors import AudioError, VoxprintError

__all__ = ["AudioInput", "BackendVerification", "EmbeddedSet", "OnError", "TrialScores", "WindowedEmbedder"]

AudioInput = str | os.PathLike | np.ndarray
OnError = Literal["fail", "skip"]


@dataclass
class TrialScores:
    """Scores of a trial list (:meth:`WindowedEmbedder.score_trial_list`).

    Attributes:
        trials: the trials that could be scored (both sides available).
        scores: one score per trial of ``trials``.
        missing: trials left out because a side could not be embedded.
        skipped: recording -> reason, for each recording left out (``on_error="skip"``).
    """

    trials: Any
    scores: np.ndarray
    missing: int
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class EmbeddedSet:
    """Embeddings of many recordings, with the ones that could not be embedded and why.

    Attributes:
        ids: the names of the embedded recordings, in input order.
        embeddings: (len(ids), D) float32 unit rows.
        skipped: name -> reason, for each recording left out (``on_error="skip"``).
    """

    ids: list[str]
    embeddings: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)


class BackendVerification:
    """``threshold``, ``backend`` and ``verification_score`` from a model folder.

    A class using it sets ``meta`` (the folder's ``meta.json``), ``model_dir`` (the folder, or None for a
    model built in memory) and ``_backend = None``, and has ``extract_embedding`` and
    ``extract_embeddings``.
    """

    meta: dict[str, Any]
    model_dir: Path | None
    _backend: Any

    @property
    def threshold(self) -> float | None:
        """The accept threshold stored by ``voxprint eval --write-threshold`` (None when there is none)."""
        return self.meta.get("threshold")

    @property
    def backend(self) -> Any:
        """The scoring back-end named in ``meta.json`` (plain cosine when none is named)."""
        if self._backend is None:
            from voxprint.backends.backend import ScoringBackend

            options = self.meta.get("backend", {})
            self._backend = (ScoringBackend.load(self.model_dir, **options) if options and self.model_dir
                             else ScoringBackend())
        return self._backend

    def scoring_backend(self, options: dict[str, Any]) -> Any:
        """The back-end with these options (``kind``, ``norm``, ``calibrated``) from the model folder's
        ``backend/`` (plain cosine when none is given)."""
        from voxprint.backends.backend import ScoringBackend

        return ScoringBackend.load(self.model_dir, **options) if options else ScoringBackend()

    def require_embedding_backend(self, what: str) -> None:
        """Raise when ``what`` (a verb) needs an embedding back-end this model cannot have; here it can."""

    def verification_score(self, enroll: Sequence[Any], test: Any) -> float:
        """Score of ``test`` against a speaker enrolled from every recording of ``enroll``, with the
        model's back-end (a log-likelihood ratio when the back-end is calibrated); compare it with
        :attr:`threshold`.

        Raises:
            AudioError: no enrollment recording, or a recording cannot be used.
        """
        enroll = list(enroll)
        if not enroll:
            raise AudioError("verification needs at least one enrollment recording")
        return float(self.backend.score(self.extract_embeddings(enroll), self.extract_embedding(test)))


class WindowedEmbedder(BackendVerification):
    """Everything a model does with recordings once it can embed sliding windows.

    A subclass sets ``sample_rate``, ``window_frames``, ``overlap``, ``min_seconds``, ``max_seconds`` and
    ``vad_threshold_db`` (plus what :class:`BackendVerification` needs), and provides ``embedding_dim`` and
    ``windows``: a sliding-window embedder with this model's window settings, with ``features(wave)``
    (frames whose ``len`` is their count), ``embed_features(list_of_features)`` (one
    :class:`~voxprint.windowing.WindowEmbeddings` each) and ``__call__(wave)``.

    Attributes:
        stores_embeddings: True: a speaker store may keep this model's embeddings and score them with its
            back-end (see :class:`~voxprint.inference.frame_scoring.FrameScoringModel` for a model that may not).
    """

    stores_embeddings = True
    sample_rate: int
    window_frames: int
    overlap: float
    min_seconds: float
    max_seconds: float | None
    vad_threshold_db: float | None

    @property
    def embedding_dim(self) -> int:
        """The embedding size."""
        raise NotImplementedError

    @property
    def windows(self) -> Any:
        """The sliding-window embedder with this model's inference settings."""
        raise NotImplementedError

    def optimize(self) -> "WindowedEmbedder":
        """Prepare for bulk extraction (:meth:`embed_many` calls it for 32 recordings or more); nothing here."""
        return self

    def with_inference(self, window_frames: int | None = None, overlap: float | None = None) -> "WindowedEmbedder":
        """A view of this model with other window settings (the weights are shared, not copied).

        Example:
            >>> from voxprint import load_model
            >>> model = load_model("default")
            >>> whole = model.with_inference(window_frames=10**9, overlap=0.0)
            >>> whole.window_frames, model.window_frames, whole.model is model.model
            (1000000000, 3000, True)
        """
        other = copy.copy(self)
        other.window_frames = self.window_frames if window_frames is None else int(window_frames)
        other.overlap = self.overlap if overlap is None else float(overlap)
        return other

    # ------------------------------------------------------------------------ speaker store (WeSpeaker's verbs)

    def attach_store(self, path: str | os.PathLike, keep_audio: bool = False) -> Any:
        """Use the speaker store at ``path`` (created when missing) for :meth:`register` and :meth:`recognize`.

        Returns:
            The :class:`~voxprint.store.SpeakerStore`.
        """
        from voxprint.store import SpeakerStore

        self._store = SpeakerStore(path, self, keep_audio=keep_audio)
        return self._store

    def _attached_store(self) -> Any:
        store = getattr(self, "_store", None)
        if store is None:
            raise VoxprintError("no speaker store attached; call model.attach_store('speakers.db') first")
        return store

    def register(self, name: str, audio: AudioInput | Sequence[AudioInput]) -> Any:
        """Enroll speaker ``name`` from one recording or several into the attached store (WeSpeaker's verb).

        Example:
            >>> import tempfile
            >>> from voxprint.paths import data_root
            >>> speaker = data_root() / "speechocean762" / "dev" / "SPEAKER5017"
            >>> from voxprint import load_model
            >>> model = load_model("default")
            >>> _ = model.attach_store(Path(tempfile.mkdtemp()) / "speakers.db")
            >>> model.register("5017", speaker / "050170101.flac").count
            1
            >>> model.recognize(speaker / "050170117.flac").speaker
            '5017'
        """
        audios = list(audio) if isinstance(audio, (list, tuple)) else [audio]
        return self._attached_store().enroll(name, audios)

    def recognize(self, audio: AudioInput, top_k: int = 5) -> Any:
        """Identify ``audio`` among the attached store's speakers (None when nobody enrolled matches)."""
        return self._attached_store().identify(audio, top_k=top_k)

    # ------------------------------------------------------------------------------------------ decoding

    @property
    def decode_settings(self) -> Any:
        """How this model reads a recording (rate, duration limits, VAD), for decoding elsewhere
        (a :class:`~voxprint.audio.decoding.DecodeSettings`)."""
        from voxprint.audio.decoding import DecodeSettings

        return DecodeSettings(self.sample_rate, self.min_seconds, self.max_seconds, self.vad_threshold_db)

    def load_waveform(self, audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """Decode, check, resample (and, when the model uses VAD, trim silence from) one input.

        Raises:
            AudioError: the recording cannot be used.
        """
        return self.decode_settings.decode(audio, sample_rate)

    def _waveforms(self, audios: Sequence[AudioInput], decode_workers: int) -> Iterator[np.ndarray | AudioError]:
        """Each input's waveform, or the AudioError it raised, in order (files decoded by workers when asked)."""
        if decode_workers > 0 and not any(isinstance(a, np.ndarray) for a in audios):
            from voxprint.audio.decoding import decode_in_workers

            yield from decode_in_workers(audios, self.decode_settings, decode_workers)
            return
        for audio in audios:
            try:
                yield self.load_waveform(audio, self.sample_rate if isinstance(audio, np.ndarray) else None)
            except AudioError as exc:
                yield exc

    def check_files(self, files: dict[str, str | os.PathLike], where: str) -> None:
        """Judge every file from its header (fast) against this model's limits; one error names the bad ones.

        Raises:
            AudioError: with the count of bad files and the first few.
        """
        from voxprint.audio import check_audio_files

        check_audio_files(files, where, self.min_seconds, self.max_seconds,
                          remedy="fix or remove them, or pass --on-error skip")

    # --------------------------------------------------------------------------------------- embedding

    def extract_window_embeddings(self, audio: AudioInput, sample_rate: int | None = None) -> Any:
        """Per-window embeddings of one recording, with each window's start and end in seconds
        (:class:`~voxprint.windowing.WindowEmbeddings`)."""
        return self.windows(self.load_waveform(audio, sample_rate))

    def extract_embedding(self, audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """Embedding (unit vector, float32) of a file path or a waveform array (``sample_rate`` required).

        Raises:
            AudioError: the recording cannot be used.
        """
        return self.extract_window_embeddings(audio, sample_rate).utterance_embedding()

    def extract_embeddings(self, audios: Sequence[AudioInput], batch_windows: int = 256,
                           progress: bool = False, desc: str = "embedding") -> np.ndarray:
        """Embeddings (n, dim) of many recordings, batching windows across them; stops at the first bad one."""
        return self.embed_many(audios, batch_windows=batch_windows, progress=progress, desc=desc).embeddings

    def embed_many(self, audios: Sequence[AudioInput], names: Sequence[str] | None = None,
                   on_error: OnError = "fail", batch_windows: int = 256, progress: bool = False,
                   desc: str = "embedding", decode_workers: int = 0) -> EmbeddedSet:
        """Embed many recordings, batching windows across them.

        Args:
            audios: file paths or waveform arrays at the model's sample rate.
            names: what to call each input in ``ids`` and ``skipped`` (default: the path, or its index).
            on_error: ``"fail"`` raises at the first recording that cannot be embedded; ``"skip"``
                leaves it out and records why in :attr:`EmbeddedSet.skipped`.
            batch_windows: windows gathered before the encoder runs (windows of equal length share a call).
            progress: show a progress bar (on stderr).
            desc: the progress bar's label.
            decode_workers: decode files in this many worker processes while the encoder runs here
                (0: decode here; :mod:`voxprint.audio.decoding`).

        Raises:
            AudioError: a recording cannot be embedded and ``on_error="fail"``.
            VoxprintError: ``on_error`` is neither ``"fail"`` nor ``"skip"``.
        """
        from tqdm import tqdm

        from voxprint.windowing import window_starts

        if on_error not in ("fail", "skip"):
            raise VoxprintError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
        names = list(names) if names is not None else [str(a) if not isinstance(a, np.ndarray) else str(i)
                                                       for i, a in enumerate(audios)]
        if len(audios) >= 32:
            self.optimize()
        embedder = self.windows
        rows: dict[int, np.ndarray] = {}
        skipped: dict[str, str] = {}
        pending: list[tuple[int, Any]] = []
        windows = 0

        def flush() -> None:
            results = embedder.embed_features([feats for _, feats in pending])
            rows.update((index, result.utterance_embedding()) for (index, _), result in zip(pending, results))
            pending.clear()

        decoded = self._waveforms(audios, decode_workers)
        for index, wave in enumerate(tqdm(decoded, total=len(audios), desc=desc, disable=not progress, unit="utt")):
            try:
                if isinstance(wave, AudioError):
                    raise wave
                feats = embedder.features(wave)
            except AudioError as exc:
                if on_error == "fail":
                    raise
                skipped[names[index]] = str(exc)
                continue
            pending.append((index, feats))
            windows += len(window_starts(len(feats), self.window_frames, self.overlap))
            if windows >= batch_windows:
                flush()
                windows = 0
        if pending:
            flush()
        order = sorted(rows)
        matrix = (np.stack([rows[i] for i in order]) if order
                  else np.zeros((0, self.embedding_dim), dtype=np.float32))
        return EmbeddedSet([names[i] for i in order], matrix, skipped)

    def embed_folder(self, data_dir: str | os.PathLike, progress: bool = True, on_error: OnError = "fail",
                     check_first: bool = True, decode_workers: int = 0) -> EmbeddedSet:
        """Embed every utterance of a data folder (``wav.scp``; ``utt2spk`` is not needed).

        With ``on_error="fail"`` every file's header is checked first (``check_first``), so a bad file
        stops the run before any slow work, with the count and the first few named.

        Raises:
            DataError: the folder cannot be read.
            AudioError: some files cannot be embedded and ``on_error="fail"``.
        """
        from voxprint.data import read_data_folder

        folder = read_data_folder(data_dir, require_speakers=False)
        ids = folder.utterances
        if on_error == "fail" and check_first:
            self.check_files(folder.wav, str(folder.root))
        return self.embed_many([folder.wav[u] for u in ids], names=ids, on_error=on_error, progress=progress,
                               decode_workers=decode_workers)

    def compute_similarity(self, a: AudioInput, b: AudioInput) -> float:
        """Cosine similarity of two recordings' embeddings (in [-1, 1]; not calibrated)."""
        from voxprint.backends.scoring import cosine_similarity

        return cosine_similarity(self.extract_embedding(a), self.extract_embedding(b))

    def enroll(self, audios: Sequence[AudioInput]) -> np.ndarray:
        """Speaker model from one or more enrollment recordings (normalised mean embedding)."""
        from voxprint.backends.scoring import mean_embedding

        return mean_embedding(self.extract_embeddings(list(audios)))

    # ------------------------------------------------------------------------------------- trial lists

    def score_trial_list(self, data_dir: str | os.PathLike, trials: Any, backend: Any,
                         enrollments: dict[str, Sequence[str]] | None = None, progress: bool = False,
                         on_error: OnError = "fail") -> TrialScores:
        """Embed the recordings of a data folder that the trials name, and score the trials with ``backend``.

        Args:
            data_dir: folder with ``wav.scp``.
            trials: the trial list (:class:`~voxprint.data.trials.Trials`); sides name utterances or,
                with ``enrollments``, enrollment models.
            backend: a :class:`~voxprint.backends.backend.ScoringBackend` (see :meth:`scoring_backend`).
            enrollments: model -> its utterances; a model's embedding is their normalised mean.
            progress: show a progress bar.
            on_error: ``"skip"`` leaves out recordings that cannot be embedded (and their trials).

        Raises:
            AudioError: a recording cannot be embedded and ``on_error="fail"``.
        """
        return self.score_trial_lists(data_dir, trials, [backend], enrollments, progress, on_error)[0]

    def score_trial_lists(self, data_dir: str | os.PathLike, trials: Any, backends: Sequence[Any],
                          enrollments: dict[str, Sequence[str]] | None = None, progress: bool = False,
                          on_error: OnError = "fail") -> list[TrialScores]:
        """:meth:`score_trial_list` with several back-ends, embedding the recordings once."""
        from voxprint.data.trials import keep_trials_with

        folder, needed = self.trial_recordings(data_dir, trials, enrollments, on_error)
        embedded = self.embed_many([folder.wav[u] for u in needed], names=needed, on_error=on_error,
                                   progress=progress)
        ids, matrix = embedded.ids, embedded.embeddings
        models = None
        if enrollments is not None:
            available = set(ids)
            usable = {m: [u for u in utts if u in available] for m, utts in enrollments.items()}
            models = {m: u for m, u in usable.items() if u}
        kept, missing = keep_trials_with(trials, set(ids) | set(models or ()))
        # Each back-end builds the enrolled models it scores with (PLDA: the exact n-utterance model).
        return [TrialScores(kept, backend.score_trials(ids, matrix, kept, models), missing, embedded.skipped)
                for backend in backends]

    def trial_recordings(self, data_dir: str | os.PathLike, trials: Any,
                         enrollments: dict[str, Sequence[str]] | None, on_error: OnError) -> tuple[Any, list[str]]:
        """The data folder and the utterances of it that the trials (and their enrollment models) name;
        with ``on_error="fail"``, their headers are checked first (one error names every bad file)."""
        from voxprint.data import read_data_folder
        from voxprint.data.trials import trial_utterances

        folder = read_data_folder(data_dir, require_speakers=False)
        needed = trial_utterances(trials, enrollments, available=folder.wav)
        if on_error == "fail":
            self.check_files({u: folder.wav[u] for u in needed}, str(folder.root))
        return folder, needed

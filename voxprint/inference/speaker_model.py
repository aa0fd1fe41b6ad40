"""A trained model ready for inference: load it, embed recordings, score them with its back-end.

An utterance's embedding is the normalised mean of the normalised embeddings of its sliding windows
(:class:`~voxprint.inference.windows.SlidingWindowEmbedder`; by default 160 frames with 50 % overlap,
the GE2E paper's d-vector). Audio shorter than one window is embedded as a single window.
"""
from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from tqdm import tqdm

from voxprint.audio import DEFAULT_MAX_SECONDS, check_audio_files
from voxprint.audio.decoding import DecodeSettings, decode_in_workers
from voxprint.backends import cosine_similarity, mean_embedding
from voxprint.backends.verifier import BackendVerification
from voxprint.config import DEFAULTS, merge
from voxprint.errors import AudioError, ModelError, VoxprintError
from voxprint.inference.windows import SlidingWindowEmbedder, WindowEmbeddings, window_starts
from voxprint.models import EmbeddingModel, build_embedding_model
from voxprint.runs import (
    BACKEND_DIR,
    MODEL_FILE,
    hash_state,
    load_torch_file,
    model_identity,
    read_meta,
    resolve_model_dir,
)

AudioInput = str | os.PathLike | np.ndarray
OnError = Literal["fail", "skip"]


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available) as a usable torch device.

    Raises:
        ModelError: the device is unknown or not available on this machine.

    Example:
        >>> resolve_device("cpu"), resolve_device("auto").type in ("cpu", "cuda")
        (device(type='cpu'), True)
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelError(f"unknown device {str(device)!r}; use cpu, cuda, cuda:N or auto") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ModelError(f"device {str(device)!r} is not supported; use cpu, cuda, cuda:N or auto")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {str(device)!r} was requested but this machine has no usable CUDA GPU "
                             "(or this torch build has no CUDA); use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ModelError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return resolved


@dataclass
class TrialScores:
    """Scores of a trial list (:meth:`SpeakerModel.score_trial_list`).

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


class SpeakerModel(BackendVerification):
    """A trained embedder ready for inference (WeSpeaker-style verbs); ``threshold``, ``backend`` and
    ``verification_score`` come from :class:`~voxprint.backends.verifier.BackendVerification`.

    Attributes:
        threshold: accept threshold for :meth:`verification_score` (stored in ``meta.json`` by
            ``voxprint eval --write-threshold``), or None when the model has none.
        identity: the weights + back-end identity a speaker store records (None for a model built in memory).
        stores_embeddings: True: a speaker store may keep this model's embeddings and score them with its
            back-end (see :class:`~voxprint.inference.frame_scoring.FrameScoringModel` for a model that may not).
    """

    stores_embeddings = True

    def __init__(self, model: EmbeddingModel, config: dict[str, Any], meta: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu", model_dir: str | os.PathLike | None = None,
                 max_seconds: float | None = DEFAULT_MAX_SECONDS, identity: str | None = None):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.meta = meta or {}
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.identity = identity
        self._backend: Any = None
        self._encode = self.model.encode  # replaced by a frozen trace in optimize()
        self._optimized = False
        self.sample_rate = int(config["sample_rate"])
        inference = config["inference"]
        self.window_frames = int(inference["window_frames"])
        self.overlap = float(inference["overlap"])
        self.min_seconds = float(inference["min_seconds"])
        self.max_seconds = max_seconds
        self.vad_threshold_db = config["vad"]["threshold_db"] if config["vad"]["enabled"] else None

    @property
    def embedding_dim(self) -> int:
        return int(self.model.encoder.embedding_dim)

    @property
    def windows(self) -> SlidingWindowEmbedder:
        """The sliding-window embedder with this model's inference settings."""
        return SlidingWindowEmbedder(self.model, self.window_frames, self.overlap, encode=self._encode,
                                     device=self.device)

    def with_inference(self, window_frames: int | None = None, overlap: float | None = None) -> "SpeakerModel":
        """A view of this model with other window settings (the weights are shared, not copied).

        Example:
            >>> model = load_model("default")
            >>> whole = model.with_inference(window_frames=10**9, overlap=0.0)
            >>> whole.window_frames, model.window_frames, whole.model is model.model
            (1000000000, 3000, True)
        """
        other = copy.copy(self)
        other.window_frames = self.window_frames if window_frames is None else int(window_frames)
        other.overlap = self.overlap if overlap is None else float(overlap)
        return other

    def scoring_backend(self, options: dict[str, Any]) -> Any:
        """The back-end with these options (``kind``, ``norm``, ``calibrated``) from the model folder's
        ``backend/`` (plain cosine when none is given)."""
        from voxprint.backends.backend import ScoringBackend

        return ScoringBackend.load(self.model_dir, **options) if options else ScoringBackend()

    def require_embedding_backend(self, what: str) -> None:
        """Raise when ``what`` (a verb) needs an embedding back-end this model cannot have; here it can."""

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
        if enrollments is not None:
            from voxprint.backends.scoring import add_enrollment_models

            available = set(ids)
            usable = {m: [u for u in utts if u in available] for m, utts in enrollments.items()}
            ids, matrix = add_enrollment_models(ids, matrix, {m: u for m, u in usable.items() if u})
        kept, missing = keep_trials_with(trials, set(ids))
        return [TrialScores(kept, backend.score_trials(ids, matrix, kept), missing, embedded.skipped)
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

    @property
    def decode_settings(self) -> DecodeSettings:
        """How this model reads a recording (rate, duration limits, VAD), for decoding elsewhere."""
        return DecodeSettings(self.sample_rate, self.min_seconds, self.max_seconds, self.vad_threshold_db)

    def load_waveform(self, audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """Decode, check, resample (and, when the model uses VAD, trim silence from) one input."""
        return self.decode_settings.decode(audio, sample_rate)

    def _waveforms(self, audios: Sequence[AudioInput], decode_workers: int) -> Any:
        """Each input's waveform, or the AudioError it raised, in order (files decoded by workers when asked)."""
        if decode_workers > 0 and not any(isinstance(a, np.ndarray) for a in audios):
            yield from decode_in_workers(audios, self.decode_settings, decode_workers)
            return
        for audio in audios:
            try:
                yield self.load_waveform(audio, self.sample_rate if isinstance(audio, np.ndarray) else None)
            except AudioError as exc:
                yield exc

    def optimize(self) -> "SpeakerModel":
        """Swap in a frozen TorchScript trace of the encoder, for throughput on CPU.

        Freezing folds batch norms into convolutions and picks oneDNN kernels (about 1.3x faster on
        one thread for ECAPA-TDNN). It costs about 2 s once, so bulk extraction does it by itself and
        one-off calls (``verify``, ``similarity``) do not. Only encoders marked ``traceable`` are
        traced, and the trace is dropped if it disagrees with the eager model on other lengths.
        """
        if not self._optimized:
            self._optimized = True
            if getattr(self.model.encoder, "traceable", False) and self.device.type == "cpu":
                self._encode = trace_encoder(self.model) or self.model.encode
        return self

    def extract_window_embeddings(self, audio: AudioInput, sample_rate: int | None = None) -> WindowEmbeddings:
        """Per-window embeddings of one recording, with each window's start and end in seconds."""
        return self.windows(self.load_waveform(audio, sample_rate))

    def extract_embedding(self, audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """Embedding (unit vector, float32) of a file path or a waveform array (``sample_rate`` required)."""
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
        """
        if on_error not in ("fail", "skip"):
            raise VoxprintError(f"on_error must be 'fail' or 'skip', not {on_error!r}")
        names = list(names) if names is not None else [str(a) if not isinstance(a, np.ndarray) else str(i)
                                                       for i, a in enumerate(audios)]
        if len(audios) >= 32:
            self.optimize()
        embedder = self.windows
        rows: dict[int, np.ndarray] = {}
        skipped: dict[str, str] = {}
        pending: list[tuple[int, torch.Tensor]] = []
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

    def check_files(self, files: dict[str, str | os.PathLike], where: str) -> None:
        """Judge every file from its header (fast) against this model's limits; one error names the bad ones.

        Raises:
            AudioError: with the count of bad files and the first few.
        """
        check_audio_files(files, where, self.min_seconds, self.max_seconds,
                          remedy="fix or remove them, or pass --on-error skip")

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
        return cosine_similarity(self.extract_embedding(a), self.extract_embedding(b))

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

    def diarize(self, audio: AudioInput, sample_rate: int | None = None, **options: Any) -> Any:
        """Who spoke when: :func:`voxprint.diarization.diarize` with this model (``num_speakers``, ``store``...)."""
        from voxprint.diarization import diarize

        return diarize(self, audio, sample_rate=sample_rate, **options)

    def enroll(self, audios: Sequence[AudioInput]) -> np.ndarray:
        """Speaker model from one or more enrollment recordings (normalised mean embedding)."""
        return mean_embedding(self.extract_embeddings(list(audios)))


class _Encode(torch.nn.Module):
    def __init__(self, model: EmbeddingModel):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.model.encode(feats)


def trace_encoder(model: EmbeddingModel, tolerance: float = 1e-4):
    """Frozen, inference-optimised trace of ``model.encode``, or None when it does not match eager."""
    dim = model.frontend.dim if hasattr(model.frontend, "dim") else model.frontend.n_mels
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        example = torch.randn(1, 300, dim, generator=generator)
        traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(_Encode(model).eval(), example)))
        for frames in (30, 777):
            probe = torch.randn(2, frames, dim, generator=generator)
            if (traced(probe) - model.encode(probe)).abs().max() > tolerance:
                return None
    return traced


def load_model(name_or_dir: str | os.PathLike = "default", device: str | torch.device = "cpu",
               max_seconds: float | None = DEFAULT_MAX_SECONDS) -> SpeakerModel:
    """Load a built-in model (``"default"``) or a training run folder (its ``model.pt``).

    The file is read without executing code (tensors and plain data only), its weights are checked
    against the hash stored when it was written, and ``meta.json`` is checked.

    Args:
        name_or_dir: ``"default"``, a run folder, or its ``model.pt``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        max_seconds: longest recording accepted (None: no limit).

    Raises:
        ModelError: with a one-line message for anything that makes the folder unusable.

    Example:
        >>> model = load_model("default")
        >>> model.embedding_dim
        192
    """
    from voxprint.export import load_exported  # an exported folder runs its graph in onnxruntime

    if (exported := load_exported(resolve_model_dir(name_or_dir), device, max_seconds)) is not None:
        return exported
    device = resolve_device(device)
    folder = resolve_model_dir(name_or_dir)
    path = folder / MODEL_FILE
    state = load_torch_file(path)
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("state_dict"), dict):
        raise ModelError(f"{path} is not a voxprint model file (a checkpoint.pt is not loadable here)")
    weights_hash = hash_state(state["config"], state["state_dict"])
    stored = state.get("weights_sha256")
    if stored is None:
        warnings.warn(f"{path} has no weights hash (written by an older voxprint), so corruption cannot be detected",
                      stacklevel=2)
    elif stored != weights_hash:
        raise ModelError(f"{path} is corrupt: its weights do not match the hash stored when it was written")
    # Files written by older versions lack newer options: their defaults apply.
    config = merge(DEFAULTS, state["config"])
    try:
        model = build_embedding_model(config)
        model.load_state_dict(state["state_dict"])
    except VoxprintError as exc:
        raise ModelError(f"{path}: {exc}") from None
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ModelError(f"{path}: the weights do not fit the model its config describes ({detail[:300]})") from None
    meta = read_meta(folder)
    identity = model_identity(weights_hash, folder / BACKEND_DIR if (folder / BACKEND_DIR).is_dir() else None)
    # A GMM-UBM verifies by scoring frames against adapted models, not by comparing embeddings.
    from voxprint.inference.frame_scoring import FrameScoringModel

    kind = FrameScoringModel if getattr(model.encoder, "scores_frames", False) else SpeakerModel
    return kind(model, config, meta, device=device, model_dir=folder, max_seconds=max_seconds,
                        identity=identity)

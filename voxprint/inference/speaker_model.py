"""Embedding extraction with a trained model: the GE2E paper's sliding-window d-vector.

An utterance's embedding is the mean of the L2-normalised embeddings of ``window_frames``-frame
windows with ``overlap`` (default 160 frames, 50 %), L2-normalised again so stored embeddings are
unit vectors. Audio shorter than one window is embedded as a single window.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from voxprint.audio import load_audio, remove_silence
from voxprint.backends.pipeline import ScoringBackend
from voxprint.backends.scoring import cosine_similarity, mean_embedding
from voxprint.config import DEFAULTS, merge
from voxprint.data import read_data_folder
from voxprint.errors import ModelError
from voxprint.models import EmbeddingModel, build_embedding_model
from voxprint.paths import PACKAGE_DIR
from voxprint.training.checkpoint import META_NAME, MODEL_NAME, load_file

AudioInput = str | os.PathLike | np.ndarray
BUILTIN_MODELS = {"default": PACKAGE_DIR / "pretrained" / "default"}


def window_starts(num_frames: int, window: int, overlap: float) -> list[int]:
    """Start frames of the sliding windows; the last window is aligned to the end so no tail is lost."""
    if num_frames <= window:
        return [0]
    hop = max(1, int(round(window * (1.0 - overlap))))
    starts = list(range(0, num_frames - window + 1, hop))
    if starts[-1] != num_frames - window:
        starts.append(num_frames - window)
    return starts


class SpeakerModel:
    """A trained embedder ready for inference (WeSpeaker-style verbs).

    Attributes:
        threshold: accept threshold on the cosine score (the dev-set EER threshold for shipped
            models), or None when the model has not been calibrated.
    """

    def __init__(self, model: EmbeddingModel, config: dict[str, Any], meta: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu", model_dir: str | os.PathLike | None = None):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.meta = meta or {}
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self._backend: ScoringBackend | None = None
        self._encode = self.model.encode  # replaced by a frozen trace in optimize()
        self._optimized = False
        self.sample_rate = int(config["sample_rate"])
        inference = config["inference"]
        self.window_frames = int(inference["window_frames"])
        self.overlap = float(inference["overlap"])
        self.min_seconds = float(inference["min_seconds"])
        self.vad_threshold_db = config["vad"]["threshold_db"] if config["vad"]["enabled"] else None

    @property
    def threshold(self) -> float | None:
        return self.meta.get("threshold")

    @property
    def backend(self) -> ScoringBackend:
        """The scoring back-end named in ``meta.json`` (plain cosine when none is named)."""
        if self._backend is None:
            options = self.meta.get("backend", {})
            self._backend = (ScoringBackend.load(self.model_dir, **options) if options and self.model_dir
                             else ScoringBackend())
        return self._backend

    def verification_score(self, enroll: Sequence[AudioInput], test: AudioInput) -> float:
        """Score of ``test`` against a speaker enrolled from ``enroll`` with the model's back-end
        (a log-likelihood ratio when the back-end is calibrated); compare it with :attr:`threshold`."""
        return self.backend.score(self.extract_embeddings(list(enroll)), self.extract_embedding(test))

    @property
    def embedding_dim(self) -> int:
        return int(self.model.encoder.embedding_dim)

    def load(self, audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        wave = load_audio(audio, sample_rate=sample_rate, target_rate=self.sample_rate, min_seconds=self.min_seconds)
        if self.vad_threshold_db is not None:
            wave = remove_silence(wave, self.sample_rate, threshold_db=self.vad_threshold_db)
        return wave

    def _windows(self, wave: np.ndarray) -> torch.Tensor:
        """Feature windows (W, window_frames or fewer, bins) of one waveform."""
        feats = self.model.features(torch.from_numpy(wave).to(self.device).unsqueeze(0))[0]
        starts = window_starts(feats.shape[0], self.window_frames, self.overlap)
        return torch.stack([feats[s:s + self.window_frames] for s in starts])

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

    @torch.inference_mode()
    def _embed_windows(self, windows: list[torch.Tensor]) -> list[np.ndarray]:
        """Embed the windows of several utterances in one encoder call per distinct window length."""
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_length.setdefault(w.shape[1], []).append(i)
        results: list[np.ndarray | None] = [None] * len(windows)
        for indices in by_length.values():
            stacked = torch.cat([windows[i] for i in indices])
            # Windows are normalised before averaging (GE2E paper, 3.3) whatever the encoder returns.
            embs = torch.nn.functional.normalize(self._encode(stacked), dim=-1)
            offset = 0
            for i in indices:
                count = windows[i].shape[0]
                mean = embs[offset:offset + count].mean(dim=0)
                results[i] = torch.nn.functional.normalize(mean, dim=0).cpu().numpy()
                offset += count
        return results  # type: ignore[return-value]

    def extract_embedding(self, audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """Embedding (unit vector, float32) of a file path or a waveform array (``sample_rate`` required)."""
        return self._embed_windows([self._windows(self.load(audio, sample_rate))])[0]

    def extract_embeddings(self, audios: Sequence[AudioInput], batch_windows: int = 256,
                           progress: bool = False, desc: str = "embedding") -> np.ndarray:
        """Embeddings (n, dim) of many files, batching windows across utterances for speed."""
        if len(audios) >= 32:
            self.optimize()
        out = np.zeros((len(audios), self.embedding_dim), dtype=np.float32)
        pending: list[int] = []
        pending_windows: list[torch.Tensor] = []

        def flush() -> None:
            for index, emb in zip(pending, self._embed_windows(pending_windows)):
                out[index] = emb
            pending.clear()
            pending_windows.clear()

        for i, audio in enumerate(tqdm(audios, desc=desc, disable=not progress, unit="utt")):
            pending.append(i)
            pending_windows.append(self._windows(self.load(audio)))
            if sum(w.shape[0] for w in pending_windows) >= batch_windows:
                flush()
        if pending:
            flush()
        return out

    def embed_folder(self, data_dir: str | os.PathLike, progress: bool = True) -> tuple[list[str], np.ndarray]:
        """Embed every utterance of a Kaldi-style data folder; returns (utterance ids, matrix)."""
        folder = read_data_folder(data_dir)
        ids = folder.utterances
        return ids, self.extract_embeddings([folder.wav[u] for u in ids], progress=progress)

    def compute_similarity(self, a: AudioInput, b: AudioInput) -> float:
        """Cosine similarity of two recordings."""
        return cosine_similarity(self.extract_embedding(a), self.extract_embedding(b))

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


def resolve_model_dir(name_or_dir: str | os.PathLike) -> Path:
    if str(name_or_dir) in BUILTIN_MODELS:
        return BUILTIN_MODELS[str(name_or_dir)]
    path = Path(name_or_dir).expanduser()
    if path.is_file():
        return path.parent
    if not path.is_dir():
        raise ModelError(f"model {name_or_dir!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) "
                         "nor a folder holding model.pt")
    return path


def load_model(name_or_dir: str | os.PathLike = "default", device: str | torch.device = "cpu") -> SpeakerModel:
    """Load a built-in model (``"default"``) or a training run folder (its ``model.pt``).

    Example:
        >>> model = load_model("default")  # doctest: +SKIP
        >>> model.compute_similarity("a.wav", "b.wav")  # doctest: +SKIP
    """
    folder = resolve_model_dir(name_or_dir)
    state = load_file(folder / MODEL_NAME)
    if "config" not in state or "state_dict" not in state:
        raise ModelError(f"{folder / MODEL_NAME} is not a voxprint model file (a checkpoint.pt is not loadable here)")
    # Files written by older versions lack newer options: their defaults apply.
    config = merge(DEFAULTS, state["config"])
    model = build_embedding_model(config)
    model.load_state_dict(state["state_dict"])
    meta_path = folder / META_NAME
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return SpeakerModel(model, config, meta, device=device, model_dir=folder)

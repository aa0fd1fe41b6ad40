"""A trained model ready for inference: load it, embed recordings, score them with its back-end.

An utterance's embedding is the normalised mean of the normalised embeddings of its sliding windows
(:class:`~voxprint.inference.windows.SlidingWindowEmbedder`; by default 160 frames with 50 % overlap,
the GE2E paper's d-vector). Audio shorter than one window is embedded as a single window.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from voxprint.audio import DEFAULT_MAX_SECONDS
from voxprint.backends.verifier import AudioInput, EmbeddedSet, OnError, TrialScores, WindowedEmbedder
from voxprint.config import DEFAULTS, merge
from voxprint.errors import ModelError, VoxprintError
from voxprint.inference.windows import SlidingWindowEmbedder
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

# EmbeddedSet and TrialScores live with the torch-free part of the model (voxprint.backends.verifier).
__all__ = ["AudioInput", "EmbeddedSet", "OnError", "SpeakerModel", "TrialScores", "load_model", "resolve_device",
           "trace_encoder"]


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


class SpeakerModel(WindowedEmbedder):
    """A trained embedder ready for inference (WeSpeaker-style verbs): its sliding windows run in torch;
    decoding, bulk embedding (``embed_many``, ``embed_folder``), trial lists (``score_trial_list``),
    ``threshold``, ``backend`` and ``verification_score`` come from the torch-free
    :class:`~voxprint.backends.verifier.WindowedEmbedder`, which the torch-free
    :class:`~voxprint.export.standalone.StandaloneEmbedder` shares.

    Attributes:
        threshold: accept threshold for :meth:`verification_score` (stored in ``meta.json`` by
            ``voxprint eval --write-threshold``), or None when the model has none.
        identity: the weights + back-end identity a speaker store records (None for a model built in memory).
        stores_embeddings: True: a speaker store may keep this model's embeddings and score them with its
            back-end (see :class:`~voxprint.inference.frame_scoring.FrameScoringModel` for a model that may not).
    """

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
        self._encode_padded: Callable[..., torch.Tensor] | None = None  # its padded-segment trace, made on first use
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
                                     device=self.device, encode_padded=self._padded_segments)

    def _padded_segments(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``model.encode`` of zero-padded segments with their lengths. Once optimised, a trace of its own, made
        the first time padded segments come (on several threads; one thread never pads, so the plain trace
        keeps doing without the masks, which cost about 10 % there)."""
        if not self._optimized or self._encode is self.model.encode:  # eager, as the plain segments are
            return self.model.encode(feats, lengths)
        if self._encode_padded is None:
            self._encode_padded = trace_encoder(self.model, padded=True) or self.model.encode
        return self._encode_padded(feats, lengths)

    def optimize(self) -> "SpeakerModel":
        """Swap in a frozen TorchScript trace of the encoder, for throughput on CPU.

        Freezing folds batch norms into convolutions and picks oneDNN kernels (about 1.3x faster on
        one thread for ECAPA-TDNN). It costs about 2 s once, so bulk extraction does it by itself and
        one-off calls (``verify``, ``similarity``) do not. Only encoders marked ``traceable`` are
        traced, and the trace is dropped if it disagrees with the eager model on other lengths. Padded
        segments (:class:`~voxprint.inference.SlidingWindowEmbedder` on several threads) get a trace of
        their own, made when the first ones come.
        """
        if not self._optimized:
            self._optimized = True
            if getattr(self.model.encoder, "traceable", False) and self.device.type == "cpu":
                self._encode = trace_encoder(self.model) or self.model.encode
        return self

    def diarize(self, audio: AudioInput, sample_rate: int | None = None, **options: Any) -> Any:
        """Who spoke when: :func:`voxprint.diarization.diarize` with this model (``num_speakers``, ``store``...)."""
        from voxprint.diarization import diarize

        return diarize(self, audio, sample_rate=sample_rate, **options)


class EncodeModule(torch.nn.Module):
    """``model.encode`` (frames to embeddings) as a module of its own, for tracing."""

    def __init__(self, model: EmbeddingModel):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.encode(feats, lengths)


def trace_encoder(model: EmbeddingModel, tolerance: float = 1e-4, padded: bool = False):
    """Frozen, inference-optimised trace of ``model.encode``, or None when it does not match eager.

    With ``padded`` (an encoder with ``exact_padding``) the trace takes ``(feats, lengths)`` of zero-padded
    segments and is checked on padded segments.
    """
    dim = model.frontend.dim if hasattr(model.frontend, "dim") else model.frontend.n_mels
    generator = torch.Generator().manual_seed(0)
    if padded and not model.exact_padding:
        raise ValueError("padded segments need an encoder with exact_padding")

    def inputs(frames: int, lengths: list[int]) -> tuple[torch.Tensor, ...]:
        feats = torch.randn(len(lengths), frames, dim, generator=generator)
        if not padded:
            return (feats,)
        valid = torch.tensor(lengths)
        return feats * (torch.arange(frames)[None, :, None] < valid[:, None, None]), valid

    with torch.no_grad():
        trace = torch.jit.trace(EncodeModule(model).eval(), inputs(300, [300, 280]))
        traced = torch.jit.optimize_for_inference(torch.jit.freeze(trace))
        for frames, lengths in ((30, [30, 30]), (777, [777, 500])):
            probe = inputs(frames, lengths if padded else [frames, frames])
            if (traced(*probe) - model.encode(*probe)).abs().max() > tolerance:
                return None
    return traced


def load_model(name_or_dir: str | os.PathLike = "default", device: str | torch.device = "cpu",
               max_seconds: float | None = DEFAULT_MAX_SECONDS) -> SpeakerModel:
    """Load a built-in model (``"default"``, ``"ivector"``, ``"fused"``) or a training run folder (its ``model.pt``).

    The file is read without executing code (tensors and plain data only), its weights are checked
    against the hash stored when it was written, and ``meta.json`` is checked. An exported folder runs in
    onnxruntime (:func:`voxprint.export.load_exported`); a fusion of models
    (:mod:`voxprint.inference.fused`) loads each of its parts here.

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
    from voxprint.inference.fused import is_fusion, load_fused

    folder = resolve_model_dir(name_or_dir)
    if is_fusion(folder):
        return load_fused(folder, lambda part: load_model(part, device, max_seconds))
    if (exported := load_exported(folder, device, max_seconds)) is not None:
        return exported
    device = resolve_device(device)
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

"""Running an exported model: the onnxruntime encoder and :func:`load_exported`, the hook of ``load_model``.

An ONNX export loads as an ordinary :class:`~voxprint.inference.SpeakerModel` whose encoder is an
:class:`OnnxEncoder`, so everything that takes a model uses it unchanged, with the folder's back-end and
threshold. The front-end, the mean normalisation and the sliding windows stay voxprint's (in torch); only
the encoder runs in onnxruntime.

The CLI's model verbs (``embed``, ``eval``, ``eval-id``, ``similarity``, ``verify``, ``enroll``,
``identify``) run an export they can on the CPU through the torch-free
:class:`~voxprint.export.standalone.StandaloneEmbedder` instead (:func:`voxprint.cli.core.load_cli_embedder`);
both derive from :class:`~voxprint.backends.verifier.WindowedEmbedder`, so they score, skip and identify alike,
and both give a speaker store the same model identity. The other verbs (``diarize``, ``spot``, ``serve``,
``clean``, ``store reembed``) and :func:`voxprint.load_model` itself load it here, with torch.

onnxruntime is imported when an ONNX export is loaded, never before: the package works without it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from voxprint.audio import DEFAULT_MAX_SECONDS
from voxprint.config import DEFAULTS, merge
from voxprint.errors import ModelError, VoxprintError
from voxprint.export.metadata import EXPORT_FILE, describe_frontend, read_export_record
from voxprint.export.standalone import INSTALL_HINT, onnxruntime_session

if TYPE_CHECKING:
    from voxprint.inference.speaker_model import SpeakerModel

__all__ = ["INSTALL_HINT", "OnnxEncoder", "is_export", "load_exported"]


def is_export(folder: str | os.PathLike) -> bool:
    """True when ``folder`` is an exported model folder (it holds ``export.json``).

    Example:
        >>> from voxprint.runs import BUILTIN_MODELS
        >>> is_export(BUILTIN_MODELS["default"])
        False
    """
    return (Path(folder) / EXPORT_FILE).is_file()


class OnnxEncoder(nn.Module):
    """An exported encoder run by onnxruntime, with the encoder contract: frames (B, F, D) -> (B, E).

    It holds no torch parameters; inputs are copied to float32 numpy arrays and the output comes back
    as a CPU tensor.

    Args:
        path: the ``.onnx`` graph (input ``frames``, output ``embeddings``).
        embedding_dim: the embedding size E.
        threads: onnxruntime intra-op threads (default: torch's current thread count, which ``--threads``
            sets, so both runtimes obey one setting).

    Attributes:
        traceable: False: :meth:`SpeakerModel.optimize` must not trace it.
    """

    traceable = False

    def __init__(self, path: str | os.PathLike, embedding_dim: int, threads: int | None = None):
        super().__init__()
        self.path = Path(path)
        self.embedding_dim = int(embedding_dim)
        self.session = onnxruntime_session(self.path, threads or torch.get_num_threads())
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, E) of equal-length segments of frames (B, F, D)."""
        array = np.ascontiguousarray(frames.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])

    def extra_repr(self) -> str:
        return f"{self.path.name}, embedding_dim={self.embedding_dim}"


def load_exported(folder: str | os.PathLike, device: str | torch.device = "cpu",
                  max_seconds: float | None = DEFAULT_MAX_SECONDS) -> SpeakerModel | None:
    """Load an exported model folder as a :class:`~voxprint.inference.SpeakerModel`, or None when it is not one.

    The graph is checked against its recorded hash, the front-end rebuilt from the recorded config is
    checked against the recorded front-end description (so a voxprint whose feature code changed
    refuses the folder instead of feeding the graph other frames), and ``meta.json`` is checked. The
    model's identity is that of the exported graph and the back-end, not the source's: a speaker store
    never mixes its embeddings with those of another runtime or precision.

    Args:
        folder: a model folder (anything that is not an export returns None).
        device: ``cpu`` or ``auto``: onnxruntime runs on the CPU here.
        max_seconds: longest recording accepted (None: no limit).

    Returns:
        The loaded model, or None when ``folder`` holds no ``export.json``.

    Raises:
        ModelError: a one-line reason for anything that makes the export unusable (corrupt graph,
            changed front-end, a TorchScript export, another device, onnxruntime missing).

    Example:
        >>> from voxprint.runs import BUILTIN_MODELS
        >>> load_exported(BUILTIN_MODELS["default"]) is None
        True
    """
    from voxprint.inference.speaker_model import SpeakerModel
    from voxprint.models import build_embedding_model
    from voxprint.runs import BACKEND_DIR, model_identity, read_meta

    folder = Path(folder)
    if not is_export(folder):
        return None
    record = read_export_record(folder)
    if record["format"] != "onnx":
        # A TorchScript archive is a program: loading it would run code from the folder, which
        # load_model never does (README, "Loading never runs code").
        raise ModelError(f"{folder} is a TorchScript export, for libtorch (C++) deployment; voxprint loads "
                         "only ONNX exports (loading TorchScript runs the archive's code): export with --format onnx")
    if str(device) not in ("cpu", "auto"):
        raise ModelError(f"{folder} is an ONNX export, run by onnxruntime on the CPU here; use --device cpu "
                         f"(not {str(device)!r}) or the source model")
    config = merge(DEFAULTS, record["config"])
    try:
        model = build_embedding_model(config)
    except VoxprintError as exc:
        raise ModelError(f"{folder / EXPORT_FILE}: {exc}") from None
    rebuilt = json.loads(json.dumps(describe_frontend(model, config)))
    if rebuilt != record["frontend"]:
        changed = sorted(k for k in set(rebuilt) | set(record["frontend"])
                         if rebuilt.get(k) != record["frontend"].get(k))
        raise ModelError(f"{folder}: this voxprint's front-end differs from the exported one "
                         f"({', '.join(changed)}); export the model again with this version")
    # The graph replaces the freshly initialised encoder; front-end and normalisation stay voxprint's.
    model.encoder = OnnxEncoder(folder / record["file"], record["embedding_dim"])
    meta = read_meta(folder)
    backend = folder / BACKEND_DIR
    identity = model_identity(record["sha256"], backend if backend.is_dir() else None)
    return SpeakerModel(model, config, meta, device="cpu", model_dir=folder, max_seconds=max_seconds,
                        identity=identity)

"""Waveform -> embedding: the feature front-end, its normalisation and a registered encoder in one module.

Keeping the front-end inside the model means a saved model embeds raw audio the same way it was
trained, whatever the encoder.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

import voxprint.features  # noqa: F401  (registers the front-ends)
from voxprint.features import mean_normalize, sliding_mean_normalize
from voxprint.registry import FRONTENDS, MODELS


class EmbeddingModel(nn.Module):
    """Front-end + encoder: the contract every embedder follows.

    - ``features(waves)``: float32 waveforms (B, T) in [-1, 1] at ``sample_rate`` -> frames (B, F, D),
      i.e. ``normalize_features(frontend(waves))``. The front-end exposes ``sample_rate``,
      ``frame_shift``, ``num_frames(samples)`` and ``num_samples(frames)`` (raw-waveform models have one
      "frame" per sample).
    - ``encode(frames)``: frames (B, F, D) of B segments of equal length F (a training crop or an
      inference window; no padding, so no padding can change an embedding; only an encoder that
      declares ``exact_padding`` also takes zero-padded segments with their lengths) ->
      (B, E) float32 embeddings with ``E == encoder.embedding_dim``, each row depending on its own
      segment only (eval mode). The output is **not necessarily normalised**: the LSTM encoders return
      unit vectors, ECAPA-TDNN, the ResNets, the x-vector TDNN and RawNet2 return raw affine outputs (a
      margin loss normalises inside). Every consumer that compares embeddings normalises them; the
      :class:`~voxprint.inference.SlidingWindowEmbedder` normalises each window.
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        feats = config["features"]
        self.normalize = feats["normalize"]
        self.sliding_window_frames = int(feats["sliding_window_frames"])
        frontend_class = FRONTENDS.get(feats["type"])
        # The features section holds options of several front-ends (its defaults are fbank's); pass
        # each front-end the ones it takes.
        accepted = inspect.signature(frontend_class).parameters
        frontend_options = {k: v for k, v in feats.items() if k in accepted}
        self.frontend = FRONTENDS.build(feats["type"], sample_rate=config["sample_rate"], **frontend_options)
        options = {k: v for k, v in config["model"].items() if k != "name"}
        input_dim = getattr(self.frontend, "dim", None) or feats["n_mels"]
        self.encoder = MODELS.build(config["model"]["name"], input_dim=input_dim, **options)

    @torch.no_grad()
    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """Normalised frames (B, F, D) of waveforms (B, T)."""
        return self.normalize_features(self.frontend(waves))

    def normalize_features(self, feats: torch.Tensor) -> torch.Tensor:
        """The whole-input part of the mean normalisation (``sliding``); ``segment`` happens in :meth:`encode`."""
        if self.normalize == "sliding":
            feats = sliding_mean_normalize(feats, self.sliding_window_frames)
        return feats

    @property
    def exact_padding(self) -> bool:
        """Whether :meth:`encode` takes padded segments with their ``lengths`` (the encoder's ``exact_padding``)."""
        return bool(getattr(self.encoder, "exact_padding", False))

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings (B, E) of equal-length segments of frames (B, F, D); see the class contract.

        An encoder with ``exact_padding`` also takes segments of different lengths, zero-padded to F, with
        ``lengths`` (B,) their valid frames: each row's embedding is then that of its unpadded segment.

        Raises:
            ValueError: ``lengths`` for an encoder without ``exact_padding``.
        """
        if lengths is None:
            return self.encoder(mean_normalize(feats) if self.normalize == "segment" else feats)
        if not self.exact_padding:
            raise ValueError(f"{type(self.encoder).__name__} cannot embed padded segments exactly; "
                             "give segments of equal length")
        if self.normalize == "segment":
            feats = mean_normalize(feats, lengths)  # the padding stays zero
        return self.encoder(feats, lengths)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.encode(self.features(waves))


def build_embedding_model(config: dict[str, Any]) -> EmbeddingModel:
    """The embedding model a (merged, checked) config describes, with freshly initialised weights."""
    return EmbeddingModel(config)

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
    """Front-end + encoder.

    ``features`` turns waveforms (B, T) into frames (B, F, D); ``encode`` turns frames of one segment
    (a training crop or an inference window) into L2-normalised embeddings.
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
        feats = self.frontend(waves)
        if self.normalize == "sliding":
            feats = sliding_mean_normalize(feats, self.sliding_window_frames)
        return feats

    def encode(self, feats: torch.Tensor) -> torch.Tensor:
        if self.normalize == "segment":
            feats = mean_normalize(feats)
        return self.encoder(feats)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.encode(self.features(waves))


def build_embedding_model(config: dict[str, Any]) -> EmbeddingModel:
    return EmbeddingModel(config)

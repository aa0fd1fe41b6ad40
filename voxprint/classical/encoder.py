"""What the GMM-UBM and i-vector encoders share: a UBM held as buffers, and the frame post-processing.

They follow the encoder contract of :class:`~voxprint.models.EmbeddingModel` (frames (B, F, D) of
equal-length segments -> (B, E) embeddings), so a run folder of either loads with
:func:`voxprint.load_model` and works with every verb; their parameters are buffers (saved in
``model.pt`` and hashed like any weights), and they are trained by EM
(:mod:`voxprint.training.statistical`), never by gradients: ``statistical = True`` says so.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from voxprint.classical.frames import classical_frames
from voxprint.classical.gmm import DiagonalGMM, train_ubm
from voxprint.errors import ConfigError

__all__ = ["StatisticalEncoder", "StepReport", "host_array"]

#: Called after each EM step with (stage, iteration, figure): e.g. ("ubm 256", 3, -62.1).
StepReport = Callable[[str, int, float], None]


def host_array(tensor: torch.Tensor) -> np.ndarray:
    """A buffer as a numpy array. The EM models compute in numpy on the CPU wherever the module was put
    (``load_model(..., device="cuda")`` moves every buffer; a fused model's neural half runs there)."""
    return tensor.detach().cpu().numpy()


class StatisticalEncoder(nn.Module):
    """Base of the encoders trained by EM on a diagonal UBM (see the module docstring).

    Args:
        input_dim: cepstra per frame from the front-end (e.g. 20 MFCCs).
        num_components: Gaussians K of the UBM (a power of two).
        deltas: time derivatives appended to the cepstra (2: deltas and double deltas).
        top_c: components per frame kept in the posteriors (None, or more than K: all).

    Attributes:
        statistical: True: trained by :func:`voxprint.training.statistical.train_statistical`.
        traceable: False: the numpy computation cannot be traced to TorchScript or ONNX.
        frame_dim: D, the dimension of the frames the UBM models: ``input_dim * (deltas + 1)``.
    """

    statistical = True
    traceable = False

    def __init__(self, input_dim: int, num_components: int = 256, deltas: int = 2, top_c: int | None = None):
        super().__init__()
        if num_components < 1 or num_components & (num_components - 1):
            raise ConfigError(f"num_components must be a power of two (1, 2, 4, ... 512), not {num_components}")
        if deltas not in (0, 1, 2):
            raise ConfigError(f"deltas must be 0, 1 or 2, not {deltas}")
        if top_c is not None and top_c < 1:
            raise ConfigError(f"top_c must be at least 1 (or null for every component), not {top_c}")
        self.input_dim, self.num_components, self.deltas, self.top_c = input_dim, num_components, deltas, top_c
        self.frame_dim = input_dim * (deltas + 1)
        # An untrained UBM: unit Gaussians at random means (seeded by torch's generator, as neural weights
        # are; identical components would make every posterior, and every adaptation, the same). EM replaces it.
        self.register_buffer("ubm_weights", torch.full((num_components,), 1.0 / num_components, dtype=torch.float64))
        self.register_buffer("ubm_means", torch.randn(num_components, self.frame_dim, dtype=torch.float64))
        self.register_buffer("ubm_variances", torch.ones(num_components, self.frame_dim, dtype=torch.float64))
        self.reset_cache()
        self.register_load_state_dict_post_hook(lambda module, _keys: module.reset_cache())

    def reset_cache(self) -> None:
        """Forget values derived from the buffers (after they change)."""
        self._ubm = None

    @property
    def ubm(self) -> DiagonalGMM:
        """The universal background model held in the buffers."""
        if self._ubm is None:
            self._ubm = DiagonalGMM(*(host_array(b) for b in (self.ubm_weights, self.ubm_means, self.ubm_variances)))
        return self._ubm

    def set_ubm(self, ubm: DiagonalGMM) -> None:
        """Store a trained UBM in the buffers."""
        if (ubm.num_components, ubm.dim) != (self.num_components, self.frame_dim):
            raise ConfigError(f"a UBM of {ubm.num_components} x {ubm.dim} does not fit this encoder "
                              f"({self.num_components} x {self.frame_dim})")
        for name, value in ubm.to_arrays().items():
            getattr(self, f"ubm_{name}").copy_(torch.from_numpy(value))
        self.reset_cache()

    def fit(self, recordings: list[np.ndarray], options: dict[str, Any], seed: int = 0,
            report: StepReport | None = None) -> None:
        """Train by EM on the processed frames of the training recordings: here the UBM (binary
        splitting, then EM on at most ``ubm_max_frames`` frames drawn at random).

        Args:
            recordings: processed frames (T_i, D) of each training recording.
            options: the config's ``em`` section (see :data:`voxprint.config.DEFAULTS`).
            seed: seed of the random draws.
            report: called after each EM step.
        """
        frames = np.concatenate(recordings, axis=0)
        if len(frames) > options["ubm_max_frames"]:
            rng = np.random.default_rng(seed)
            frames = frames[np.sort(rng.choice(len(frames), options["ubm_max_frames"], replace=False))]
        self.set_ubm(train_ubm(frames, self.num_components, iterations=options["ubm_iterations"],
                               split_iterations=options["split_iterations"],
                               variance_floor=options["variance_floor"],
                               on_iteration=None if report is None else
                               lambda k, i, ll: report(f"ubm {k}", i, ll)))

    def frames(self, cepstra: torch.Tensor | np.ndarray) -> np.ndarray:
        """The frames the UBM models, from one segment's cepstra (F, input_dim)."""
        array = host_array(cepstra) if isinstance(cepstra, torch.Tensor) else np.asarray(cepstra)
        return classical_frames(array, self.deltas)

    def embed_frames(self, segments: list[np.ndarray]) -> np.ndarray:
        """(B, E) embeddings of B segments' processed frames; what each encoder defines."""
        raise NotImplementedError

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, E) of segments of cepstra (B, F, input_dim), on the device of ``feats``."""
        embeddings = self.embed_frames([self.frames(segment) for segment in feats]).astype(np.float32)
        return torch.from_numpy(embeddings).to(feats.device)

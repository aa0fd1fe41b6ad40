"""The identity front-end for raw-waveform models (RawNet2): one "frame" per sample."""
from __future__ import annotations

import torch
from torch import nn

from voxprint.errors import AudioError
from voxprint.registry import FRONTENDS


@FRONTENDS.register("raw")
class RawWaveform(nn.Module):
    """Passes waveforms through as (batch, samples, 1), so crops and inference windows are counted
    in samples (``data.crop_frames`` and ``inference.window_frames`` are sample counts for such models).

    Example:
        >>> RawWaveform()(torch.zeros(2, 16000)).shape
        torch.Size([2, 16000, 1])
    """

    dim = 1
    frame_length = 1
    frame_shift = 1

    def __init__(self, sample_rate: int = 16000, min_samples: int = 400):
        super().__init__()
        self.sample_rate = sample_rate
        self.min_samples = min_samples

    def num_frames(self, num_samples: int) -> int:
        return num_samples

    def num_samples(self, num_frames: int) -> int:
        return num_frames

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.shape[-1] < self.min_samples:
            raise AudioError(f"audio of {waveforms.shape[-1]} samples is shorter than the model's "
                             f"{self.min_samples}-sample minimum")
        return waveforms.unsqueeze(-1)

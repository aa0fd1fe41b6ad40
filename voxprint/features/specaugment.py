"""SpecAugment time and frequency masking of feature batches (Park et al., 2019), without time warping.

Masking runs on the features' device as part of the model's forward pass, so it costs the input
pipeline nothing and a GPU batch never visits the CPU.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from voxprint.config import check_keys
from voxprint.errors import ConfigError

__all__ = ["SpecAugment"]


class SpecAugment(nn.Module):
    """Masks random bands of frames and of feature bins while training; the identity in eval mode.

    Each utterance gets exactly ``time_masks`` bands of 1 to ``max_time_width`` frames and
    ``freq_masks`` bands of 1 to ``max_freq_width`` bins. Bands of one kind never overlap or touch
    (at least one unmasked frame/bin lies between two), so the masked amount is what was asked
    for rather than shrinking when bands collide. Masked values are set to the utterance's mean
    over time of each bin, i.e. 0 after mean normalisation: the mask then carries no information,
    instead of an artificial silence level the model could learn to spot.

    If an utterance is too short for the requested bands, widths and then counts shrink to fit
    (``n`` bands need at least ``2n - 1`` frames).

    Args:
        time_masks: Number of time bands per utterance.
        max_time_width: Largest time band, in frames.
        freq_masks: Number of frequency bands per utterance.
        max_freq_width: Largest frequency band, in feature bins.

    Example:
        >>> aug = SpecAugment(time_masks=2, max_time_width=5, freq_masks=1, max_freq_width=4)
        >>> feats = torch.randn(3, 100, 40)
        >>> out = aug(feats)
        >>> out.shape, bool(aug.eval()(feats).equal(feats))
        (torch.Size([3, 100, 40]), True)
    """

    def __init__(self, time_masks: int = 1, max_time_width: int = 10, freq_masks: int = 1,
                 max_freq_width: int = 8) -> None:
        super().__init__()
        for name, value in (("time_masks", time_masks), ("max_time_width", max_time_width),
                            ("freq_masks", freq_masks), ("max_freq_width", max_freq_width)):
            if int(value) != value or value < 0:
                raise ConfigError(f"SpecAugment {name} must be a non-negative integer, got {value!r}")
        self.time_masks = int(time_masks)
        self.max_time_width = int(max_time_width)
        self.freq_masks = int(freq_masks)
        self.max_freq_width = int(max_freq_width)

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> SpecAugment:
        """Build from the ``specaugment:`` section of a config; unknown keys are errors.

        Args:
            options: Constructor arguments by name.

        Returns:
            A new :class:`SpecAugment`.

        Example:
            >>> SpecAugment.from_config({"time_mask": 2})
            Traceback (most recent call last):
            ...
            voxprint.errors.ConfigError: config: unknown key 'time_mask' in section 'specaugment'; did you mean 'time_masks'?
        """
        check_keys(options, inspect.signature(cls).parameters, "specaugment")
        return cls(**options)

    def masks(self, batch: int, frames: int, dims: int, device: torch.device | str | None = None,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws the boolean masks of a batch.

        Args:
            batch, frames, dims: Batch size, frames per utterance, feature bins.
            device: Where to build the masks.
            generator: Random source (on ``device``); the global one by default.

        Returns:
            ``time_mask`` ``(batch, frames)`` and ``freq_mask`` ``(batch, dims)``, True where masked.
        """
        time_mask = _bands(batch, frames, self.time_masks, self.max_time_width, device, generator)
        freq_mask = _bands(batch, dims, self.freq_masks, self.max_freq_width, device, generator)
        return time_mask, freq_mask

    def forward(self, feats: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Masks ``feats`` when training; returns it unchanged in eval mode.

        Args:
            feats: Features ``(batch, frames, dims)`` or ``(frames, dims)``.
            generator: Random source (on the features' device); the global one by default.

        Returns:
            Masked features, same shape, dtype and device.
        """
        if feats.dim() not in (2, 3):
            raise ValueError("SpecAugment expects features shaped (frames, dims) or (batch, frames, dims), "
                             f"got {tuple(feats.shape)}")
        if not self.training or (self.time_masks == 0 and self.freq_masks == 0):
            return feats
        squeeze = feats.dim() == 2
        x = feats.unsqueeze(0) if squeeze else feats
        batch, frames, dims = x.shape
        time_mask, freq_mask = self.masks(batch, frames, dims, x.device, generator)
        mask = time_mask.unsqueeze(-1) | freq_mask.unsqueeze(-2)
        out = torch.where(mask, x.mean(dim=-2, keepdim=True), x)
        return out.squeeze(0) if squeeze else out

    def extra_repr(self) -> str:
        return (f"time_masks={self.time_masks}, max_time_width={self.max_time_width}, "
                f"freq_masks={self.freq_masks}, max_freq_width={self.max_freq_width}")


def _bands(batch: int, length: int, count: int, max_width: int, device: torch.device | str | None,
           generator: torch.Generator | None) -> torch.Tensor:
    """``count`` disjoint, non-adjacent bands of 1..``max_width`` positions per row, as a boolean mask."""
    if count == 0 or max_width == 0 or length == 0:
        return torch.zeros(batch, length, dtype=torch.bool, device=device)
    count = min(count, (length + 1) // 2)
    max_width = min(max_width, (length - (count - 1)) // count)
    widths = torch.randint(1, max_width + 1, (batch, count), device=device, generator=generator)
    # Free positions left once the bands and their one-position gaps are laid out.
    slack = length - widths.sum(dim=1, keepdim=True) - (count - 1)
    offsets = (torch.rand(batch, count, device=device, generator=generator) * (slack + 1)).floor().long()
    offsets = offsets.clamp(max=slack).sort(dim=1).values
    # Band i starts after bands 0..i-1 and their gaps, pushed right by its sorted free offset.
    starts = offsets + torch.cumsum(widths, dim=1) - widths + torch.arange(count, device=device)
    positions = torch.arange(length, device=device)
    inside = (positions >= starts.unsqueeze(-1)) & (positions < (starts + widths).unsqueeze(-1))
    return inside.any(dim=1)

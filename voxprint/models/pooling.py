"""Temporal pooling: frame-level features (batch, channels, frames) -> one vector per utterance.

Every module takes an optional ``lengths`` (valid frames per utterance); frames beyond it are padding
and never influence the result, so a padded batch pools exactly like its utterances one by one.
Modules are registered by config name in :data:`POOLING`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from voxprint.errors import ConfigError


def length_mask(lengths: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """Boolean (batch, 1, frames) mask of the valid frames of ``x``, or None when every frame is valid.

    Example:
        >>> length_mask(torch.tensor([2, 3]), torch.zeros(2, 4, 3)).squeeze(1)
        tensor([[ True,  True, False],
                [ True,  True,  True]])
    """
    if lengths is None:
        return None
    frames = torch.arange(x.shape[-1], device=x.device)
    return (frames[None, :] < lengths.to(x.device)[:, None]).unsqueeze(1)


def weighted_mean_std(x: torch.Tensor, weights: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of ``x`` (B, C, T) over time under ``weights`` that sum to 1 over T.

    The variance is the biased (population) one, so uniform weights give exactly the plain mean and
    std; it is floored at ``eps`` because silent or dead channels have zero variance and the gradient
    of sqrt is infinite there. It is computed as E[x^2] - E[x]^2: one pass fewer over the largest
    tensor of the model than the centred form (about 15 % of ECAPA-TDNN's CPU inference time); it
    loses float32 precision only when a channel's |mean| exceeds its std ~1000-fold, which normalised
    frame-level features do not reach, and the floor absorbs the rounding.

    Example:
        >>> x = torch.tensor([[[1.0, 3.0]]])
        >>> weighted_mean_std(x, torch.full((1, 1, 2), 0.5))
        (tensor([[2.]]), tensor([[1.]]))
    """
    weighted = weights * x
    mean = weighted.sum(dim=-1)
    var = (weighted * x).sum(dim=-1) - mean.square()
    return mean, var.clamp(min=eps).sqrt()


def _uniform_weights(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.new_full((1, 1, x.shape[-1]), 1.0 / x.shape[-1])
    mask = mask.to(x.dtype)
    return mask / mask.sum(dim=-1, keepdim=True).clamp(min=1.0)


def _zero_padding(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # Weights of 0 do not cancel NaN or inf in padding (0 * inf = nan), so padding is cleared first.
    return x if mask is None else x.masked_fill(~mask, 0.0)


class TemporalAveragePooling(nn.Module):
    """TAP: the mean over valid frames.

    Args:
        in_dim: Channels of the input; the output has as many (``out_dim``).

    Example:
        >>> pool = TemporalAveragePooling(4)
        >>> pool(torch.randn(2, 4, 30), lengths=torch.tensor([30, 12])).shape
        torch.Size([2, 4])
    """

    def __init__(self, in_dim: int):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        mask = length_mask(lengths, x)
        return (_zero_padding(x, mask) * _uniform_weights(x, mask)).sum(dim=-1)


class TemporalStatisticsPooling(nn.Module):
    """TSTP: mean and standard deviation over valid frames, concatenated (x-vector statistics pooling).

    Args:
        in_dim: Channels of the input; the output has twice as many (``out_dim``): means, then stds.
        eps: Floor of the variance (see :func:`weighted_mean_std`).

    Example:
        >>> pool = TemporalStatisticsPooling(4)
        >>> pool(torch.randn(2, 4, 30)).shape
        torch.Size([2, 8])
    """

    def __init__(self, in_dim: int, eps: float = 1e-5):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim
        self.eps = eps

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        mask = length_mask(lengths, x)
        mean, std = weighted_mean_std(_zero_padding(x, mask), _uniform_weights(x, mask), self.eps)
        return torch.cat([mean, std], dim=-1)


class AttentiveStatisticsPooling(nn.Module):
    """ASTP: attention-weighted mean and standard deviation (Okabe et al., 2018).

    A small network scores every frame, ``e_t = v^T tanh(W h_t + b) + k``; a softmax over the valid
    frames turns the scores into weights for the mean and std. With ``channel_wise`` each channel gets
    its own weights (ECAPA-TDNN, Desplanques et al., 2020); with ``global_context`` the scorer also sees
    the utterance's mean and std next to each frame, so "important" is judged relative to the whole
    recording (ECAPA-TDNN's context-dependent variant).

    Args:
        in_dim: Channels of the input; the output has twice as many (``out_dim``): weighted means, then stds.
        attention_dim: Bottleneck size of the scorer.
        global_context: Append the utterance mean and std to each frame before scoring.
        channel_wise: One weight per channel and frame (ECAPA) rather than one per frame (Okabe).
        eps: Floor of the variance (see :func:`weighted_mean_std`).

    Example:
        >>> pool = AttentiveStatisticsPooling(4, attention_dim=3, global_context=True)
        >>> pool(torch.randn(2, 4, 30), lengths=torch.tensor([30, 12])).shape
        torch.Size([2, 8])
    """

    def __init__(self, in_dim: int, attention_dim: int = 128, global_context: bool = False,
                 channel_wise: bool = True, eps: float = 1e-5):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim
        self.global_context = global_context
        self.eps = eps
        self.attention = nn.Sequential(
            nn.Conv1d(in_dim * (3 if global_context else 1), attention_dim, kernel_size=1),
            nn.Tanh(),
            nn.Conv1d(attention_dim, in_dim if channel_wise else 1, kernel_size=1),
        )

    def attention_weights(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Weights (batch, channels or 1, frames): non-negative, summing to 1 over the valid frames, 0 on padding."""
        mask = length_mask(lengths, x)
        x = _zero_padding(x, mask)
        if self.global_context:
            # Scoring [x_t, mean, std] frame by frame repeats the context's share of the first layer on
            # every frame; applying those weight columns once per utterance gives the same scores with a
            # third of that layer's compute and no (batch, 3C, frames) copy.
            mean, std = weighted_mean_std(x, _uniform_weights(x, mask), self.eps)
            first = self.attention[0]
            frame_weight, context_weight = first.weight.split([self.in_dim, 2 * self.in_dim], dim=1)
            context = F.linear(torch.cat([mean, std], dim=-1), context_weight.squeeze(-1), first.bias)
            scores = self.attention[1:](F.conv1d(x, frame_weight) + context.unsqueeze(-1))
        else:
            scores = self.attention(x)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        weights = self.attention_weights(x, lengths)
        mean, std = weighted_mean_std(_zero_padding(x, length_mask(lengths, x)), weights, self.eps)
        return torch.cat([mean, std], dim=-1)


POOLING: dict[str, type[nn.Module]] = {
    "TAP": TemporalAveragePooling,
    "TSTP": TemporalStatisticsPooling,
    "ASTP": AttentiveStatisticsPooling,
}


def build_pooling(name: str, in_dim: int, **options: Any) -> nn.Module:
    """The :data:`POOLING` module called ``name`` for ``in_dim`` channels; its ``out_dim`` is the output size.

    Example:
        >>> build_pooling("TSTP", 16).out_dim
        32
    """
    try:
        cls = POOLING[name]
    except KeyError:
        raise ConfigError(f"unknown pooling {name!r}; known: {', '.join(sorted(POOLING))}") from None
    return cls(in_dim, **options)

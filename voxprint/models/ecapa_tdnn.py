"""ECAPA-TDNN embedder (Desplanques et al., 2020): SE-Res2Net TDNN blocks, multi-layer aggregation,
attentive statistics pooling."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from voxprint.models.pooling import build_pooling, length_mask
from voxprint.registry import MODELS


def dilated_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
    """A "same"-padded dilated 1-D convolution as one matrix product over stacked shifted copies.

    Mathematically identical to ``F.conv1d(x, weight, bias, padding=..., dilation=dilation)``; PyTorch's
    CPU kernel for dilated convolutions loops over the batch and ran about 2x slower here.

    Example:
        >>> conv = nn.Conv1d(4, 5, 3, dilation=2, padding=2)
        >>> x = torch.randn(2, 4, 9)
        >>> torch.allclose(dilated_conv1d(x, conv.weight, conv.bias, 2), conv(x), atol=1e-6)
        True
    """
    out_channels, in_channels, kernel = weight.shape
    pad = dilation * (kernel - 1) // 2
    frames = x.shape[-1]
    padded = F.pad(x, (pad, pad))
    stacked = torch.cat([padded[..., i * dilation:i * dilation + frames] for i in range(kernel)], dim=1)
    out = torch.matmul(weight.permute(0, 2, 1).reshape(out_channels, kernel * in_channels), stacked)
    return out if bias is None else out + bias[:, None]


class ConvReluBN(nn.Module):
    """1-D convolution, ReLU, batch norm: the paper's frame layer ("same" padding keeps the frame count)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation,
                              padding=dilation * (kernel_size - 1) // 2)
        self.relu = nn.ReLU(inplace=True)  # the conv output is not needed for backward: save the copy
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv.dilation[0] > 1:
            y = dilated_conv1d(x, self.conv.weight, self.conv.bias, self.conv.dilation[0])
        else:
            y = self.conv(x)
        return self.bn(self.relu(y))


class Res2Conv(nn.Module):
    """Res2Net's hierarchical convolution: ``scale`` channel groups, each group's convolution also sees
    the previous group's output, so later groups have ever wider receptive fields at no extra width."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int):
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels ({channels}) must be divisible by the Res2Net scale ({scale})")
        self.scale = scale
        width = channels // scale
        # The first group passes through unchanged, as in Res2Net.
        self.convs = nn.ModuleList(ConvReluBN(width, width, kernel_size, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return res2_cascade(self.convs, x.chunk(self.scale, dim=1), mask)


def res2_cascade(convs: nn.ModuleList, groups: tuple[torch.Tensor, ...], mask: torch.Tensor | None = None) -> torch.Tensor:
    """Res2Net's hierarchical convolutions over channel groups: the first passes through, each next one is
    convolved after adding the previous output, and all are concatenated again.

    ``mask`` (batch, 1, frames; 1 on valid frames, 0 on padding) zeroes each convolution's input beyond a
    segment's end: its "same" padding then sees the zeros it sees at the end of an unpadded segment.
    """
    outputs = [groups[0]]
    y = None
    for conv, group in zip(convs, groups[1:]):
        x = group if y is None else group + y
        y = conv(x if mask is None else x * mask)
        outputs.append(y)
    return torch.cat(outputs, dim=1)


class SqueezeExcitation(nn.Module):
    """Rescale channels by gates computed from the utterance mean: global context for a local layer."""

    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(channels, bottleneck), nn.ReLU(), nn.Linear(bottleneck, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Gate ``x`` (batch, channels, frames) by its mean over the valid frames of ``mask`` (all when None)."""
        mean = x.mean(dim=-1) if mask is None else (x * mask).sum(dim=-1) / mask.sum(dim=-1)
        return x * self.gate(mean).unsqueeze(-1)


class SERes2Block(nn.Module):
    """1x1 frame layer -> dilated Res2Net convolution -> 1x1 frame layer -> SE.

    The residual is added by the caller: in ECAPA-TDNN it is the sum of all earlier layer outputs.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int, se_bottleneck: int):
        super().__init__()
        self.body = nn.Sequential(
            ConvReluBN(channels, channels),
            Res2Conv(channels, kernel_size, dilation, scale),
            ConvReluBN(channels, channels),
            SqueezeExcitation(channels, se_bottleneck),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The block on (batch, channels, frames); ``mask`` as :func:`res2_cascade` and the SE gate take it."""
        reduce, res2, expand, gate = self.body
        return gate(expand(res2(reduce(x), mask)), mask)


@MODELS.register("ecapa_tdnn")
class ECAPATDNN(nn.Module):
    """ECAPA-TDNN over log-mel frames (Desplanques et al., 2020); returns raw (unnormalised) embeddings.

    Conv1d (k=5) -> three SE-Res2Blocks (k=3, dilations 2, 3, 4), each fed the previous layer's output
    and given as residual the sum of the outputs of all earlier layers, stem included (the paper's
    summed residuals, Sec. 3.4) -> concatenation of the three block outputs -> 1x1 Conv1d to
    ``3 * channels`` -> attentive statistics pooling -> BN -> linear -> BN.

    Encoder parameters at 80 mels, embedding 192: C=256 2.05 M; C=512 6.19 M (the paper's 6.2 M);
    C=1024 20.76 M (the paper's 14.7 M keeps the aggregation at 1536 channels instead of 3C).

    Args:
        input_dim: Feature bins per frame.
        channels: Width C of the frame layers (paper: 512 or 1024); divisible by ``scale``.
        embedding_dim: Size of the embedding (paper: 192).
        scale: Res2Net scale: channel groups per block.
        se_bottleneck: Bottleneck of the squeeze-excitation gates.
        attention_dim: Bottleneck of the pooling attention (used by "ASTP" only).
        pooling: A :data:`voxprint.models.pooling.POOLING` name; "ASTP" in the paper.
        global_context: Give the attention the utterance mean and std (the paper's context-dependent pooling).

    Example:
        >>> model = ECAPATDNN(input_dim=40, channels=64, embedding_dim=16, se_bottleneck=8, attention_dim=8)
        >>> model(torch.randn(2, 50, 40)).shape
        torch.Size([2, 16])
    """

    #: Safe to trace for inference (no data-dependent Python control flow in forward).
    traceable = True
    #: With ``lengths``, a padded segment's embedding is its unpadded one (to float rounding): every
    #: convolution wider than one frame and every mean over time leaves the padding out, so segments of
    #: different lengths can share one call (:class:`~voxprint.inference.SlidingWindowEmbedder`).
    exact_padding = True

    def __init__(self, input_dim: int = 80, channels: int = 512, embedding_dim: int = 192, scale: int = 8,
                 se_bottleneck: int = 128, attention_dim: int = 128, pooling: str = "ASTP",
                 global_context: bool = True):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.stem = ConvReluBN(input_dim, channels, kernel_size=5)
        self.blocks = nn.ModuleList(
            SERes2Block(channels, kernel_size=3, dilation=d, scale=scale, se_bottleneck=se_bottleneck)
            for d in (2, 3, 4)
        )
        # The paper's aggregation layer is Conv1D + ReLU without BN: the pooling's BN follows.
        self.aggregate = nn.Sequential(nn.Conv1d(3 * channels, 3 * channels, kernel_size=1), nn.ReLU())
        options = {"attention_dim": attention_dim, "global_context": global_context} if pooling == "ASTP" else {}
        self.pooling = build_pooling(pooling, 3 * channels, **options)
        self.pooling_bn = nn.BatchNorm1d(self.pooling.out_dim)
        self.embedding = nn.Linear(self.pooling.out_dim, embedding_dim)
        self.embedding_bn = nn.BatchNorm1d(embedding_dim)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embed ``feats`` (batch, frames, bins) into (batch, embedding_dim).

        ``lengths`` (valid frames per row) keeps the padding beyond them out of every result: the input's
        padding must be zeros (the stem's "same" padding then sees what it sees at the end of an unpadded
        segment), the later convolutions wider than one frame get their inputs zeroed there, and the SE
        gates and the pooling average over the valid frames only (:attr:`exact_padding`).
        """
        x = self.stem(feats.transpose(1, 2))
        valid = length_mask(lengths, x)
        mask = None if valid is None else valid.to(x.dtype)
        residual = x
        outputs = []
        for block in self.blocks:
            x = block(x, mask) + residual
            outputs.append(x)
            residual = residual + x
        x = self.aggregate(torch.cat(outputs, dim=1))
        x = self.pooling_bn(self.pooling(x, lengths))
        return self.embedding_bn(self.embedding(x))

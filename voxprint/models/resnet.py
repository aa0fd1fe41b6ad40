"""Thin ResNet r-vector embedders (Zeinali et al., 2019): a 2-D ResNet over (frequency, time),
frequency folded into channels, statistics pooling, one linear layer."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from voxprint.models.pooling import build_pooling
from voxprint.registry import MODELS


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BN and a shortcut (1x1 projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place: batch norm's backward needs its input, not its output.
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x), inplace=True)


@MODELS.register("resnet34")
class ResNet34(nn.Module):
    """r-vector thin ResNet over log-mel frames; returns raw (unnormalised) embeddings.

    3x3 conv -> four stages of basic blocks (stride 2 in stages 2-4 on both frequency and time) ->
    (channels x frequency) per frame -> temporal pooling -> linear.

    Encoder parameters at 80 mels, embedding 256, TSTP: base 32 6.63 M (ResNet18: 4.11 M),
    base 64 23.90 M.

    Args:
        input_dim: Feature bins per frame (the image height).
        embedding_dim: Size of the embedding.
        layers: Basic blocks per stage: [3, 4, 6, 3] is ResNet34, [2, 2, 2, 2] ResNet18 (see :func:`resnet18`).
        base_width: Channels of the first stage; stage k has ``base_width * 2**k`` (r-vector: 32; ResNet: 64).
        widths: Channels of the four stages, overriding ``base_width``.
        pooling: A :data:`voxprint.models.pooling.POOLING` name; "TSTP" in the r-vector paper.

    Example:
        >>> model = ResNet34(input_dim=40, embedding_dim=16, layers=[1, 1, 1, 1], base_width=4)
        >>> model(torch.randn(2, 50, 40)).shape
        torch.Size([2, 16])
    """

    def __init__(self, input_dim: int = 80, embedding_dim: int = 256, base_width: int = 32,
                 widths: Sequence[int] | None = None, pooling: str = "TSTP", layers: Sequence[int] = (3, 4, 6, 3)):
        super().__init__()
        widths = list(widths) if widths is not None else [base_width * m for m in (1, 2, 4, 8)]
        if len(widths) != 4 or len(layers) != 4:
            raise ValueError(f"need four stages, got layers={list(layers)} and widths={widths}")
        self.embedding_dim = embedding_dim
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages = []
        in_channels = widths[0]
        for i, (blocks, width) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(in_channels, width, stride)] + [BasicBlock(width, width) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            in_channels = width
        self.stages = nn.Sequential(*stages)
        bins = input_dim
        for _ in range(3):
            bins = math.ceil(bins / 2)  # a stride-2, padding-1, 3x3 convolution
        self.pooling = build_pooling(pooling, widths[-1] * bins)
        self.embedding = nn.Linear(self.pooling.out_dim, embedding_dim)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embed ``feats`` (batch, frames, bins) into (batch, embedding_dim).

        ``lengths`` (valid input frames per row) keeps padding out of the pooling (at the 8x
        subsampled rate); convolutions still see it near the last valid frames.
        """
        x = self.stages(self.stem(feats.transpose(1, 2).unsqueeze(1)))  # (B, C, bins/8, frames/8)
        x = x.flatten(1, 2)
        if lengths is not None:
            for _ in range(3):
                lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
        return self.embedding(self.pooling(x, lengths))


@MODELS.register("resnet18")
def resnet18(**options: Any) -> ResNet34:
    """ResNet18 r-vector: :class:`ResNet34`'s class with [2, 2, 2, 2] blocks (~4.1 M parameters at base 32).

    Example:
        >>> resnet18(input_dim=40, base_width=4, embedding_dim=8)(torch.randn(1, 30, 40)).shape
        torch.Size([1, 8])
    """
    return ResNet34(**{"layers": (2, 2, 2, 2), **options})

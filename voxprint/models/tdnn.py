"""Kaldi x-vector TDNN (Snyder et al., 2018) as dilated 1-D convolutions, the TDNN of the orthogonal
regularisation GE2E systems (Zhu and Mak, "Orthogonality Regularizations for End-to-End Speaker
Verification", Odyssey 2020).

Kaldi's topology (``egs/voxceleb/v2`` x-vector), with ``channels`` = 512, ``stats_channels`` = 1500:

============  ===================  ========================  =================
layer         context              convolution               output
============  ===================  ========================  =================
frame1        [t-2, t+2]           kernel 5, dilation 1      512
frame2        {t-2, t, t+2}        kernel 3, dilation 2      512
frame3        {t-3, t, t+3}        kernel 3, dilation 3      512
frame4        {t}                  kernel 1                  512
frame5        {t}                  kernel 1                  1500
stats         all frames           mean and std              3000
segment6      -                    affine, ReLU, BN          512
segment7      -                    affine (``embedding``)    embedding_dim
============  ===================  ========================  =================

Every frame layer is affine -> ReLU -> batch norm, Kaldi's ``relu-batchnorm-layer`` order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from voxprint.models.pooling import TemporalStatisticsPooling
from voxprint.registry import MODELS

# (kernel size, dilation) of frame1 .. frame5.
FRAME_LAYERS: tuple[tuple[int, int], ...] = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))

# Frames seen on each side of a frame-level output: 2 + 2 + 3 = 7.
CONTEXT: int = sum(dilation * (kernel - 1) // 2 for kernel, dilation in FRAME_LAYERS)


class TDNNLayer(nn.Module):
    """One Kaldi frame layer: unpadded dilated convolution, ReLU, batch norm.

    Args:
        in_channels: Channels (feature bins for the first layer) of the input.
        out_channels: Channels of the output.
        kernel_size: Frames spliced together, ``dilation`` apart.
        dilation: Spacing of the spliced frames.

    Example:
        >>> layer = TDNNLayer(4, 6, kernel_size=3, dilation=2)
        >>> layer(torch.randn(2, 4, 10)).shape  # no padding: 2 * 2 frames fewer
        torch.Size([2, 6, 6])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)
        self.relu = nn.ReLU(inplace=True)  # batch norm's backward needs its input, not the conv output
        self.bn = nn.BatchNorm1d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.relu(self.conv(x)))


@MODELS.register("tdnn_xvector")
class TDNNXVector(nn.Module):
    """Kaldi x-vector TDNN over log-mel frames; returns raw embeddings unless ``normalize_output``.

    Five frame layers (total context +-7 frames) -> statistics pooling (mean and standard deviation)
    -> segment6 (affine, ReLU, BN) -> segment7, the embedding layer ``self.embedding``. Kaldi's
    x-vector is segment6's affine output, taken from a network trained with a softmax over speakers
    that segment7 feeds; trained end to end with GE2E (Zhu and Mak, 2020), segment7's output is the
    embedding, so it is a plain affine layer with no ReLU or BN after it.

    The input is padded by repeating its first and last frame 7 times (how Kaldi's nnet3 frame-level
    computations supply context beyond utterance edges), so the frame layers yield one output per
    input frame, an utterance of any length (even one frame) can be embedded, and no zero padding
    drags the statistics towards 0.

    Encoder parameters at Kaldi's size (channels 512, stats_channels 1500, segment6_dim 512,
    embedding_dim 512): 4,516,244 at 40 mels, 4,490,644 at 30 MFCCs (Kaldi's VoxCeleb recipe input); 512 fewer
    with ``embedding_bias=False``. Zhu and Mak's Table 1 ends in a 512 x 256 segment7 (``embedding_dim=256``,
    bias-free for the regulariser): 4,384,660 at 40 mels. segment6 (1.54 M) and frame2/frame3 (0.79 M each)
    dominate.

    Args:
        input_dim: Feature bins per frame.
        channels: Width of frame1 .. frame4 (Kaldi: 512).
        stats_channels: Width of frame5, whose mean and std are pooled (Kaldi: 1500, so 3000 statistics).
        segment6_dim: Width of segment6 (Kaldi: 512).
        embedding_dim: Output of segment7, the embedding (Zhu and Mak's Table 1: 256; the default, 512, is the
            width of Kaldi's x-vector layer).
        embedding_bias: Bias in segment7. Orthogonal regularisation of the embedding layer needs it off
            (see :mod:`voxprint.losses.orthogonal`).
        normalize_output: L2-normalise the embedding. Off by default: the GE2E and margin losses normalise inside their
            cosine, and back-ends such as PLDA want the raw vector.

    Example:
        >>> model = TDNNXVector(input_dim=40, channels=32, stats_channels=48, segment6_dim=24, embedding_dim=16)
        >>> model(torch.randn(2, 50, 40)).shape
        torch.Size([2, 16])
        >>> model.frame_features(torch.randn(2, 50, 40)).shape  # one frame-level output per input frame
        torch.Size([2, 48, 50])
    """

    def __init__(self, input_dim: int = 40, channels: int = 512, stats_channels: int = 1500,
                 segment6_dim: int = 512, embedding_dim: int = 512, embedding_bias: bool = True,
                 normalize_output: bool = False):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.normalize_output = normalize_output
        widths = (input_dim, channels, channels, channels, channels, stats_channels)
        self.frame1, self.frame2, self.frame3, self.frame4, self.frame5 = (
            TDNNLayer(widths[i], widths[i + 1], kernel, dilation) for i, (kernel, dilation) in enumerate(FRAME_LAYERS)
        )
        self.pooling = TemporalStatisticsPooling(stats_channels)
        self.segment6 = nn.Linear(self.pooling.out_dim, segment6_dim)
        self.segment6_bn = nn.BatchNorm1d(segment6_dim)
        # Named "embedding" like the other encoders, so regularisers and configs find it by one name.
        self.embedding = nn.Linear(segment6_dim, embedding_dim, bias=embedding_bias)

    def frame_features(self, feats: torch.Tensor) -> torch.Tensor:
        """frame5's output (batch, stats_channels, frames) for ``feats`` (batch, frames, bins)."""
        x = F.pad(feats.transpose(1, 2), (CONTEXT, CONTEXT), mode="replicate")
        for layer in (self.frame1, self.frame2, self.frame3, self.frame4, self.frame5):
            x = layer(x)
        return x

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embed ``feats`` (batch, frames, bins) into (batch, embedding_dim).

        ``lengths`` (valid frames per row) keeps padding out of the statistics; frame outputs within
        7 frames of a row's last valid frame still see some of its padding, as in ECAPA-TDNN.
        """
        stats = self.pooling(self.frame_features(feats), lengths)
        hidden = self.segment6_bn(F.relu(self.segment6(stats), inplace=True))
        emb = self.embedding(hidden)
        return F.normalize(emb, dim=-1) if self.normalize_output else emb

"""RawNet2 (Jung et al., "Improved RawNet with Feature Map Scaling for Text-independent Speaker
Verification using Raw Waveforms", Interspeech 2020): a speaker embedder over raw waveforms.

Table 1 of the paper, with a 59,049-sample (3^10, ~3.7 s) input:

=====================  =============================================  ================
layer                  operations                                     output (T x C)
=====================  =============================================  ================
input norm             layer normalisation of the waveform            59049 x 1
first layer            sinc-conv (251 taps, 128 filters)              59049 x 128
                       max-pool 3, BN, LeakyReLU(0.3)                 19683 x 128
res blocks x 2         {BN, LeakyReLU, conv3, BN, LeakyReLU, conv3}   2187 x 128
                       + skip, max-pool 3, FMS
res blocks x 4         same with 256 filters                          27 x 256
GRU                    1024 units, last time step                     1024
speaker embedding      FC                                             1024
=====================  =============================================  ================

The sinc-conv here pads ``kernel // 2`` samples on each side so the lengths above hold exactly (every
max-pool then divides by 3); a GRU layer summarises the remaining frames and its last output is the
utterance-level representation.
"""
from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from voxprint.models.sinc_conv import SincConv
from voxprint.registry import MODELS

FMS_MODES = ("add", "mul", "add-mul", "mul-add", "mul-add-sep", "se", "none")
INPUT_NORMS = ("layernorm", "preemphasis", "none")
FIRST_LAYERS = ("sinc", "conv")

# Max-pooling size after the first layer and after every residual block (the paper's).
POOL = 3


class FeatureMapScaling(nn.Module):
    """Filter-wise feature map scaling (FMS, RawNet2 section 3.2).

    A scale vector ``s = sigmoid(FC(mean_t c))`` holds one value in (0, 1) per filter, computed from the
    time average of the feature map ``c`` (batch, channels, time), and is broadcast over time:

    ==============  ===================================================================
    mode            output
    ==============  ===================================================================
    "add"           ``c + s``
    "mul"           ``c * s``
    "add-mul"       ``(c + s) * s``
    "mul-add"       ``c * s + s`` (the paper's best and its final system)
    "mul-add-sep"   ``c * s1 + s2``, two scale vectors from two FC layers
    "se"            ``c * s`` with a squeeze-excitation bottleneck ``FC-ReLU-FC`` before the sigmoid
    "none"          ``c``
    ==============  ===================================================================

    Args:
        channels: Filters of the feature map.
        mode: One of :data:`FMS_MODES`.
        se_reduction: Bottleneck ratio of the "se" mode (``channels // se_reduction`` hidden units, at least 1).

    Example:
        >>> fms = FeatureMapScaling(4, "mul-add")
        >>> x = torch.randn(2, 4, 10)
        >>> (s,) = fms.scales(x)
        >>> s.shape
        torch.Size([2, 4])
        >>> torch.allclose(fms(x), x * s[..., None] + s[..., None])
        True
        >>> len(FeatureMapScaling(4, "mul-add-sep").scales(x)), len(FeatureMapScaling(4, "none").scales(x))
        (2, 0)
    """

    def __init__(self, channels: int, mode: str = "mul-add", se_reduction: int = 8):
        super().__init__()
        if mode not in FMS_MODES:
            raise ValueError(f"fms must be one of {FMS_MODES}, got {mode!r}")
        self.mode = mode
        if mode == "se":
            bottleneck = max(channels // se_reduction, 1)
            self.squeeze = nn.Linear(channels, bottleneck)
            self.excite = nn.Linear(bottleneck, channels)
        elif mode != "none":
            # In "mul-add-sep" ``fc`` gives the multiplicative vector and ``fc_add`` the additive one.
            self.fc = nn.Linear(channels, channels)
            if mode == "mul-add-sep":
                self.fc_add = nn.Linear(channels, channels)

    def scales(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The (batch, channels) scale vectors of ``x`` (batch, channels, time): none for "none", two
        (multiplicative, additive) for "mul-add-sep", one otherwise."""
        if self.mode == "none":
            return ()
        pooled = x.mean(dim=-1)
        if self.mode == "se":
            return (torch.sigmoid(self.excite(F.relu(self.squeeze(pooled)))),)
        if self.mode == "mul-add-sep":
            return torch.sigmoid(self.fc(pooled)), torch.sigmoid(self.fc_add(pooled))
        return (torch.sigmoid(self.fc(pooled)),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vectors = [s.unsqueeze(-1) for s in self.scales(x)]
        if self.mode == "none":
            return x
        if self.mode == "mul-add-sep":
            return x * vectors[0] + vectors[1]
        s = vectors[0]
        if self.mode == "add":
            return x + s
        if self.mode == "add-mul":
            return (x + s) * s
        if self.mode == "mul-add":
            return x * s + s
        return x * s  # "mul" and "se"

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class PreActResidualBlock(nn.Module):
    """RawNet2's residual block: (BN, LeakyReLU, conv3, BN, LeakyReLU, conv3) + skip, then max-pool 3.

    The skip is a 1x1 convolution when the number of filters changes, the identity otherwise.

    Args:
        in_channels: Filters of the input.
        out_channels: Filters of the output.
        negative_slope: Slope of the LeakyReLUs (0.3, Keras' default, in the paper).
        pre_activation: Start with BN and LeakyReLU. The first block skips them: the first layer already ends with
            BN and LeakyReLU, and normalising twice in a row adds nothing (as in the authors' code).

    Example:
        >>> block = PreActResidualBlock(4, 8)
        >>> block(torch.randn(2, 4, 30)).shape
        torch.Size([2, 8, 10])
    """

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.3,
                 pre_activation: bool = True):
        super().__init__()
        self.pre = (nn.Sequential(nn.BatchNorm1d(in_channels), nn.LeakyReLU(negative_slope))
                    if pre_activation else nn.Identity())
        self.body = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm1d(out_channels),
            nn.LeakyReLU(negative_slope),
            nn.Conv1d(out_channels, out_channels, kernel_size=3, padding=1),
        )
        self.skip = nn.Conv1d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()
        self.pool = nn.MaxPool1d(POOL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(self.pre(x)) + self.skip(x))


def preemphasis(waves: torch.Tensor, coefficient: float = 0.97) -> torch.Tensor:
    """First-order high-pass ``y[t] = x[t] - a x[t-1]`` over the last axis (``y[0] = x[0]``).

    Example:
        >>> preemphasis(torch.tensor([1.0, 1.0, 2.0]), 0.5).tolist()
        [1.0, 0.5, 1.5]
    """
    return torch.cat([waves[..., :1], waves[..., 1:] - coefficient * waves[..., :-1]], dim=-1)


def layer_normalize(waves: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Zero mean and unit standard deviation over the samples of each waveform (last axis).

    Example:
        >>> y = layer_normalize(3.0 * torch.randn(2, 1000) + 1.0)
        >>> bool(y.mean(-1).abs().max() < 1e-5), bool((y.std(-1) - 1).abs().max() < 1e-3)
        (True, True)
    """
    mean = waves.mean(dim=-1, keepdim=True)
    std = waves.std(dim=-1, keepdim=True) if waves.shape[-1] > 1 else torch.ones_like(mean)
    return (waves - mean) / (std + eps)


@MODELS.register("rawnet2")
class RawNet2(nn.Module):
    """RawNet2 over raw waveforms (Jung et al., 2020); returns raw (unnormalised) embeddings.

    Input pre-processing (``input_norm``) -> first layer (sinc-conv or a strided convolution) ->
    max-pool 3 -> BN -> LeakyReLU(0.3) -> pre-activation residual blocks, each followed by feature map
    scaling -> BN -> LeakyReLU -> GRU -> its last time step -> FC embedding.

    Two details follow the authors' released code where Table 1 is silent: the first residual block
    has no leading BN-LeakyReLU (the first layer just applied them), and a BN-LeakyReLU precedes the
    GRU (the pre-activation blocks end with an un-normalised sum). "layernorm" standardises each
    waveform without a learned affine: the released code's per-sample affine ties the model to one
    input length, which sliding-window inference over shorter windows cannot use.

    Input length: the GRU needs at least one frame after ``1 + len(block_channels)`` poolings of 3, so
    inputs shorter than :attr:`min_samples` (2,187 samples for the paper's sinc-conv) are zero-padded
    at the end.

    Args:
        input_dim: Feature bins per frame; must be 1 (the ``raw`` front-end's (batch, samples, 1)).
        sample_rate: Sample rate of the input, for the sinc-conv's cut-offs in Hz.
        input_norm: "layernorm", "preemphasis" (``preemphasis_coefficient``) or "none"; None: the paper's
            pairing (section 4.2), "layernorm" for the sinc-conv (following SincNet) and "preemphasis" for the
            strided convolution (RawNet1's input, used by the paper's baseline and FMS systems).
        first_layer: "sinc" (the paper's) or "conv" (an ordinary learned convolution, RawNet1's first layer).
        first_channels: Filters of the first layer (paper: 128).
        first_kernel: Its length; None: 251 for "sinc" (the paper explores 125 to 375), 3 for "conv" (RawNet1).
        first_stride: Its stride; None: 1 for "sinc" (striding a band-pass bank would alias), ``first_kernel`` for
            "conv" (RawNet1's non-overlapping strided convolution).
        sinc_min_low_hz, sinc_min_band_hz, sinc_init: :class:`~voxprint.models.sinc_conv.SincConv` options.
        block_channels: Filters of each residual block (paper: 128, 128, 256, 256, 256, 256).
        fms: Feature map scaling after each block, one of :data:`FMS_MODES` (paper's best: "mul-add").
        se_reduction: Bottleneck ratio of ``fms="se"``.
        gru_size: GRU units (paper: 1024).
        gru_layers: Stacked GRU layers (paper: 1).
        embedding_dim: Size of the embedding (paper: 1024).
        negative_slope: Slope of every LeakyReLU (paper: 0.3).
        preemphasis_coefficient: Coefficient of ``input_norm="preemphasis"``.

    Example:
        >>> model = RawNet2(first_channels=8, block_channels=[8, 16], gru_size=12, embedding_dim=6)
        >>> model(torch.randn(2, 4000, 1)).shape
        torch.Size([2, 6])
        >>> model.min_samples
        27
    """

    def __init__(self, input_dim: int = 1, sample_rate: int = 16000, input_norm: str | None = None,
                 first_layer: str = "sinc", first_channels: int = 128, first_kernel: int | None = None,
                 first_stride: int | None = None, sinc_min_low_hz: float = 0.0, sinc_min_band_hz: float = 50.0,
                 sinc_init: str = "mel", block_channels: Sequence[int] = (128, 128, 256, 256, 256, 256),
                 fms: str = "mul-add", se_reduction: int = 8, gru_size: int = 1024, gru_layers: int = 1,
                 embedding_dim: int = 1024, negative_slope: float = 0.3, preemphasis_coefficient: float = 0.97):
        super().__init__()
        if input_dim != 1:
            raise ValueError(f"RawNet2 takes raw waveforms (features.type: raw, input_dim 1), got input_dim={input_dim}")
        if first_layer not in FIRST_LAYERS:
            raise ValueError(f"first_layer must be one of {FIRST_LAYERS}, got {first_layer!r}")
        if input_norm is None:
            input_norm = "layernorm" if first_layer == "sinc" else "preemphasis"
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")
        if not block_channels:
            raise ValueError("block_channels must name at least one residual block")
        self.input_norm = input_norm
        self.preemphasis_coefficient = preemphasis_coefficient
        self.embedding_dim = embedding_dim

        kernel = first_kernel if first_kernel is not None else (251 if first_layer == "sinc" else 3)
        stride = first_stride if first_stride is not None else (1 if first_layer == "sinc" else kernel)
        # (kernel - stride) // 2 zeros per side: "same" length for the stride-1 sinc-conv, none for
        # RawNet1's kernel == stride convolution.
        padding = max(kernel - stride, 0) // 2
        if first_layer == "sinc":
            self.first = SincConv(first_channels, kernel, sample_rate=sample_rate, min_low_hz=sinc_min_low_hz,
                                  min_band_hz=sinc_min_band_hz, init=sinc_init, stride=stride, padding=padding)
        else:
            # No bias: the batch norm right after would cancel it.
            self.first = nn.Conv1d(1, first_channels, kernel, stride=stride, padding=padding, bias=False)
        self.first_post = nn.Sequential(nn.MaxPool1d(POOL), nn.BatchNorm1d(first_channels),
                                        nn.LeakyReLU(negative_slope))
        self._first_geometry = (kernel, stride, padding)

        channels = [first_channels, *block_channels]
        self.blocks = nn.ModuleList(
            PreActResidualBlock(c_in, c_out, negative_slope, pre_activation=i > 0)
            for i, (c_in, c_out) in enumerate(pairwise(channels))
        )
        self.fms = nn.ModuleList(FeatureMapScaling(c, fms, se_reduction) for c in block_channels)
        self.pre_gru = nn.Sequential(nn.BatchNorm1d(channels[-1]), nn.LeakyReLU(negative_slope))
        self.gru = nn.GRU(channels[-1], gru_size, num_layers=gru_layers, batch_first=True)
        self.embedding = nn.Linear(gru_size, embedding_dim)

    @property
    def min_samples(self) -> int:
        """Shortest input that leaves the GRU one frame: 3 frames before each max-pool."""
        kernel, stride, padding = self._first_geometry
        frames = POOL ** (1 + len(self.blocks))
        return max((frames - 1) * stride + kernel - 2 * padding, 1)

    def preprocess(self, waves: torch.Tensor) -> torch.Tensor:
        """Apply ``input_norm`` to waveforms (batch, samples)."""
        if self.input_norm == "layernorm":
            return layer_normalize(waves)
        if self.input_norm == "preemphasis":
            return preemphasis(waves, self.preemphasis_coefficient)
        return waves

    def frame_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Frame-level features (batch, block_channels[-1], frames) of waveforms (batch, samples, 1)."""
        waves = feats.squeeze(-1) if feats.dim() == 3 else feats
        if waves.dim() != 2:
            raise ValueError(f"RawNet2 expects (batch, samples, 1) or (batch, samples), got {tuple(feats.shape)}")
        x = self.preprocess(waves)
        # Pad after normalising so the zeros do not shift the statistics of the speech.
        if x.shape[-1] < self.min_samples:
            x = F.pad(x, (0, self.min_samples - x.shape[-1]))
        x = self.first_post(self.first(x.unsqueeze(1)))
        for block, scaling in zip(self.blocks, self.fms):
            x = scaling(block(x))
        return x

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Embed waveforms ``feats`` (batch, samples, 1) into (batch, embedding_dim)."""
        x = self.pre_gru(self.frame_features(feats))
        outputs, _ = self.gru(x.transpose(1, 2))
        return self.embedding(outputs[:, -1])

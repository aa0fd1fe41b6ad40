"""Kaldi-compatible MFCCs in torch, and per-utterance mean/variance normalisation.

The cepstra are the orthonormal type-II DCT of :class:`~voxprint.features.fbank.LogMelFbank`'s log
mel energies, optionally liftered, which is what Kaldi's ``compute-mfcc-feats`` computes with
``--dither=0 --snip-edges=true --use-energy=false``; the framing is fbank's, so crops and inference
windows count the same frames whichever of the two front-ends a model uses.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from voxprint.errors import ConfigError
from voxprint.features.fbank import LogMelFbank
from voxprint.registry import FRONTENDS

__all__ = ["MFCC", "dct_matrix", "lifter_coefficients", "mean_variance_normalize"]


def dct_matrix(n_mels: int, n_mfcc: int) -> torch.Tensor:
    """The orthonormal DCT-II as a ``(n_mels, n_mfcc)`` matrix to right-multiply log mel energies with.

    Row ``k`` of the transform is ``sqrt(2 / N) cos(pi k (j + 1/2) / N)``, with ``sqrt(1 / N)`` for
    ``k = 0`` (Kaldi's ``ComputeDctMatrix``); only the first ``n_mfcc`` rows are kept.

    Args:
        n_mels: Number of log mel energies N (the DCT length).
        n_mfcc: Number of cepstral coefficients kept (``<= n_mels``).

    Returns:
        Float32 matrix of shape ``(n_mels, n_mfcc)``.

    Example:
        >>> d = dct_matrix(40, 40)
        >>> torch.allclose(d.T @ d, torch.eye(40), atol=1e-5)
        True
    """
    if not 1 <= n_mfcc <= n_mels:
        raise ConfigError(f"n_mfcc must be between 1 and n_mels ({n_mels}), got {n_mfcc}.")
    j = torch.arange(n_mels, dtype=torch.float64) + 0.5
    k = torch.arange(n_mfcc, dtype=torch.float64).unsqueeze(1)
    basis = torch.cos(math.pi / n_mels * k * j) * math.sqrt(2.0 / n_mels)
    basis[0] = math.sqrt(1.0 / n_mels)
    return basis.T.contiguous().to(torch.float32)


def lifter_coefficients(n_mfcc: int, cepstral_lifter: float) -> torch.Tensor:
    """Kaldi's sinusoidal cepstral lifter ``1 + Q/2 sin(pi i / Q)`` (all ones when ``Q == 0``).

    Liftering rescales the higher cepstra, which are otherwise numerically much smaller than the
    first few, to a comparable range.

    Args:
        n_mfcc: Number of cepstral coefficients.
        cepstral_lifter: The lifter constant Q (Kaldi's default 22); 0 disables liftering.

    Returns:
        Float32 weights, shape ``(n_mfcc,)``.

    Example:
        >>> lifter_coefficients(3, 0.0)
        tensor([1., 1., 1.])
        >>> round(float(lifter_coefficients(12, 22.0)[11]), 3)
        12.0
    """
    if cepstral_lifter < 0:
        raise ConfigError(f"cepstral_lifter must be >= 0, got {cepstral_lifter}.")
    if cepstral_lifter == 0:
        return torch.ones(n_mfcc)
    i = torch.arange(n_mfcc, dtype=torch.float64)
    return (1.0 + 0.5 * cepstral_lifter * torch.sin(math.pi * i / cepstral_lifter)).to(torch.float32)


def mean_variance_normalize(feats: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalises each utterance's features to zero mean and unit variance over time (CMVN).

    Mean removal takes out stationary channel effects; the variance scaling puts the cepstra, whose
    ranges differ by an order of magnitude, on one scale for the LSTM's saturating gates.

    Args:
        feats: Features ``(frames, dim)`` or ``(batch, frames, dim)``; each utterance of a batch is
            normalised over its own frames.
        eps: Floor of the standard deviation, so constant (e.g. digitally silent) dimensions stay finite.

    Returns:
        Normalised features, same shape and dtype.

    Example:
        >>> out = mean_variance_normalize(torch.randn(2, 50, 3) * 5 + 2)
        >>> bool(out.mean(1).abs().max() < 1e-5), bool((out.std(1, unbiased=False) - 1).abs().max() < 1e-4)
        (True, True)
    """
    if feats.dim() not in (2, 3):
        raise ValueError(
            f"mean_variance_normalize expects features shaped (frames, dim) or (batch, frames, dim), "
            f"got {tuple(feats.shape)}."
        )
    mean = feats.mean(dim=-2, keepdim=True)
    centred = feats - mean
    std = centred.square().mean(dim=-2, keepdim=True).sqrt().clamp_min(eps)
    return centred / std


@FRONTENDS.register("mfcc")
class MFCC(nn.Module):
    """Kaldi-compatible MFCCs, batched in torch.

    Equivalent to Kaldi ``compute-mfcc-feats`` with ``--dither=0 --snip-edges=true
    --use-energy=false``: log mel energies from :class:`LogMelFbank` (same framing, window,
    pre-emphasis and log floor), the orthonormal DCT-II, then the optional cepstral lifter.

    Args:
        sample_rate: Sample rate of the input in Hz.
        n_mels: Number of mel bands the cepstra are computed from.
        n_mfcc: Number of cepstral coefficients (the output dimension, :attr:`dim`); ``<= n_mels``.
        frame_length_ms: Window length in milliseconds.
        frame_shift_ms: Frame shift in milliseconds.
        cepstral_lifter: Lifter constant Q (Kaldi's default 22); 0 disables liftering.
        preemphasis, low_freq, high_freq, remove_dc_offset, window: As in :class:`LogMelFbank` (listed
            here, not passed as ``**kwargs``, because the embedder gives a front-end only the config
            options its signature names).

    Example:
        >>> mfcc = MFCC(n_mels=40, n_mfcc=30)
        >>> mfcc(torch.randn(2, 16000) * 0.1).shape
        torch.Size([2, 98, 30])
        >>> mfcc.dim, mfcc.num_frames(16000), mfcc.num_samples(98)
        (30, 98, 15920)
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 40,
        n_mfcc: int = 30,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        cepstral_lifter: float = 22.0,
        preemphasis: float = 0.97,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        remove_dc_offset: bool = True,
        window: str = "povey",
    ) -> None:
        super().__init__()
        self.fbank = LogMelFbank(sample_rate=sample_rate, n_mels=n_mels, frame_length_ms=frame_length_ms,
                                 frame_shift_ms=frame_shift_ms, preemphasis=preemphasis, low_freq=low_freq,
                                 high_freq=high_freq, remove_dc_offset=remove_dc_offset, window=window)
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.n_mfcc = n_mfcc
        self.cepstral_lifter = float(cepstral_lifter)
        # Derived from the options (as fbank's buffers): not saved, so checkpoints match the constructor.
        dct = dct_matrix(n_mels, n_mfcc) * lifter_coefficients(n_mfcc, self.cepstral_lifter)
        self.register_buffer("dct", dct, persistent=False)

    @property
    def dim(self) -> int:
        """Output feature dimension (``n_mfcc``), read by the embedder to size its encoder."""
        return self.n_mfcc

    @property
    def frame_length(self) -> int:
        """Window length in samples."""
        return self.fbank.frame_length

    @property
    def frame_shift(self) -> int:
        """Frame shift in samples."""
        return self.fbank.frame_shift

    def num_frames(self, num_samples: int) -> int:
        """Number of frames produced from ``num_samples`` samples (as :meth:`LogMelFbank.num_frames`)."""
        return self.fbank.num_frames(num_samples)

    def num_samples(self, num_frames: int) -> int:
        """Smallest number of samples giving ``num_frames`` frames (as :meth:`LogMelFbank.num_samples`)."""
        return self.fbank.num_samples(num_frames)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Computes MFCCs.

        Args:
            waveforms: Float waveform(s) in [-1, 1], shape ``(T,)`` or ``(B, T)``.

        Returns:
            Float32 cepstra, ``(frames, n_mfcc)`` or ``(B, frames, n_mfcc)``.
        """
        # The lifter is folded into the DCT matrix: one matmul per batch.
        return torch.matmul(self.fbank(waveforms), self.dct)

    def extra_repr(self) -> str:
        return f"n_mfcc={self.n_mfcc}, cepstral_lifter={self.cepstral_lifter}"

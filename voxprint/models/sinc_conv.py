"""Sinc convolution (Ravanelli and Bengio, "Speaker Recognition from Raw Waveform with SincNet", 2018):
a first layer of band-pass filters over raw waveforms, each defined by two learnable cut-off frequencies.

Filter ``i`` is the difference of two ideal low-pass filters, truncated to ``kernel_size`` taps and
smoothed by a Hamming window:

    h_i[n] = (2 f2 / fs) sinc(2 f2 n / fs) - (2 f1 / fs) sinc(2 f1 n / fs),   n = -(K-1)/2 .. (K-1)/2

with ``f1 = min_low_hz + |a_i|`` and ``f2 = min(f1 + min_band_hz + |b_i|, fs / 2)``, where ``a_i`` and
``b_i`` are the filter's only parameters. Both sincs are scaled to unit passband gain, so a filter's
response is about 1 inside [f1, f2] whatever its bandwidth (SincNet's code instead scales the centre
tap to 1, which amplifies narrow filters; the batch norm that follows in RawNet2 absorbs either).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INITS = ("mel", "linear")

# Lowest initial cut-off: SincNet's 30 Hz, below which 16 kHz speech holds mostly hum and DC offset.
INIT_LOW_HZ = 30.0


def hz_to_mel(hz: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: torch.Tensor | float) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


# Filters this long or longer are applied by FFT on CPU (method="auto").
FFT_MIN_KERNEL = 64
METHODS = ("auto", "direct", "fft")


class SincConv(nn.Module):
    """Learnable band-pass filter bank applied as a 1-D convolution to raw waveforms.

    Args:
        out_channels: Number of band-pass filters.
        kernel_size: Filter length in samples; odd, so every filter is symmetric (linear phase) around its centre
            tap. SincNet uses 251; RawNet2 explores lengths from 125 to 375.
        sample_rate: Sample rate of the input in Hz.
        min_low_hz: Lowest possible low cut-off.
        min_band_hz: Narrowest possible band; keeps the two cut-offs from crossing during training.
        init: "mel": band edges equally spaced on the mel scale from 30 Hz to the Nyquist frequency, so
            adjacent filters share an edge and low frequencies get narrow bands (SincNet); "linear":
            equally spaced in Hz.
        stride: Convolution stride.
        padding: Zeros added on both sides of the input (``kernel_size // 2`` keeps the length at stride 1).
        method: "direct" (``conv1d``), "fft" (:func:`fft_conv1d`) or "auto": FFT for filters of
            :data:`FFT_MIN_KERNEL` taps or more on CPU, where it is about 3x faster for 251 taps (training
            and inference); direct convolution elsewhere (GPU kernels are fast at any length).

    Example:
        >>> sinc = SincConv(8, kernel_size=101, padding=50)
        >>> sinc(torch.randn(2, 1, 1600)).shape
        torch.Size([2, 8, 1600])
        >>> low, high = sinc.cutoffs()
        >>> bool((high > low).all()), round(low[0].item())
        (True, 30)
        >>> sinc.filters().shape
        torch.Size([8, 101])
        >>> sum(p.numel() for p in sinc.parameters())  # two per filter
        16
    """

    def __init__(self, out_channels: int, kernel_size: int = 251, sample_rate: int = 16000,
                 min_low_hz: float = 0.0, min_band_hz: float = 50.0, init: str = "mel",
                 stride: int = 1, padding: int = 0, method: str = "auto"):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"kernel_size must be odd and at least 3 (a symmetric filter), got {kernel_size}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        nyquist = sample_rate / 2
        if not 0 <= min_low_hz < INIT_LOW_HZ or not 0 <= min_band_hz < nyquist - INIT_LOW_HZ:
            raise ValueError(f"min_low_hz must be in [0, {INIT_LOW_HZ}) and min_band_hz in "
                             f"[0, {nyquist - INIT_LOW_HZ}), got {min_low_hz} and {min_band_hz}")
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.sample_rate = sample_rate
        self.min_low_hz = float(min_low_hz)
        self.min_band_hz = float(min_band_hz)
        self.stride = stride
        self.padding = padding
        self.method = method

        # The top edge leaves room for the minimum band, so the last filter starts below Nyquist.
        top = nyquist - min_band_hz
        if init == "mel":
            edges = mel_to_hz(torch.linspace(hz_to_mel(INIT_LOW_HZ).item(), hz_to_mel(top).item(),
                                             out_channels + 1, dtype=torch.float64))
        else:
            edges = torch.linspace(INIT_LOW_HZ, top, out_channels + 1, dtype=torch.float64)
        # Stored as offsets above the minima, so the initial cut-offs are exactly the chosen edges.
        self.low_hz = nn.Parameter((edges[:-1] - self.min_low_hz).float())
        self.band_hz = nn.Parameter((edges.diff() - self.min_band_hz).clamp(min=0.0).float())

        # Neither depends on the parameters: buffers, left out of the state dict so saved models hold
        # only the cut-offs.
        self.register_buffer("taps", torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2,
                             persistent=False)
        self.register_buffer("window", torch.hamming_window(kernel_size, periodic=False), persistent=False)

    def cutoffs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (out_channels,) low and high cut-off frequencies in Hz."""
        low = self.min_low_hz + self.low_hz.abs()
        high = (low + self.min_band_hz + self.band_hz.abs()).clamp(max=self.sample_rate / 2)
        return low, high

    def filters(self) -> torch.Tensor:
        """The (out_channels, kernel_size) windowed band-pass impulse responses."""
        low, high = self.cutoffs()
        # Normalised frequencies (cycles per sample): the ideal low-pass with cut-off f has impulse
        # response 2 f sinc(2 f n) and unit gain below f.
        f1 = (low / self.sample_rate).unsqueeze(1)
        f2 = (high / self.sample_rate).unsqueeze(1)
        band_pass = 2 * f2 * torch.sinc(2 * f2 * self.taps) - 2 * f1 * torch.sinc(2 * f1 * self.taps)
        return band_pass * self.window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Filter waveforms ``x`` (batch, 1, samples) into (batch, out_channels, frames)."""
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"SincConv expects (batch, 1, samples), got {tuple(x.shape)}")
        filters = self.filters().to(x.dtype)
        use_fft = self.method == "fft" or (self.method == "auto" and self.kernel_size >= FFT_MIN_KERNEL
                                           and x.device.type == "cpu")
        if use_fft:
            return fft_conv1d(x, filters, padding=self.padding)[..., ::self.stride]
        return F.conv1d(x, filters.unsqueeze(1), stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        return (f"{self.out_channels}, kernel_size={self.kernel_size}, sample_rate={self.sample_rate}, "
                f"min_low_hz={self.min_low_hz}, min_band_hz={self.min_band_hz}, stride={self.stride}, "
                f"padding={self.padding}, method={self.method!r}")


def fft_conv1d(x: torch.Tensor, filters: torch.Tensor, padding: int = 0) -> torch.Tensor:
    """``F.conv1d(x, filters[:, None], padding=padding)`` computed by FFT (differentiable).

    ``x`` is (batch, 1, samples) and ``filters`` (channels, taps). The cost grows with
    log(samples) instead of taps, which pays off for long filters.

    Example:
        >>> x, w = torch.randn(2, 1, 500), torch.randn(3, 51)
        >>> torch.allclose(fft_conv1d(x, w, 25), F.conv1d(x, w[:, None], padding=25), atol=1e-4)
        True
    """
    taps = filters.shape[-1]
    padded = F.pad(x, (padding, padding))
    out_len = padded.shape[-1] - taps + 1
    if out_len < 1:
        raise ValueError(f"input of {x.shape[-1]} samples is shorter than the {taps}-tap filters")
    # Circular convolution wraps around only into the first taps - 1 outputs, which are dropped below,
    # so the FFT needs no room beyond the input itself.
    n_fft = 1 << (padded.shape[-1] - 1).bit_length()
    # conv1d is a cross-correlation: flip the filters to make it a convolution.
    spectrum = torch.fft.rfft(padded, n=n_fft) * torch.fft.rfft(filters.flip(-1), n=n_fft)
    return torch.fft.irfft(spectrum, n=n_fft)[..., taps - 1:taps - 1 + out_len]


def frequency_response(filters: torch.Tensor, sample_rate: int, n_fft: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitude responses of (C, K) FIR filters: (frequencies in Hz (n_fft//2 + 1,), gains (C, n_fft//2 + 1)).

    Example:
        >>> freqs, gains = frequency_response(torch.tensor([[1.0]]), 16000, n_fft=8)
        >>> freqs.tolist(), gains.tolist()
        ([0.0, 2000.0, 4000.0, 6000.0, 8000.0], [[1.0, 1.0, 1.0, 1.0, 1.0]])
    """
    if filters.shape[-1] > n_fft:
        raise ValueError(f"n_fft ({n_fft}) must be at least the filter length ({filters.shape[-1]})")
    gains = torch.fft.rfft(filters, n=n_fft).abs()
    freqs = torch.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    return freqs, gains


__all__ = ["INITS", "SincConv", "frequency_response", "hz_to_mel", "mel_to_hz"]

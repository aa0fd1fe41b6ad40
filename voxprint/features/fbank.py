"""Kaldi-compatible log mel filterbank features, computed in torch.

The features match Kaldi's ``compute-fbank`` (and kaldi-native-fbank) with
``--dither=0 --snip-edges=true``, so models trained here can be compared with,
or initialised from, Kaldi-style recipes; computing them in torch lets a whole
padded batch be featurised at once on CPU or GPU.
"""
from __future__ import annotations

import math

import torch

from voxprint.errors import AudioError, ConfigError
from voxprint.registry import FRONTENDS

__all__ = ["LogMelFbank", "kaldi_mel_banks", "kaldi_window", "mel_scale"]

_WINDOWS = ("povey", "hamming", "hann")


def mel_scale(freq: torch.Tensor | float) -> torch.Tensor | float:
    """Converts Hz to Kaldi's mel scale, ``1127 ln(1 + f / 700)``.

    Args:
        freq: Frequency in Hz.

    Returns:
        The same frequency in mel.
    """
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


def kaldi_window(window: str, length: int) -> torch.Tensor:
    """Builds a Kaldi analysis window of ``length`` samples (float32).

    Args:
        window: ``"povey"`` (Hann raised to 0.85, Kaldi's default), ``"hamming"`` or ``"hann"``.
        length: Window length in samples.

    Returns:
        The window, shape ``(length,)``.
    """
    if window not in _WINDOWS:
        raise ConfigError(f"unknown window {window!r}; choose one of {', '.join(_WINDOWS)}.")
    # Kaldi's symmetric definition uses N - 1 in the denominator (not torch's
    # periodic default), computed in double precision.
    a = 2.0 * math.pi / (length - 1) if length > 1 else 0.0
    cos = torch.cos(a * torch.arange(length, dtype=torch.float64))
    if window == "hamming":
        w = 0.54 - 0.46 * cos
    else:
        w = 0.5 - 0.5 * cos
        if window == "povey":
            w = w.pow(0.85)
    return w.to(torch.float32)


def kaldi_mel_banks(
    n_mels: int,
    n_fft: int,
    sample_rate: float,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> torch.Tensor:
    """Builds Kaldi's triangular mel filterbank as a matrix.

    Triangles are linear in the mel domain, and (as in Kaldi) the Nyquist bin
    gets no weight.

    Args:
        n_mels: Number of mel bands.
        n_fft: FFT size (the padded window length).
        sample_rate: Sample rate in Hz.
        low_freq: Lower edge of the first band in Hz.
        high_freq: Upper edge of the last band in Hz; ``<= 0`` means Nyquist + ``high_freq``.

    Returns:
        Float32 matrix of shape ``(n_fft // 2 + 1, n_mels)``, to right-multiply
        a power spectrum with.

    Raises:
        ConfigError: If the frequency range is invalid or some band covers no FFT bin.
    """
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0.0 else nyquist + high_freq
    if not (0.0 <= low_freq < high <= nyquist):
        raise ConfigError(
            f"invalid mel frequency range: low_freq={low_freq} Hz, high_freq={high_freq} Hz (-> {high} Hz) "
            f"at {sample_rate} Hz; need 0 <= low < high <= Nyquist ({nyquist} Hz)."
        )
    if n_mels < 1:
        raise ConfigError(f"n_mels must be at least 1, got {n_mels}.")
    num_bins = n_fft // 2
    mel_low, mel_high = mel_scale(low_freq), mel_scale(high)
    delta = (mel_high - mel_low) / (n_mels + 1)
    edges = mel_low + delta * torch.arange(n_mels + 2, dtype=torch.float64)
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    mel = mel_scale(torch.arange(num_bins, dtype=torch.float64) * (sample_rate / n_fft)).unsqueeze(1)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = torch.where((mel > left) & (mel < right), torch.minimum(up, down), torch.zeros(()))
    empty = (weights.sum(0) == 0).nonzero().flatten().tolist()
    if empty:
        raise ConfigError(
            f"mel bands {empty} contain no FFT bin ({n_mels} bands over {low_freq}-{high} Hz with a "
            f"{n_fft}-point FFT); use fewer mel bands, a longer frame or a wider frequency range."
        )
    banks = torch.zeros(num_bins + 1, n_mels, dtype=torch.float64)
    banks[:num_bins] = weights
    return banks.to(torch.float32)


@FRONTENDS.register("fbank")
class LogMelFbank(torch.nn.Module):
    """Kaldi-compatible log mel filterbank energies, batched in torch.

    Equivalent to Kaldi ``compute-fbank`` with ``--dither=0 --snip-edges=true
    --use-energy=false`` (deterministic: no dither). Frames are taken without
    edge padding, so ``num_frames(T) = 1 + (T - frame_length) // frame_shift``.

    Args:
        sample_rate: Sample rate of the input in Hz.
        n_mels: Number of mel bands (output feature dimension).
        frame_length_ms: Window length in milliseconds.
        frame_shift_ms: Frame shift in milliseconds.
        preemphasis: Pre-emphasis coefficient (0 disables it).
        low_freq: Lower edge of the mel filterbank in Hz.
        high_freq: Upper edge in Hz; ``<= 0`` means Nyquist + ``high_freq``.
        remove_dc_offset: Subtract each frame's mean before windowing.
        window: ``"povey"``, ``"hamming"`` or ``"hann"``.
        log_floor: Mel energies are floored at this before the log (Kaldi uses float epsilon).
        input_scale: The [-1, 1] waveform is multiplied by this first; 32768 reproduces
            Kaldi's values, which are computed on int16-valued samples.

    Example:
        >>> fbank = LogMelFbank(n_mels=80)
        >>> fbank(torch.randn(2, 16000) * 0.1).shape
        torch.Size([2, 98, 80])
        >>> fbank.num_frames(16000), fbank.num_samples(98)
        (98, 15920)
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 40,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        preemphasis: float = 0.97,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        remove_dc_offset: bool = True,
        window: str = "povey",
        log_floor: float = 1.1920929e-07,
        input_scale: float = 32768.0,
    ) -> None:
        super().__init__()
        if sample_rate <= 0:
            raise ConfigError(f"sample_rate must be positive, got {sample_rate}.")
        # Same expression and truncation as Kaldi's WindowSize()/WindowShift().
        self._frame_length = int(sample_rate * 0.001 * frame_length_ms)
        self._frame_shift = int(sample_rate * 0.001 * frame_shift_ms)
        if self._frame_length < 2 or self._frame_shift < 1:
            raise ConfigError(
                f"frame_length_ms={frame_length_ms} and frame_shift_ms={frame_shift_ms} give "
                f"{self._frame_length}/{self._frame_shift} samples at {sample_rate} Hz; both must be longer."
            )
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.n_fft = 1 << (self._frame_length - 1).bit_length()
        self.preemphasis = float(preemphasis)
        self.remove_dc_offset = bool(remove_dc_offset)
        self.log_floor = float(log_floor)
        self.input_scale = float(input_scale)
        self.window_type = window
        # Derived from the options, so not saved in state_dicts: checkpoints stay
        # small and always agree with the constructor arguments.
        self.register_buffer("window", kaldi_window(window, self._frame_length), persistent=False)
        self.register_buffer(
            "mel_banks",
            kaldi_mel_banks(n_mels, self.n_fft, sample_rate, low_freq, high_freq),
            persistent=False,
        )

    @property
    def frame_length(self) -> int:
        """Window length in samples."""
        return self._frame_length

    @property
    def frame_shift(self) -> int:
        """Frame shift in samples."""
        return self._frame_shift

    def num_frames(self, num_samples: int) -> int:
        """Number of frames produced from ``num_samples`` samples (0 if shorter than one window).

        Args:
            num_samples: Waveform length in samples.

        Returns:
            Number of feature frames.
        """
        if num_samples < self._frame_length:
            return 0
        return 1 + (num_samples - self._frame_length) // self._frame_shift

    def num_samples(self, num_frames: int) -> int:
        """Smallest number of samples that yields exactly ``num_frames`` frames.

        Args:
            num_frames: Desired number of feature frames (>= 0).

        Returns:
            Waveform length in samples (0 for 0 frames).
        """
        if num_frames < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}.")
        if num_frames == 0:
            return 0
        return self._frame_length + (num_frames - 1) * self._frame_shift

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Computes log mel filterbank features.

        Args:
            waveforms: Float waveform(s) in [-1, 1], shape ``(T,)`` or ``(B, T)``.

        Returns:
            Float32 features, ``(frames, n_mels)`` or ``(B, frames, n_mels)``.

        Raises:
            AudioError: If the input is shorter than one window, or not a 1-D/2-D float tensor.
        """
        if waveforms.dim() not in (1, 2):
            raise AudioError(
                f"LogMelFbank expects a waveform of shape (T,) or (B, T), got shape {tuple(waveforms.shape)}."
            )
        if not waveforms.is_floating_point():
            raise AudioError(
                f"LogMelFbank expects float waveforms in [-1, 1], got dtype {waveforms.dtype}; "
                "load audio with voxprint.audio.load_audio()."
            )
        num_samples = waveforms.shape[-1]
        if num_samples < self._frame_length:
            raise AudioError(
                f"waveform has {num_samples} samples ({num_samples / self.sample_rate:.3f} s), shorter than one "
                f"{self._frame_length}-sample analysis window at {self.sample_rate} Hz; no features can be computed."
            )
        x = waveforms.to(torch.float32) * self.input_scale
        frames = x.unfold(-1, self._frame_length, self._frame_shift)  # (..., F, L)
        if self.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if x.requires_grad:
            return self._differentiable(frames)
        # The same operations as _differentiable, in the same order (so bit for bit the same frames), written
        # into preallocated buffers: about 15 % faster on CPU, where the features are a sixth of an int8
        # export's inference time. Out= and in-place ops do not support autograd, hence the two paths.
        out = torch.empty_like(frames)
        if self.preemphasis != 0.0:
            # Kaldi pre-emphasises within each frame and treats the sample
            # before the first as the first itself: x[0] -= c * x[0].
            torch.mul(frames[..., :1], 1.0 - self.preemphasis, out=out[..., :1])
            torch.mul(frames[..., :-1], self.preemphasis, out=out[..., 1:])
            torch.sub(frames[..., 1:], out[..., 1:], out=out[..., 1:])
            out.mul_(self.window)
        else:
            torch.mul(frames, self.window, out=out)
        spectrum = torch.fft.rfft(out, n=self.n_fft)
        power = spectrum.real.square().add_(spectrum.imag.square())
        mel = torch.matmul(power, self.mel_banks)
        return mel.clamp_min_(self.log_floor).log_()

    def _differentiable(self, frames: torch.Tensor) -> torch.Tensor:
        """Log mel energies of DC-corrected frames (..., F, L), with autograd (a waveform that requires grad)."""
        if self.preemphasis != 0.0:
            first = frames[..., :1] * (1.0 - self.preemphasis)
            rest = frames[..., 1:] - self.preemphasis * frames[..., :-1]
            frames = torch.cat((first, rest), dim=-1)
        frames = frames * self.window
        spectrum = torch.fft.rfft(frames, n=self.n_fft)
        power = spectrum.real.square() + spectrum.imag.square()
        mel = torch.matmul(power, self.mel_banks)
        return mel.clamp_min(self.log_floor).log()

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_mels={self.n_mels}, frame_length={self._frame_length}, "
            f"frame_shift={self._frame_shift}, n_fft={self.n_fft}, window={self.window_type!r}"
        )

"""Waveform signal primitives of the augmentation: mixing at an SNR, coloured noise, speed
perturbation, length fitting and reverberation by convolution.

Every function takes and returns 1-D numpy waveforms; the random ones draw from the
:class:`numpy.random.Generator` they are given, so a crop's augmentation replays from its generator.
"""
from __future__ import annotations

import math

import numpy as np
import soxr
from scipy.signal import fftconvolve

__all__ = ["add_at_snr", "coloured_noise", "fit_length", "reverberate", "speed_perturb"]


def add_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Adds ``noise`` scaled so that the mixture has exactly ``snr_db``.

    SNR is ``10 log10(P_signal / P_noise)`` with power the mean square over the whole segment.

    Args:
        signal: Clean 1-D waveform.
        noise: Noise of the same length.
        snr_db: Target SNR in dB.

    Returns:
        float32 ``signal + g * noise``. A silent signal (no defined SNR) or silent noise is returned
        unchanged.

    Raises:
        ValueError: ``signal`` and ``noise`` differ in shape.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> s, n = rng.standard_normal(1000), rng.standard_normal(1000)
        >>> mix = add_at_snr(s, n, 10.0)
        >>> round(float(10 * np.log10(np.mean(s ** 2) / np.mean((mix - s) ** 2))), 3)
        10.0
    """
    if signal.shape != noise.shape:
        raise ValueError(f"signal and noise must have the same shape, got {signal.shape} and {noise.shape}")
    # float64 accumulation: float32 sums over tens of thousands of samples drift by ~1e-4 relative.
    p_signal = float(np.mean(np.square(signal, dtype=np.float64)))
    p_noise = float(np.mean(np.square(noise, dtype=np.float64)))
    if p_signal == 0.0 or p_noise == 0.0:
        return np.asarray(signal, dtype=np.float32).copy()
    gain = math.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (signal.astype(np.float32) + np.float32(gain) * noise.astype(np.float32)).astype(np.float32)


def coloured_noise(num_samples: int, beta: float, rng: np.random.Generator, sample_rate: int = 16000,
                   min_freq: float = 20.0) -> np.ndarray:
    """Gaussian noise with power spectral density ``~ 1 / f**beta``, unit power.

    Built in the frequency domain: complex white Gaussian bins shaped by ``f**(-beta / 2)``, then one
    inverse real FFT. Bins below ``min_freq`` are zeroed: for brown noise they would hold most of the
    power while being inaudible and invisible to a 20 Hz+ filterbank, so the drawn SNR would not
    describe what the model hears.

    Args:
        num_samples: Length in samples.
        beta: Spectral exponent: 0 white, 1 pink, 2 brown.
        rng: Random source.
        sample_rate: Sample rate in Hz (for ``min_freq``).
        min_freq: Lowest frequency (Hz) kept.

    Returns:
        float32 noise with mean square 1.

    Example:
        >>> noise = coloured_noise(16000, 1.0, np.random.default_rng(0))
        >>> noise.shape, round(float(np.mean(noise.astype(np.float64) ** 2)), 4)
        ((16000,), 1.0)
    """
    freqs = np.fft.rfftfreq(num_samples, d=1.0 / sample_rate)
    keep = (freqs > 0.0) & (freqs >= min_freq)
    shape = np.zeros_like(freqs)
    shape[keep] = freqs[keep] ** (-beta / 2.0)
    spectrum = (rng.standard_normal(len(freqs)) + 1j * rng.standard_normal(len(freqs))) * shape
    noise = np.fft.irfft(spectrum, n=num_samples)
    power = float(np.mean(noise ** 2))
    if power > 0.0:
        noise /= math.sqrt(power)
    return noise.astype(np.float32)


def band_limit(wave: np.ndarray, sample_rate: int, narrow_rate: int) -> np.ndarray:
    """``wave`` as it sounds after a channel sampled at ``narrow_rate`` (e.g. a telephone line at 8 kHz):
    resampled down and back up with soxr, so nothing above ``narrow_rate / 2`` is left.

    Args:
        wave: 1-D float waveform.
        sample_rate: Its sample rate in Hz.
        narrow_rate: The channel's sample rate, below ``sample_rate``.

    Returns:
        The float32 waveform, same length.

    Example:
        >>> t = np.arange(16000) / 16000
        >>> tones = (np.sin(2 * np.pi * 500 * t) + np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
        >>> spectrum = np.abs(np.fft.rfft(band_limit(tones, 16000, 8000)))
        >>> bool(spectrum[6000] < 1e-3 * spectrum[500])
        True
    """
    wave = np.asarray(wave, dtype=np.float32)
    narrow = soxr.resample(wave, sample_rate, narrow_rate, quality="HQ")
    back = soxr.resample(narrow, narrow_rate, sample_rate, quality="HQ")
    out = np.zeros(len(wave), dtype=np.float32)  # the round trip may gain or lose a sample at the end
    out[:min(len(out), len(back))] = back[:len(out)]
    return out


def speed_perturb(wave: np.ndarray, speed: float, sample_rate: int) -> np.ndarray:
    """Plays ``wave`` ``speed`` times faster (duration / speed, pitch * speed), like ``sox speed``.

    The waveform is reinterpreted as sampled at ``sample_rate * speed`` and resampled to
    ``sample_rate`` with soxr, so the result has about ``len(wave) / speed`` samples.

    Args:
        wave: 1-D float waveform.
        speed: Speed factor (> 1 faster and shorter).
        sample_rate: Sample rate in Hz.

    Returns:
        The perturbed float32 waveform (length changed).

    Example:
        >>> len(speed_perturb(np.zeros(11000, dtype=np.float32), 1.1, 16000))
        10000
    """
    if speed == 1.0:
        return np.asarray(wave, dtype=np.float32)
    # soxr takes non-integer rates. HQ as in load_audio: at ~1 ms per 2 s crop it is not worth
    # trading quality for speed.
    out = soxr.resample(np.asarray(wave, dtype=np.float32), sample_rate * speed, sample_rate, quality="HQ")
    return np.asarray(out, dtype=np.float32)


def fit_length(wave: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Crops (random start) or tiles ``wave`` to exactly ``length`` samples.

    Tiling rather than zero padding matches :class:`~voxprint.data.dataset.CropDataset`: the crop
    holds only speech statistics.

    Args:
        wave: 1-D waveform (non-empty).
        length: Target length in samples.
        rng: Chooses the crop start.

    Returns:
        A waveform of ``length`` samples.

    Raises:
        ValueError: ``wave`` is empty.

    Example:
        >>> fit_length(np.arange(3), 7, np.random.default_rng(0)).tolist()  # tiled, then cropped
        [2, 0, 1, 2, 0, 1, 2]
    """
    n = len(wave)
    if n == 0:
        raise ValueError("cannot fit an empty waveform to a length")
    if n < length:
        wave = np.tile(wave, -(-length // n))
        n = len(wave)
    start = int(rng.integers(0, n - length + 1))
    return wave[start:start + length]


def _unit_power(wave: np.ndarray) -> np.ndarray:
    """``wave`` scaled to mean square 1 (unchanged if silent)."""
    power = float(np.mean(np.square(wave, dtype=np.float64)))
    return wave / np.float32(math.sqrt(power)) if power > 0.0 else wave


def reverberate(wave: np.ndarray, rir: np.ndarray, direct: int | None = None) -> np.ndarray:
    """Convolves with ``rir``, aligned on its direct path so the speech is not delayed.

    Args:
        wave: 1-D float32 waveform.
        rir: Room impulse response.
        direct: Index of the direct path in ``rir``. ``None`` takes the peak, right for measured RIRs
            with leading silence. :class:`~voxprint.data.rir.RIRBank` responses start at their
            direct path (0): in about one simulated room in four, coinciding reflections later sum
            to a higher peak than the direct sound, and aligning on that peak would advance the
            speech by up to ~20 ms.

    Returns:
        float32 reverberant waveform of ``len(wave)`` samples.

    Example:
        >>> echo = np.array([0.0, 1.0, 0.0, 0.5], dtype=np.float32)  # direct sound at 1, echo at 3
        >>> reverberate(np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32), echo).round(4).tolist()
        [1.0, 0.0, 0.5, 0.0]
    """
    rir = np.asarray(rir, dtype=np.float32)
    offset = int(np.argmax(np.abs(rir))) if direct is None else int(direct)
    full = fftconvolve(wave, rir, mode="full")
    return full[offset:offset + len(wave)].astype(np.float32, copy=False)

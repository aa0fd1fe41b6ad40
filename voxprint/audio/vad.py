"""Energy-based voice activity detection.

Speaker-verification recipes commonly drop non-speech frames with a simple
energy VAD before embedding (e.g. the orthogonal-regularization SV systems,
following Kaldi's ``compute-vad``): long silences carry no speaker information
but still pull pooled statistics towards the channel's noise floor. The
threshold here is relative to the utterance's loudest frame, so it does not
depend on recording gain.
"""
from __future__ import annotations

import numpy as np

from voxprint.errors import AudioError

__all__ = ["energy_vad_mask", "remove_silence"]

# Keeps log10 finite for all-zero frames; far below any real frame energy
# (one 16-bit LSB squared is ~1e-9).
_ENERGY_EPS = 1e-20


def _frame_geometry(num_samples: int, sample_rate: int, frame_ms: float, shift_ms: float) -> tuple[int, int, int]:
    if sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive number of Hz, got {sample_rate}.")
    frame = max(1, int(round(sample_rate * frame_ms / 1000.0)))
    shift = max(1, int(round(sample_rate * shift_ms / 1000.0)))
    # Audio shorter than one frame is analysed as a single (short) frame
    # instead of yielding no decision at all.
    frame = min(frame, max(num_samples, 1))
    num_frames = 1 + max(num_samples - frame, 0) // shift
    return frame, shift, num_frames


def _as_wave(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise AudioError(f"VAD expects a 1-D mono waveform, got an array of shape {wave.shape}.")
    return wave


def energy_vad_mask(
    wave: np.ndarray,
    sample_rate: int,
    frame_ms: float = 25.0,
    shift_ms: float = 10.0,
    threshold_db: float = -40.0,
) -> np.ndarray:
    """Marks frames whose energy is within ``threshold_db`` of the loudest frame.

    Frames start every ``shift_ms`` and span ``frame_ms`` (no padding at the
    edges, like Kaldi's ``snip_edges``), so frame ``i`` covers samples
    ``[i * shift, i * shift + frame)``.

    Args:
        wave: 1-D mono waveform.
        sample_rate: Sample rate in Hz.
        frame_ms: Frame length in milliseconds.
        shift_ms: Frame shift in milliseconds.
        threshold_db: A frame is speech when its energy, in dB relative to the loudest frame
            of the utterance, is above this (negative) value.

    Returns:
        Boolean array with one entry per frame, True for speech. Audio with no
        contrast at all (e.g. all zeros) is all True: there is nothing to
        tell speech from silence by.

    Example:
        >>> wave = np.zeros(16000, dtype=np.float32)
        >>> wave[4000:8000] = 0.1 * np.sin(np.arange(4000) / 3)
        >>> mask = energy_vad_mask(wave, 16000)
        >>> bool(mask[40]), bool(mask[0])
        (True, False)
    """
    wave = _as_wave(wave)
    n = wave.shape[0]
    frame, shift, num_frames = _frame_geometry(n, sample_rate, frame_ms, shift_ms)
    if n == 0:
        return np.ones(0, dtype=bool)
    x = wave.astype(np.float64)
    # Running sums give every frame's sum and sum of squares in O(n) without
    # materialising a (frames, frame_length) matrix.
    csum = np.concatenate(([0.0], np.cumsum(x)))
    csq = np.concatenate(([0.0], np.cumsum(x * x)))
    starts = np.arange(num_frames) * shift
    ends = starts + frame
    mean = (csum[ends] - csum[starts]) / frame
    # Variance rather than raw power: a DC offset would otherwise make silence
    # look as loud as speech.
    energy = np.maximum((csq[ends] - csq[starts]) / frame - mean * mean, 0.0)
    log_energy = 10.0 * np.log10(energy + _ENERGY_EPS)
    return log_energy > log_energy.max() + threshold_db


def remove_silence(
    wave: np.ndarray,
    sample_rate: int,
    threshold_db: float = -40.0,
    min_keep_seconds: float = 0.5,
    margin_ms: float = 100.0,
    frame_ms: float = 25.0,
    shift_ms: float = 10.0,
) -> np.ndarray:
    """Drops non-speech stretches anywhere in the waveform, keeping a margin around speech.

    Each speech frame keeps its samples plus ``margin_ms`` on both sides, so
    word onsets, soft endings and short pauses (up to about twice the margin)
    survive; only longer silences are cut out.

    Args:
        wave: 1-D mono waveform.
        sample_rate: Sample rate in Hz.
        threshold_db: Speech threshold relative to the loudest frame (see :func:`energy_vad_mask`).
        min_keep_seconds: If less than this much audio would remain, ``wave`` is returned
            unchanged: an over-eager VAD must not turn a quiet utterance into a
            fragment too short to embed.
        margin_ms: Audio kept on each side of every speech frame, in milliseconds.
        frame_ms: VAD frame length in milliseconds.
        shift_ms: VAD frame shift in milliseconds.

    Returns:
        The speech samples in their original order (a new array), or ``wave``
        itself when nothing is removed or too little would remain.

    Example:
        >>> speech = 0.1 * np.sin(np.arange(16000) / 3)
        >>> padded = np.concatenate([np.zeros(16000), speech, np.zeros(16000)])
        >>> len(remove_silence(padded, 16000)) < 20000
        True
    """
    wave = _as_wave(wave)
    n = wave.shape[0]
    if n == 0:
        return wave
    frame, shift, _ = _frame_geometry(n, sample_rate, frame_ms, shift_ms)
    mask = energy_vad_mask(wave, sample_rate, frame_ms=frame_ms, shift_ms=shift_ms, threshold_db=threshold_db)
    margin = int(round(sample_rate * margin_ms / 1000.0))
    speech_starts = np.flatnonzero(mask) * shift
    lo = np.clip(speech_starts - margin, 0, n)
    hi = np.clip(speech_starts + frame + margin, 0, n)
    # Interval union via a difference array: +1 where a kept span opens, -1
    # where it closes; a sample is kept while any span covers it.
    coverage = np.cumsum(np.bincount(lo, minlength=n + 1)[:n] - np.bincount(hi, minlength=n + 1)[:n])
    keep = coverage > 0
    num_kept = int(keep.sum())
    if num_kept == n or num_kept < min_keep_seconds * sample_rate:
        return wave
    return wave[keep]

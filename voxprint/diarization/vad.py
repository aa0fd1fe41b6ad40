"""Voice activity detection for diarization: Silero VAD, with the energy VAD as a fallback.

Silero VAD (the model that the ``silero-vad`` package ships inside its wheel; nothing is downloaded)
scores 32 ms chunks (512 samples at 16 kHz, 256 at 8 kHz) with a small convolutional encoder and an
LSTM that carries state from chunk to chunk. Its own loop calls the TorchScript model once per chunk
(about 60x real time on one thread); here the encoder, which sees only its chunk and the 64 samples
before it, runs on all chunks of a block at once and only the LSTM steps through time, which gives
the same probabilities (to 1e-5) about ten times faster. Blocks of :data:`BLOCK_CHUNKS` chunks bound
the memory on long recordings.

Speech/non-speech decisions follow Silero's ``get_speech_timestamps``: a chunk opens speech when its
probability reaches ``threshold`` and speech continues until it falls below ``threshold - 0.15``; then
pauses shorter than ``min_silence`` are closed, regions shorter than ``min_speech`` dropped and each
region padded by ``pad`` seconds.

When ``silero-vad`` is not installed, or the sample rate is neither 16 nor 8 kHz, ``method="auto"``
uses :func:`voxprint.audio.energy_vad_mask` (frames within ``ENERGY_THRESHOLD_DB`` of the loudest one)
with the same post-processing.
"""
from __future__ import annotations

import functools
from typing import Any, Literal

import numpy as np
import torch

from voxprint.audio import energy_vad_mask
from voxprint.errors import AudioError, VoxprintError

__all__ = ["ENERGY_THRESHOLD_DB", "SileroVAD", "mask_to_regions", "silero_available", "speech_regions"]

VadMethod = Literal["auto", "silero", "energy"]

#: Chunks whose encoder runs in one call (about 65 s of 16 kHz audio): bounds memory on long recordings.
BLOCK_CHUNKS = 2048
#: The energy fallback's threshold relative to the loudest 25 ms frame.
ENERGY_THRESHOLD_DB = -35.0
#: Silero's hysteresis: speech, once started, lasts until the probability falls this far below the threshold.
_HYSTERESIS = 0.15


def silero_available() -> bool:
    """Whether the ``silero-vad`` package can be imported.

    Example:
        >>> isinstance(silero_available(), bool)
        True
    """
    try:
        import silero_vad  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _silero_model() -> Any:
    """The packaged TorchScript Silero model (loaded once per process, from the wheel's own file)."""
    import silero_vad

    return silero_vad.load_silero_vad(onnx=False).eval()


class SileroVAD:
    """Speech probabilities of 32 ms chunks from the Silero VAD model in the ``silero-vad`` wheel.

    Args:
        sample_rate: 16000 or 8000 (the rates the model was trained for).

    Raises:
        VoxprintError: ``silero-vad`` is not installed, or the rate is not supported.
    """

    def __init__(self, sample_rate: int = 16000):
        if sample_rate not in (8000, 16000):
            raise VoxprintError(f"Silero VAD works at 16000 or 8000 Hz, not {sample_rate}; use the energy VAD")
        if not silero_available():
            raise VoxprintError("Silero VAD needs the silero-vad package (pip install silero-vad); "
                                "or use the energy VAD (vad='energy')")
        self.whole = _silero_model()
        self.sample_rate = sample_rate
        self.chunk = 512 if sample_rate == 16000 else 256
        self.context = 64 if sample_rate == 16000 else 32
        self.lstm: torch.nn.LSTM | None = None
        try:
            self.net = self.whole._model if sample_rate == 16000 else self.whole._model_8k
            # The decoder's LSTM cell as an nn.LSTM: one call steps through a whole block.
            weights = {k: v for k, v in self.net.state_dict().items() if k.startswith("decoder.rnn.")}
            hidden = weights["decoder.rnn.weight_hh"].shape[1]
            lstm = torch.nn.LSTM(hidden, hidden, batch_first=True)
            with torch.no_grad():
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(lstm, f"{name}_l0").copy_(weights[f"decoder.rnn.{name}"])
            self.net.stft, self.net.encoder, self.net.decoder.decoder  # noqa: B018  (the parts used below)
            self.lstm = lstm.eval()
        except (AttributeError, KeyError, RuntimeError):
            # Another silero-vad release laid its model out differently: its own chunk-by-chunk loop still works.
            self.lstm = None

    @property
    def chunk_seconds(self) -> float:
        """Duration of one scored chunk (0.032 s)."""
        return self.chunk / self.sample_rate

    @torch.inference_mode()
    def probabilities(self, wave: np.ndarray) -> np.ndarray:
        """Speech probability of each chunk ``[i * chunk, (i + 1) * chunk)`` of ``wave`` (the last one zero-padded).

        Args:
            wave: 1-D waveform at :attr:`sample_rate`.

        Returns:
            ``(ceil(len(wave) / chunk),)`` float32 probabilities in [0, 1].
        """
        samples = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        count = -(-len(samples) // self.chunk)
        if self.lstm is None:
            return self.whole.audio_forward(samples, self.sample_rate)[0, :count].numpy().astype(np.float32)
        # Each chunk is scored with the ``context`` samples before it (zeros before the first), as in Silero's loop.
        padded = torch.nn.functional.pad(samples, (self.context, count * self.chunk - len(samples)))
        state = None
        out = []
        for first in range(0, count, BLOCK_CHUNKS):
            last = min(count, first + BLOCK_CHUNKS)
            frames = padded[first * self.chunk:last * self.chunk + self.context].unfold(
                0, self.chunk + self.context, self.chunk)
            features = self.net.encoder(self.net.stft(frames)).squeeze(-1)
            hidden, state = self.lstm(features.unsqueeze(0), state)
            out.append(self.net.decoder.decoder(hidden[0].unsqueeze(-1)).reshape(-1))
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, dtype=np.float32)


def mask_to_regions(mask: np.ndarray, frame_seconds: float, min_speech: float = 0.25, min_silence: float = 0.1,
                    pad: float = 0.0, total: float | None = None) -> np.ndarray:
    """Speech regions ``(N, 2)`` in seconds from per-frame decisions.

    Pauses shorter than ``min_silence`` are closed first, then regions shorter than ``min_speech``
    dropped, then each region padded by ``pad`` on both sides (clipped to ``[0, total]``, overlapping
    regions joined).

    Args:
        mask: ``(T,)`` True for speech frames; frame ``i`` covers ``[i, i + 1) * frame_seconds``.
        frame_seconds: frame duration.
        min_speech: shortest region kept.
        min_silence: shortest pause kept.
        pad: seconds added on each side.
        total: the recording's duration (default: the end of the last frame).

    Returns:
        ``(N, 2)`` float64 start and end times, in order, not overlapping.

    Example:
        >>> mask_to_regions(np.array([0, 1, 1, 0, 1, 1, 0, 0, 0, 1], bool), 0.1, min_speech=0.15, min_silence=0.15)
        array([[0.1, 0.6]])
    """
    mask = np.asarray(mask, dtype=bool)
    total = len(mask) * frame_seconds if total is None else total
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    regions: list[list[float]] = []
    for s, e in zip(starts * frame_seconds, ends * frame_seconds):
        if regions and s - regions[-1][1] < min_silence:
            regions[-1][1] = e
        else:
            regions.append([s, e])
    kept: list[list[float]] = []
    for s, e in regions:
        if e - s < min_speech:
            continue
        s, e = max(0.0, s - pad), min(total, e + pad)
        if kept and s <= kept[-1][1]:
            kept[-1][1] = e
        else:
            kept.append([s, e])
    return np.asarray(kept, dtype=np.float64).reshape(-1, 2)


def _hysteresis(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Silero's decision: speech from a chunk at ``threshold`` until one below ``threshold - 0.15``."""
    low = max(threshold - _HYSTERESIS, 0.01)
    mask = np.zeros(len(probabilities), dtype=bool)
    speaking = False
    above, below = probabilities >= threshold, probabilities < low
    for i in range(len(probabilities)):
        if speaking and below[i]:
            speaking = False
        elif not speaking and above[i]:
            speaking = True
        mask[i] = speaking
    return mask


def speech_regions(wave: np.ndarray, sample_rate: int, method: VadMethod = "auto", threshold: float = 0.5,
                   min_speech: float = 0.25, min_silence: float = 0.1, pad: float = 0.03) -> np.ndarray:
    """Where ``wave`` holds speech, as ``(N, 2)`` start/end seconds.

    Args:
        wave: 1-D waveform.
        sample_rate: its rate in Hz.
        method: ``silero``, ``energy``, or ``auto`` (Silero when it is installed and supports the rate).
        threshold: Silero's speech probability threshold (unused by the energy VAD).
        min_speech: shortest speech region kept (seconds).
        min_silence: shortest pause that splits speech (seconds).
        pad: seconds of context added on each side of a region.

    Returns:
        ``(N, 2)`` float64 regions, in order, not overlapping (``N`` may be 0).

    Raises:
        VoxprintError: ``method="silero"`` without the package or at an unsupported rate; an unknown method.
        AudioError: ``wave`` is not a 1-D waveform.

    Example:
        >>> rate = 16000
        >>> tone = 0.3 * np.sin(np.arange(rate) / 2.0)
        >>> wave = np.concatenate([np.zeros(rate), tone, np.zeros(rate)]).astype(np.float32)
        >>> speech_regions(wave, rate, method="energy", pad=0.0).round(1)
        array([[1., 2.]])
    """
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise AudioError(f"VAD expects a 1-D mono waveform, got an array of shape {wave.shape}")
    total = len(wave) / sample_rate
    if method == "auto":
        method = "silero" if sample_rate in (8000, 16000) and silero_available() else "energy"
    if method == "silero":
        vad = SileroVAD(sample_rate)
        mask = _hysteresis(vad.probabilities(wave), threshold)
        step = vad.chunk_seconds
    elif method == "energy":
        mask = energy_vad_mask(wave, sample_rate, frame_ms=25.0, shift_ms=10.0, threshold_db=ENERGY_THRESHOLD_DB)
        step = 0.010
    else:
        raise VoxprintError(f"unknown VAD {method!r}; use auto, silero or energy")
    return mask_to_regions(mask, step, min_speech=min_speech, min_silence=min_silence, pad=pad, total=total)

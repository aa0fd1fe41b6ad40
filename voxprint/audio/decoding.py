"""Decoding recordings in worker processes, ahead of the model that embeds them.

Decoding, resampling and silence removal are numpy/soxr work that holds no torch state, so bulk
extraction can hand them to worker processes while the main process runs the encoder. The workers
are spawned (not forked: forking a process that holds torch's thread pools is unsafe) and import only
this torch-free module. At most ``ahead`` recordings, and at most ``ahead_seconds`` of audio by their
headers (but always one recording), are in flight, so a slow encoder never lets decoded audio pile up in
memory, however long the recordings.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
import soundfile

from voxprint.audio.io import load_audio
from voxprint.audio.vad import remove_silence
from voxprint.errors import AudioError

__all__ = ["DEFAULT_AHEAD_SECONDS", "DecodeSettings", "decode_in_workers"]

#: Audio (by the files' headers) decoded ahead of the encoder at most: one hour is 230 MB at 16 kHz float32.
DEFAULT_AHEAD_SECONDS = 3600.0


@dataclass(frozen=True)
class DecodeSettings:
    """How a model reads a recording (what :meth:`voxprint.inference.SpeakerModel.load_waveform` does).

    Attributes:
        target_rate: the model's sample rate.
        min_seconds: shorter recordings are refused.
        max_seconds: longer recordings are refused (None: no limit).
        vad_threshold_db: silence below this level is removed (None: no VAD).
    """

    target_rate: int
    min_seconds: float
    max_seconds: float | None
    vad_threshold_db: float | None

    def decode(self, audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None) -> np.ndarray:
        """The waveform of a file (or of an array at ``sample_rate``), as the model reads it.

        Raises:
            AudioError: the recording cannot be used.
        """
        wave = load_audio(audio, sample_rate=sample_rate, target_rate=self.target_rate, min_seconds=self.min_seconds,
                          max_seconds=self.max_seconds)
        if self.vad_threshold_db is not None:
            wave = remove_silence(wave, self.target_rate, threshold_db=self.vad_threshold_db)
        return wave


def _decode(settings: DecodeSettings, path: str) -> np.ndarray | AudioError:
    # The error is returned, not raised, so the caller decides (fail or skip) in input order.
    try:
        return settings.decode(path)
    except AudioError as exc:
        return exc


def _header_seconds(path: str) -> float:
    """The recording's duration by its header (0 when it has none: its decoding returns an error, no audio)."""
    try:
        return float(soundfile.info(path).duration)
    except (RuntimeError, OSError):  # soundfile's LibsndfileError is a RuntimeError
        return 0.0


def decode_in_workers(paths: Sequence[str | os.PathLike], settings: DecodeSettings, workers: int,
                      ahead: int | None = None, ahead_seconds: float = DEFAULT_AHEAD_SECONDS
                      ) -> Iterator[np.ndarray | AudioError]:
    """Each file's waveform (or the :class:`AudioError` it raised), in input order, decoded by ``workers``
    spawned processes with at most ``ahead`` files (default ``4 * workers``) and ``ahead_seconds`` of audio
    (by the headers; one file is always let through) in flight.

    Example:
        >>> from voxprint.paths import data_root
        >>> files = sorted((data_root() / "fsdd" / "george").glob("*.flac"))[:3]
        >>> settings = DecodeSettings(16000, 0.1, None, None)
        >>> [len(w) == len(settings.decode(f)) for w, f in zip(decode_in_workers(files, settings, 2), files)]
        [True, True, True]
    """
    ahead = ahead or 4 * workers
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending: deque[tuple[Future, float]] = deque()
        remaining = iter(paths)
        in_flight = 0.0

        def submit_more() -> None:
            nonlocal in_flight
            while not pending or (len(pending) < ahead and in_flight < ahead_seconds):
                path = next(remaining, None)
                if path is None:
                    return
                seconds = _header_seconds(str(path))
                pending.append((pool.submit(_decode, settings, str(path)), seconds))
                in_flight += seconds

        submit_more()
        while pending:
            future, seconds = pending.popleft()
            result = future.result()
            in_flight -= seconds
            submit_more()
            yield result

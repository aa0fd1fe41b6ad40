"""Loading audio files and arrays into validated float32 mono waveforms.

Every waveform that enters voxprint goes through :func:`load_audio`, so the
rest of the toolkit can assume float32, mono, finite samples in [-1, 1] at a
known sample rate, long enough to be worth embedding. Anything else is turned
into an :class:`~voxprint.errors.AudioError` naming the file (or array) and
saying what to do about it.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from voxprint.errors import AudioError

__all__ = ["load_audio", "validate_waveform", "audio_file_problem", "check_audio_files", "SUPPORTED_EXTENSIONS",
           "MAX_CHANNELS", "DEFAULT_MAX_SECONDS"]

#: Container formats we promise to read (soundfile/libsndfile reads more).
SUPPORTED_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

#: Arrays whose short axis is longer than this are not treated as multi-channel
#: audio: a (channels, samples) array with hundreds of "channels" is far more
#: likely a batch or a feature matrix passed by mistake.
MAX_CHANNELS = 8

#: Longest input accepted unless told otherwise (4 hours): long enough for a meeting, short enough
#: that the waveform (230 MB per hour at 16 kHz) fits in memory with room to spare.
DEFAULT_MAX_SECONDS = 4 * 3600.0

# Files with more samples than this are decoded block by block, so a long 44.1 kHz stereo file never
# exists in memory as a whole at its original rate and width.
_STREAM_SAMPLES = 1 << 22
_BLOCK_FRAMES = 1 << 18

# Below this peak the signal is digital silence: a 16-bit recording's smallest
# non-zero sample is 1/32768 ~ 3e-5, so 1e-8 only catches true zeros (and the
# denormal dust some encoders and resamplers leave behind).
_SILENCE_PEAK = 1e-8

# Float input louder than this is not [-1, 1] audio that merely clipped; it is
# almost always integer PCM values stored as floats.
_MAX_FLOAT_PEAK = 2.0


def validate_waveform(
    wave: np.ndarray,
    name: str,
    sample_rate: int,
    min_seconds: float = 0.0,
) -> np.ndarray:
    """Checks a mono waveform and returns it as contiguous float32 in [-1, 1].

    These are the checks shared by file and array input of :func:`load_audio`.

    Args:
        wave: 1-D waveform, floating point, nominally in [-1, 1].
        name: What to call the audio in error messages (a file path or a description
            of the array).
        sample_rate: Sample rate of ``wave`` in Hz, used to report durations.
        min_seconds: Minimum accepted duration in seconds (0 accepts any non-empty audio).

    Returns:
        The waveform as C-contiguous float32, clipped to [-1, 1] (small
        overshoots come from resampling or float files and are harmless).

    Raises:
        AudioError: If the waveform is not 1-D, is empty, contains NaN or Inf, is digitally
            silent, is far outside [-1, 1], or is shorter than ``min_seconds``.

    Example:
        >>> wave = validate_waveform(np.full(16000, 0.1), "example", 16000, min_seconds=0.5)
        >>> wave.dtype, wave.shape
        (dtype('float32'), (16000,))
    """
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise AudioError(f"{name}: expected a 1-D mono waveform, got an array of shape {wave.shape}.")
    if wave.size == 0:
        raise AudioError(f"{name} contains no audio samples (it is empty); record or select a non-empty clip.")
    if not np.issubdtype(wave.dtype, np.floating):
        raise AudioError(
            f"{name}: expected floating-point samples, got dtype {wave.dtype}; "
            "pass it through load_audio(), which scales integer PCM to [-1, 1]."
        )
    # Reductions instead of elementwise masks: no temporary as large as an hours-long waveform. The
    # extremes are NaN or infinite exactly when some sample is.
    low, high = float(np.min(wave)), float(np.max(wave))
    if not (np.isfinite(low) and np.isfinite(high)):
        finite = np.isfinite(wave)
        n_nan = int(np.isnan(wave).sum())
        n_inf = int(wave.size - finite.sum() - n_nan)
        raise AudioError(
            f"{name} contains non-finite samples ({n_nan} NaN, {n_inf} Inf out of {wave.size}); "
            "the audio is corrupt or came from a failed computation, so it cannot be used."
        )
    peak = max(high, -low)
    if peak < _SILENCE_PEAK:
        raise AudioError(
            f"{name} is digital silence (every sample is zero); there is no speech in it. "
            "Check the microphone, the input channel or the recording software."
        )
    if peak > _MAX_FLOAT_PEAK:
        raise AudioError(
            f"{name} has float samples up to {peak:.4g}, far outside [-1, 1]; it looks like integer PCM "
            "stored as float. Divide by 32768 (16-bit) or pass the original int16 array."
        )
    if sample_rate <= 0:
        raise AudioError(f"{name}: the sample rate must be a positive number of Hz, got {sample_rate}.")
    duration = wave.size / sample_rate
    if duration < min_seconds:
        raise AudioError(
            f"{name} is too short: {duration:.3f} s of audio, but at least {min_seconds:.3f} s is needed. "
            "Use a longer recording."
        )
    if peak > 1.0:
        wave = np.clip(wave, -1.0, 1.0)
    return np.ascontiguousarray(wave, dtype=np.float32)


def load_audio(
    source: str | os.PathLike | np.ndarray,
    sample_rate: int | None = None,
    target_rate: int = 16000,
    min_seconds: float = 0.0,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> np.ndarray:
    """Loads a file or array as a validated float32 mono waveform at ``target_rate``.

    Files (wav, flac, ogg, mp3 and anything else libsndfile decodes) are
    decoded with soundfile; multi-channel audio is mixed down by averaging the
    channels; the result is resampled with soxr (high quality) when its rate
    differs from ``target_rate``.

    Args:
        source: An audio file path, or a waveform array. Arrays may be float (in
            [-1, 1]) or integer PCM (int16 is scaled by 1/32768, int32 by 1/2**31,
            uint8 is offset-binary), 1-D, or 2-D as (samples, channels) or
            (channels, samples) with at most 8 channels on the short axis.
        sample_rate: Sample rate of an array ``source`` in Hz; required for arrays. For a
            file the rate comes from its header; if given, it must match it.
        target_rate: Sample rate of the returned waveform in Hz.
        min_seconds: Minimum accepted duration in seconds, measured after resampling.
        max_seconds: Maximum accepted duration in seconds (None: no limit). A file's duration is checked from its
            header, before anything is decoded; long files are decoded and resampled block by block.

    Returns:
        1-D float32 waveform in [-1, 1] at ``target_rate``.

    Raises:
        AudioError: For a missing, empty, unreadable or corrupt file, a directory, an
            array without ``sample_rate``, an unusable array shape or dtype, and
            for audio that is empty, non-finite, digitally silent or shorter than
            ``min_seconds`` or longer than ``max_seconds``.

    Example:
        >>> tone = (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32)
        >>> load_audio(tone, sample_rate=8000, target_rate=16000).shape
        (16000,)
    """
    if isinstance(target_rate, bool) or not isinstance(target_rate, (int, np.integer)) or target_rate <= 0:
        raise AudioError(f"target_rate must be a positive integer number of Hz, got {target_rate!r}.")

    if isinstance(source, np.ndarray):
        name = f"audio array of shape {source.shape}"
        if sample_rate is None:
            raise AudioError(
                f"{name}: sample_rate is required when passing an array, e.g. "
                "load_audio(wave, sample_rate=16000); voxprint cannot guess the rate of raw samples."
            )
        rate = _check_rate(sample_rate, name)
        _check_duration(name, max(source.shape) / rate if source.size else 0.0, max_seconds)
        wave = _array_to_mono(source, name)
    elif isinstance(source, (str, os.PathLike)):
        name = str(source)
        info = _read_header(Path(source))
        rate = int(info.samplerate)
        if sample_rate is not None and int(sample_rate) != rate:
            raise AudioError(
                f"{name}: sample_rate={sample_rate} was given but the file header says {rate} Hz. "
                "Leave sample_rate unset for files (the header is used) and set target_rate to choose "
                "the output rate."
            )
        _check_duration(name, info.frames / rate, max_seconds)
        if info.frames * info.channels > _STREAM_SAMPLES:
            wave = _stream_file(Path(source), info, int(target_rate))
            return validate_waveform(wave, name, int(target_rate), min_seconds)
        wave = _read_file(Path(source))
    else:
        raise AudioError(
            f"cannot load audio from a {type(source).__name__}; pass a file path or a numpy array "
            "(convert tensors with .cpu().numpy())."
        )

    # Reject unusable audio before the resampler sees it, so errors describe the
    # input rather than a resampled copy of it.
    wave = validate_waveform(wave, name, rate)
    if rate != target_rate:
        wave = soxr.resample(wave, rate, int(target_rate), quality="HQ")
    return validate_waveform(wave, name, int(target_rate), min_seconds)


def _check_rate(sample_rate: object, name: str) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer, float)):
        raise AudioError(f"{name}: sample_rate must be a positive integer number of Hz, got {sample_rate!r}.")
    if sample_rate <= 0 or int(sample_rate) != sample_rate:
        raise AudioError(f"{name}: sample_rate must be a positive integer number of Hz, got {sample_rate!r}.")
    return int(sample_rate)


def audio_file_problem(path: str | os.PathLike, min_seconds: float = 0.0,
                       max_seconds: float | None = DEFAULT_MAX_SECONDS) -> str | None:
    """Why ``path`` cannot be used, judged from its header alone (fast: nothing is decoded), or None.

    Batch commands call this on every file before any slow work, so a bad file is reported up front.

    Example:
        >>> audio_file_problem("missing.flac").startswith("audio file not found")
        True
    """
    try:
        info = _read_header(Path(path))
        duration = info.frames / info.samplerate
        if info.frames == 0:
            raise AudioError(f"audio file {path} contains no audio samples (a header without data).")
        if duration < min_seconds:
            raise AudioError(f"{path} is too short: {duration:.3f} s of audio, but at least {min_seconds:.3f} s "
                             "is needed. Use a longer recording.")
        _check_duration(str(path), duration, max_seconds)
    except AudioError as exc:
        return str(exc)
    return None


def check_audio_files(files: Mapping[str, str | os.PathLike], where: str, min_seconds: float = 0.0,
                      max_seconds: float | None = DEFAULT_MAX_SECONDS, remedy: str = "replace or remove them",
                      shown: int = 3) -> None:
    """Judge every file from its header (about a millisecond each) and name the bad ones in one error.

    Batch work (training, bulk embedding) calls this before anything slow, so a bad file is reported at
    once with the count of all bad files, not hours later when it is first read.

    Args:
        files: name (e.g. utterance id) -> audio path.
        where: what the files are, for the message (e.g. ``"data.train /data/train"``).
        min_seconds: shorter files are bad.
        max_seconds: longer files are bad (None: no limit).
        remedy: what the user can do, ending the message.
        shown: how many bad files the message names.

    Raises:
        AudioError: some files are missing, empty, undecodable, too short or too long.

    Example:
        >>> check_audio_files({"a": "missing.wav"}, "the example")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        voxprint.errors.AudioError: 1 of 1 audio files of the example cannot be used: a (audio file not found: ...
    """
    bad = [f"{name} ({problem})" for name, path in sorted(files.items())
           if (problem := audio_file_problem(path, min_seconds, max_seconds)) is not None]
    if bad:
        more = f" and {len(bad) - shown} more" if len(bad) > shown else ""
        raise AudioError(f"{len(bad)} of {len(files)} audio files of {where} cannot be used: "
                         f"{'; '.join(bad[:shown])}{more}; {remedy}")


def _check_duration(name: str, seconds: float, max_seconds: float | None) -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"{name} is {seconds / 60:.1f} min long, more than the {max_seconds / 60:.1f} min limit; "
                         "split it, or raise the limit (max_seconds, --max-seconds).")


def _read_header(path: Path) -> "sf._SoundFileInfo":
    """The file's header (rate, frames, channels), with the checks that need no decoding."""
    if not path.exists():
        hint = "" if path.is_absolute() else f" (relative paths are resolved from {Path.cwd()})"
        raise AudioError(f"audio file not found: {path}{hint}. Check the path and file name.")
    if path.is_dir():
        raise AudioError(
            f"{path} is a directory, not an audio file; pass a single {'/'.join(SUPPORTED_EXTENSIONS)} file."
        )
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioError(f"cannot access audio file {path}: {exc.strerror or exc}.") from exc
    if size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes); the recording or copy probably failed.")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as exc:
        raise _decode_error(path, exc) from exc
    if info.samplerate <= 0:
        raise AudioError(f"audio file {path} declares a sample rate of {info.samplerate} Hz; it is corrupt.")
    return info


def _decode_error(path: Path, exc: Exception) -> AudioError:
    # libsndfile's own message ("Format not recognised", "Internal error") is terse, so say what it
    # means for the user as well.
    return AudioError(
        f"cannot decode audio file {path}: {exc}. The file is corrupt, truncated or not in a supported "
        f"format ({', '.join(SUPPORTED_EXTENSIONS)}); re-export or re-download it."
    )


def _stream_file(path: Path, info: "sf._SoundFileInfo", target_rate: int) -> np.ndarray:
    """Decode, mix down and resample a long file block by block into one float32 array."""
    rate = int(info.samplerate)
    out = np.empty(int(np.ceil(info.frames * target_rate / rate)) + 64, dtype=np.float32)
    filled = 0
    resampler = soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality="HQ") if rate != target_rate else None
    try:
        with sf.SoundFile(str(path)) as handle:
            while True:
                block = handle.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                last = len(block) < _BLOCK_FRAMES
                mono = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)
                piece = resampler.resample_chunk(mono, last=last) if resampler is not None else mono
                if filled + len(piece) > len(out):  # headers of some formats under-count frames
                    out = np.resize(out, filled + len(piece) + len(out) // 4)
                out[filled:filled + len(piece)] = piece
                filled += len(piece)
                if last:
                    break
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as exc:
        raise _decode_error(path, exc) from exc
    if filled == 0:
        raise AudioError(f"audio file {path} contains no audio samples (a header without data).")
    return out[:filled]


def _read_file(path: Path) -> np.ndarray:
    """Decodes ``path`` to a float32 mono waveform at its own rate."""
    try:
        data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as exc:
        raise _decode_error(path, exc) from exc
    if data.shape[0] == 0:
        raise AudioError(f"audio file {path} contains no audio samples (a header without data).")
    # Averaging (rather than taking channel 0) keeps speech that was recorded
    # on only one side of a stereo file.
    return data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)


def _array_to_mono(array: np.ndarray, name: str) -> np.ndarray:
    """Scales integer PCM to float and mixes a 2-D array down to mono."""
    if array.dtype == np.int16:
        wave = array.astype(np.float32) / 32768.0
    elif array.dtype == np.int32:
        wave = (array.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif array.dtype == np.uint8:
        # 8-bit WAV convention: unsigned, silence at 128.
        wave = (array.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(array.dtype, np.floating):
        wave = array.astype(np.float32, copy=False)
    else:
        raise AudioError(
            f"{name}: unsupported sample dtype {array.dtype}; use float32/float64 in [-1, 1] or int16/int32 PCM."
        )

    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise AudioError(
            f"{name}: expected a 1-D waveform or a 2-D (samples, channels) / (channels, samples) array, "
            f"got {wave.ndim} dimensions."
        )
    # soundfile's layout (samples, channels) wins a tie.
    channel_axis = 1 if wave.shape[1] <= wave.shape[0] else 0
    if wave.shape[channel_axis] > MAX_CHANNELS:
        raise AudioError(
            f"{name}: neither axis looks like audio channels (the shorter one has {wave.shape[channel_axis]} "
            f"entries, at most {MAX_CHANNELS} are accepted). Pass one utterance at a time, shaped (samples,), "
            "(samples, channels) or (channels, samples)."
        )
    return wave.mean(axis=channel_axis, dtype=np.float32)

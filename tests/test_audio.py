"""Audio loading, validation and energy VAD, on real speech read in place."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxprint.audio import energy_vad_mask, load_audio, remove_silence, validate_waveform
from voxprint.errors import AudioError, VoxprintError


@pytest.fixture(scope="module")
def speech(speech_file: Path) -> np.ndarray:
    return load_audio(speech_file)


@pytest.fixture(scope="module")
def fsdd_file(fsdd_dir: Path) -> Path:
    return fsdd_dir / "george" / "0_george_0.flac"


# --------------------------------------------------------------------- files


def test_flac_16k_loads_as_float32_mono(speech_file: Path) -> None:
    wave = load_audio(speech_file)
    info = sf.info(str(speech_file))
    assert info.samplerate == 16000
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert wave.shape[0] == info.frames
    assert np.isfinite(wave).all()
    assert np.abs(wave).max() <= 1.0
    assert wave.flags.c_contiguous


def test_fsdd_8k_is_resampled_to_16k(fsdd_file: Path) -> None:
    native, rate = sf.read(str(fsdd_file), dtype="float32")
    assert rate == 8000
    wave = load_audio(fsdd_file, target_rate=16000)
    assert abs(wave.shape[0] - 2 * native.shape[0]) <= 4
    assert wave.shape[0] / 16000 == pytest.approx(native.shape[0] / 8000, abs=1e-3)
    # Resampling keeps the signal's level: compare RMS, which the (band-limited)
    # digits barely change.
    assert np.sqrt(np.mean(wave**2)) == pytest.approx(np.sqrt(np.mean(native**2)), rel=0.05)


def test_same_rate_is_not_resampled(fsdd_file: Path) -> None:
    native, _ = sf.read(str(fsdd_file), dtype="float32")
    np.testing.assert_array_equal(load_audio(fsdd_file, target_rate=8000), native)


def test_stereo_file_mixes_to_channel_mean(tmp_path: Path, speech: np.ndarray, train_dir: Path) -> None:
    other = load_audio(train_dir / "SPEAKER0001" / "000010069.flac")
    n = min(len(speech), len(other))
    stereo = np.stack([speech[:n], other[:n]], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), stereo, 16000, subtype="PCM_16")
    stored, _ = sf.read(str(path), dtype="float32")
    wave = load_audio(path)
    assert wave.shape == (n,)
    np.testing.assert_allclose(wave, stored.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize(("fmt", "subtype"), [("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")])
def test_lossy_round_trip(tmp_path: Path, speech: np.ndarray, fmt: str, subtype: str) -> None:
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}/{subtype}")
    path = tmp_path / f"speech.{fmt.lower()}"
    try:
        sf.write(str(path), speech, 16000, format=fmt, subtype=subtype)
    except sf.LibsndfileError as exc:  # pragma: no cover - depends on the libsndfile build
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}: {exc}")
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - len(speech)) / 16000 < 0.05
    n = min(len(wave), len(speech))
    assert np.corrcoef(wave[:n], speech[:n])[0, 1] > 0.95


# -------------------------------------------------------------------- arrays


def test_int16_array_is_scaled(speech_file: Path) -> None:
    pcm, rate = sf.read(str(speech_file), dtype="int16")
    wave = load_audio(pcm, sample_rate=rate)
    np.testing.assert_allclose(wave, pcm.astype(np.float32) / 32768.0)
    np.testing.assert_allclose(wave, load_audio(speech_file), atol=1e-7)


@pytest.mark.parametrize("channels_first", [False, True])
def test_2d_array_is_mixed_down(speech: np.ndarray, channels_first: bool) -> None:
    stereo = np.stack([speech, 0.5 * speech], axis=0 if channels_first else 1)
    wave = load_audio(stereo, sample_rate=16000)
    np.testing.assert_allclose(wave, 0.75 * speech, atol=1e-7)


def test_array_resampled_with_min_seconds_after_resampling(speech: np.ndarray) -> None:
    wave = load_audio(speech, sample_rate=16000, target_rate=8000, min_seconds=1.0)
    assert abs(len(wave) - len(speech) // 2) <= 2


def test_float_array_slightly_over_full_scale_is_clipped(speech: np.ndarray) -> None:
    wave = load_audio(speech * 1.9, sample_rate=16000)
    assert np.abs(wave).max() <= 1.0


# ---------------------------------------------------------------- bad inputs


def _raises(match: str, source: object, **kwargs: object) -> str:
    with pytest.raises(AudioError, match=match) as info:
        load_audio(source, **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, VoxprintError)
    return str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.flac"
    assert str(path) in _raises("not found", path)


def test_directory(tmp_path: Path) -> None:
    assert str(tmp_path) in _raises("directory", tmp_path)


def test_garbage_wav(tmp_path: Path) -> None:
    path = tmp_path / "garbage.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    message = _raises("cannot decode", path)
    assert str(path) in message and "corrupt" in message


def test_truncated_flac(tmp_path: Path, speech_file: Path) -> None:
    path = tmp_path / "truncated.flac"
    path.write_bytes(speech_file.read_bytes()[:30])
    assert str(path) in _raises("cannot decode", path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.touch()
    assert str(path) in _raises("empty", path)


def test_header_without_samples(tmp_path: Path) -> None:
    path = tmp_path / "no_frames.wav"
    sf.write(str(path), np.zeros(0, dtype=np.float32), 16000)
    assert str(path) in _raises("no audio samples", path)


def test_all_zero_file(tmp_path: Path) -> None:
    path = tmp_path / "zeros.wav"
    sf.write(str(path), np.zeros(16000, dtype=np.float32), 16000)
    assert str(path) in _raises("silence", path)


def test_all_zero_array() -> None:
    _raises("silence", np.zeros(16000, dtype=np.float32), sample_rate=16000)


def test_nan_array(speech: np.ndarray) -> None:
    bad = speech.copy()
    bad[100] = np.nan
    assert "1 NaN" in _raises("NaN", bad, sample_rate=16000)


def test_inf_array(speech: np.ndarray) -> None:
    bad = speech.copy()
    bad[[5, 9]] = [np.inf, -np.inf]
    assert "2 Inf" in _raises("Inf", bad, sample_rate=16000)


def test_empty_array() -> None:
    _raises("empty", np.zeros(0, dtype=np.float32), sample_rate=16000)


def test_too_short_file(fsdd_file: Path) -> None:
    message = _raises("too short", fsdd_file, min_seconds=5.0)
    assert str(fsdd_file) in message and "5.000 s" in message


def test_too_short_array(speech: np.ndarray) -> None:
    message = _raises("too short", speech[:8000], sample_rate=16000, min_seconds=1.0)
    assert "0.500 s" in message and "1.000 s" in message


def test_array_without_sample_rate(speech: np.ndarray) -> None:
    _raises("sample_rate is required", speech)


def test_file_rate_mismatch(fsdd_file: Path) -> None:
    _raises("8000 Hz", fsdd_file, sample_rate=16000)


def test_int_scaled_floats_are_rejected(speech: np.ndarray) -> None:
    _raises("(?i)divide by 32768", speech * 32768.0, sample_rate=16000)


def test_too_many_channels() -> None:
    _raises("channels", np.full((16, 16000), 0.1, dtype=np.float32), sample_rate=16000)


def test_unsupported_source_type() -> None:
    _raises("file path or a numpy array", [0.1, 0.2], sample_rate=16000)


def test_validate_waveform_rejects_2d() -> None:
    with pytest.raises(AudioError, match="1-D"):
        validate_waveform(np.ones((2, 100), dtype=np.float32), "x", 16000)


# ----------------------------------------------------------------------- VAD


def test_vad_removes_padding(speech: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    sr = 16000

    def pad() -> np.ndarray:
        # 1 s: half digital silence, half very low noise (about -80 dBFS).
        return np.concatenate([np.zeros(sr // 2), rng.normal(0.0, 1e-4, sr // 2)]).astype(np.float32)

    padded = np.concatenate([pad(), speech, pad()[::-1]])
    out = remove_silence(padded, sr)
    # The recording has its own leading/trailing pauses, which the VAD trims
    # too; so the padded and unpadded results must agree, and neither may be
    # longer than the original speech.
    clean = remove_silence(speech, sr)
    assert abs(len(out) - len(clean)) / sr < 0.2
    assert len(out) / sr < len(speech) / sr + 0.2
    assert (len(padded) - len(out)) / sr > 1.8
    assert len(out) / sr > 0.5 * len(speech) / sr


def test_vad_drops_long_inner_silence(speech: np.ndarray) -> None:
    sr = 16000
    clean = remove_silence(speech, sr)
    joined = np.concatenate([speech, np.zeros(2 * sr, dtype=np.float32), speech])
    out = remove_silence(joined, sr)
    assert abs(len(out) - 2 * len(clean)) / sr < 0.3


@pytest.mark.parametrize("quiet", ["zeros", "noise"])
def test_silent_only_input_is_returned_unchanged(quiet: str) -> None:
    rng = np.random.default_rng(1)
    wave = np.zeros(32000, np.float32) if quiet == "zeros" else rng.normal(0, 1e-4, 32000).astype(np.float32)
    assert remove_silence(wave, 16000) is wave


def test_min_keep_seconds_returns_input(speech: np.ndarray) -> None:
    assert remove_silence(speech, 16000, min_keep_seconds=60.0) is speech


def test_vad_mask_shape_and_dc_robustness(speech: np.ndarray) -> None:
    mask = energy_vad_mask(speech, 16000)
    assert mask.dtype == bool
    assert mask.shape == (1 + (len(speech) - 400) // 160,)
    assert 0.2 < mask.mean() < 1.0
    # A constant offset is not energy: the decision must not change.
    np.testing.assert_array_equal(energy_vad_mask(speech + 0.3, 16000), mask)


def test_vad_rejects_2d() -> None:
    with pytest.raises(AudioError, match="1-D"):
        energy_vad_mask(np.zeros((2, 100)), 16000)


def test_decoding_ahead_is_bounded_by_audio_seconds(monkeypatch, fsdd_dir):
    # Files are submitted to the workers as the encoder takes results: with a budget below one file's
    # duration, one file is in flight at a time (the count limit alone would let 9 through).
    from voxprint.audio import decoding

    files = sorted((fsdd_dir / "george").glob("*.flac"))[:6]
    read = []
    monkeypatch.setattr(decoding, "_header_seconds", lambda path: read.append(path) or 0.4)
    settings = decoding.DecodeSettings(16000, 0.1, None, None)
    waves = decoding.decode_in_workers(files, settings, 2, ahead_seconds=0.3)
    first = next(waves)
    assert len(read) == 2 and len(first) == len(settings.decode(files[0]))  # the first, then the one after it
    assert len(list(waves)) == 5 and len(read) == 6
    read.clear()
    unbounded = decoding.decode_in_workers(files, settings, 2, ahead_seconds=1e9)
    next(unbounded)
    assert len(read) == 6
    unbounded.close()

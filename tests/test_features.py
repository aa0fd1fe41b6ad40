"""Log mel filterbank (checked against kaldi-native-fbank) and mean normalisation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from voxprint.audio import load_audio
from voxprint.errors import AudioError, ConfigError
from voxprint.features import LogMelFbank, mean_normalize, sliding_mean_normalize

import kaldi_native_fbank as knf  # a test dependency: a missing package must fail, never skip

# Tolerance against kaldi-native-fbank. Both compute in float32, so each is
# off from an exact (float64) computation by rounding noise of about 1e-7 of a
# frame's total energy. In bands within 60 dB of the frame's strongest band
# that noise is < ~2e-4 in the natural log, hence 1e-3. Bands 70+ dB below
# the peak (e.g. the 20-60 Hz band after DC removal) are at the rounding-noise
# level in both implementations (knf itself is ~1e-2 away from float64
# there), so they only get a loose bound.
TOL_STRONG_BANDS = 1e-3
STRONG_BAND_DB = 60.0
TOL_ALL_BANDS = 0.05
TOL_MEAN = 1e-4


def knf_fbank(wave: np.ndarray, sample_rate: int, n_mels: int, window: str = "povey") -> np.ndarray:
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sample_rate
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.frame_opts.window_type = window
    opts.mel_opts.num_bins = n_mels
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    fbank = knf.OnlineFbank(opts)
    # Kaldi works on int16-valued samples.
    fbank.accept_waveform(sample_rate, (wave.astype(np.float64) * 32768.0).tolist())
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


def assert_matches_kaldi(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref)
    db_below_peak = (ref.max(axis=1, keepdims=True) - ref) * (10.0 / np.log(10.0))
    strong = db_below_peak < STRONG_BAND_DB
    assert strong.mean() > 0.9
    assert diff[strong].max() < TOL_STRONG_BANDS
    assert diff.max() < TOL_ALL_BANDS
    assert diff.mean() < TOL_MEAN


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    # Tiny tensors: on a busy 2-core machine, intra-op threads spin against
    # each other and make every op ~50x slower than one thread.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> None:
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=0, atol=atol)


@pytest.fixture(scope="module")
def speech(speech_file: Path) -> np.ndarray:
    return load_audio(speech_file)


@pytest.mark.parametrize("n_mels", [40, 80])
def test_matches_kaldi_16k(speech: np.ndarray, n_mels: int) -> None:
    ours = LogMelFbank(16000, n_mels)(torch.from_numpy(speech))
    assert ours.dtype == torch.float32
    assert_matches_kaldi(ours.numpy(), knf_fbank(speech, 16000, n_mels))


def test_matches_kaldi_8k_fsdd(fsdd_dir: Path) -> None:
    wave = load_audio(fsdd_dir / "jackson" / "3_jackson_7.flac", target_rate=8000)
    fbank = LogMelFbank(8000, 40)
    assert (fbank.frame_length, fbank.frame_shift, fbank.n_fft) == (200, 80, 256)
    assert_matches_kaldi(fbank(torch.from_numpy(wave)).numpy(), knf_fbank(wave, 8000, 40))


@pytest.mark.parametrize(("ours", "kaldi"), [("hamming", "hamming"), ("hann", "hanning")])
def test_other_windows_match_kaldi(speech: np.ndarray, ours: str, kaldi: str) -> None:
    wave = speech[:16000]
    result = LogMelFbank(16000, 40, window=ours)(torch.from_numpy(wave)).numpy()
    assert_matches_kaldi(result, knf_fbank(wave, 16000, 40, window=kaldi))


def test_batch_equals_rows(speech: np.ndarray, train_dir: Path) -> None:
    other = load_audio(train_dir / "SPEAKER0001" / "000010069.flac")
    n = min(len(speech), len(other), 32000)
    batch = torch.from_numpy(np.stack([speech[:n], other[:n]]))
    fbank = LogMelFbank(n_mels=80)
    out = fbank(batch)
    assert out.shape == (2, fbank.num_frames(n), 80)
    for row in range(2):
        assert_close(out[row], fbank(batch[row]))


def test_frame_arithmetic() -> None:
    fbank = LogMelFbank()
    assert (fbank.frame_length, fbank.frame_shift, fbank.n_fft) == (400, 160, 512)
    assert fbank.num_frames(399) == 0
    assert fbank.num_frames(400) == 1
    assert fbank.num_frames(559) == 1 and fbank.num_frames(560) == 2
    for frames in (1, 2, 98, 300):
        samples = fbank.num_samples(frames)
        assert fbank.num_frames(samples) == frames
        assert fbank.num_frames(samples - 1) == frames - 1
        assert fbank(torch.zeros(samples).uniform_(-0.1, 0.1)).shape == (frames, 40)
    assert fbank.num_samples(0) == 0


def test_buffers_are_not_saved_and_follow_dtype() -> None:
    fbank = LogMelFbank()
    assert fbank.state_dict() == {}
    assert fbank.mel_banks.shape == (257, 40)
    assert fbank.window.shape == (400,)
    assert fbank(torch.rand(1000, dtype=torch.float64) - 0.5).dtype == torch.float32


def test_too_short_input_raises() -> None:
    with pytest.raises(AudioError, match="shorter than one"):
        LogMelFbank()(torch.zeros(399))


def test_bad_input_rank_and_dtype() -> None:
    with pytest.raises(AudioError, match="shape"):
        LogMelFbank()(torch.zeros(1, 2, 1000))
    with pytest.raises(AudioError, match="float"):
        LogMelFbank()(torch.zeros(1000, dtype=torch.int16))


def test_bad_config() -> None:
    with pytest.raises(ConfigError, match="window"):
        LogMelFbank(window="rectangle")
    with pytest.raises(ConfigError, match="no FFT bin"):
        LogMelFbank(8000, n_mels=128)
    with pytest.raises(ConfigError, match="frequency range"):
        LogMelFbank(16000, high_freq=9000.0)


def test_silence_hits_the_log_floor() -> None:
    out = LogMelFbank()(torch.zeros(1000))
    assert_close(out, torch.full_like(out, float(np.log(np.float32(1.1920929e-07)))))


# ------------------------------------------------------------- normalisation


def naive_sliding_cmn(feats: np.ndarray, window: int) -> np.ndarray:
    """Kaldi's SlidingWindowCmnInternal (center=true, no variance norm), frame by frame."""
    num_frames = feats.shape[0]
    out = np.empty_like(feats, dtype=np.float64)
    for t in range(num_frames):
        start = t - window // 2
        end = start + window
        if start < 0:
            end -= start
            start = 0
        if end > num_frames:
            start -= end - num_frames
            end = num_frames
            start = max(start, 0)
        out[t] = feats[t] - feats[start:end].mean(axis=0)
    return out


@pytest.fixture(scope="module")
def real_feats(speech: np.ndarray) -> torch.Tensor:
    return LogMelFbank(n_mels=40)(torch.from_numpy(speech))


@pytest.mark.parametrize("window", [1, 2, 7, 50, 300, 333, 1000])
def test_sliding_matches_naive_loop(real_feats: torch.Tensor, window: int) -> None:
    expected = naive_sliding_cmn(real_feats.double().numpy(), window)
    out = sliding_mean_normalize(real_feats, window)
    assert out.dtype == real_feats.dtype and out.shape == real_feats.shape
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)


def test_sliding_batched_equals_rows(real_feats: torch.Tensor) -> None:
    batch = torch.stack([real_feats, real_feats.flip(0) * 0.5])
    out = sliding_mean_normalize(batch, 100)
    for row in range(2):
        assert_close(out[row], sliding_mean_normalize(batch[row], 100))


def test_sliding_on_short_utterance_is_global_cmn(real_feats: torch.Tensor) -> None:
    short = real_feats[:120]
    assert_close(sliding_mean_normalize(short, 300), mean_normalize(short), atol=1e-4)


def test_mean_normalize_zero_time_mean(real_feats: torch.Tensor) -> None:
    out = mean_normalize(real_feats)
    assert out.mean(dim=0).abs().max() < 1e-4
    batch = mean_normalize(torch.stack([real_feats, real_feats * 2.0]))
    assert batch.mean(dim=1).abs().max() < 1e-4


def test_mean_normalize_honours_lengths(real_feats: torch.Tensor) -> None:
    short = 150
    padded = torch.stack([real_feats, torch.cat([real_feats[:short], torch.full_like(real_feats[short:], 99.0)])])
    out = mean_normalize(padded, torch.tensor([real_feats.shape[0], short]))
    assert_close(out[0], mean_normalize(real_feats))
    assert_close(out[1, :short], mean_normalize(real_feats[:short]))
    assert torch.all(out[1, short:] == 0)


def test_mean_normalize_rejects_bad_lengths(real_feats: torch.Tensor) -> None:
    batch = real_feats.unsqueeze(0)
    with pytest.raises(ValueError, match="lengths"):
        mean_normalize(batch, torch.tensor([batch.shape[1] + 1]))
    with pytest.raises(ValueError, match="lengths"):
        mean_normalize(batch, torch.tensor([10, 10]))

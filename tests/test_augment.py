"""Waveform augmentation and SpecAugment, on real speechocean762 speech."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import welch

from voxprint.audio import load_audio
from voxprint.data import read_data_folder
from voxprint.data.augment import (
    AugmentConfig,
    Augmenter,
    RIRBank,
    add_at_snr,
    coloured_noise,
    num_speed_classes,
    speed_label,
    speed_perturb,
)
from voxprint.data import rir, signal
from voxprint.errors import ConfigError
from voxprint.features.specaugment import SpecAugment

RATE = 16000
DRAWS = 50
# A small, dry bank keeps the simulation to about a second; the default ranges go to 0.9 s RT60.
BANK = dict(size=3, sample_rate=RATE, seed=0, rt60=(0.2, 0.4), max_seconds=0.5)


def snr_db(clean: np.ndarray, mixture: np.ndarray) -> float:
    residual = mixture.astype(np.float64) - clean.astype(np.float64)
    return float(10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(residual ** 2)))


@pytest.fixture(scope="module")
def speech(speech_file) -> np.ndarray:
    return load_audio(speech_file, target_rate=RATE)


@pytest.fixture(scope="module")
def others(train_dir) -> list[np.ndarray]:
    """Utterances of other speakers than ``speech``, as babble material."""
    folder = read_data_folder(train_dir)
    return [load_audio(folder.wav[folder.spk2utt[spk][0]], target_rate=RATE) for spk in folder.speakers[1:7]]


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("rir") / "rirs.npz"
    RIRBank(cache=path, **BANK)
    return path


@pytest.fixture(scope="module")
def bank(bank_path) -> RIRBank:
    return RIRBank(cache=bank_path, **BANK)


def crop(wave: np.ndarray, rng: np.random.Generator, length: int) -> np.ndarray:
    if len(wave) < length:
        wave = np.tile(wave, -(-length // len(wave)))
    start = int(rng.integers(0, len(wave) - length + 1))
    return wave[start:start + length]


@pytest.mark.parametrize("effect", ["noise", "babble", "reverb", "speed", "narrowband", "all"])
def test_every_effect_keeps_length_dtype_and_finiteness(effect, speech, others, bank):
    probs = {f"{name}_prob": 1.0 if effect in (name, "all") else 0.0
             for name in ("noise", "babble", "reverb", "speed", "narrowband")}
    augmenter = Augmenter(AugmentConfig(**probs), RATE,
                          babble_source=lambda rng: others[int(rng.integers(len(others)))], rir_bank=bank)
    rng = np.random.default_rng(1)
    for _ in range(DRAWS):
        clean = crop(speech, rng, int(rng.integers(4000, 2 * RATE)))
        before = clean.copy()
        out = augmenter(clean, rng)
        assert out.dtype == np.float32 and out.shape == clean.shape
        assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
        assert not np.array_equal(out, clean)
        assert np.array_equal(clean, before)  # the input is not modified in place


def test_augmentation_replays_from_the_generator(speech, others, bank):
    config = AugmentConfig(noise_prob=0.6, babble_prob=0.6, reverb_prob=0.6, speed_prob=0.6)
    augmenter = Augmenter(config, RATE, babble_source=lambda rng: others[int(rng.integers(len(others)))],
                          rir_bank=bank)
    clean = speech[:RATE]
    first = [augmenter(clean, np.random.default_rng([7, i])) for i in range(5)]
    again = [augmenter(clean, np.random.default_rng([7, i])) for i in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_add_at_snr_hits_the_requested_snr(beta, snr, speech):
    rng = np.random.default_rng([int(100 + 10 * snr), int(beta)])
    clean = crop(speech, rng, 2 * RATE)
    mixture = add_at_snr(clean, coloured_noise(len(clean), beta, rng, RATE), snr)
    assert mixture.dtype == np.float32
    assert abs(snr_db(clean, mixture) - snr) < 0.5


def test_add_at_snr_with_speech_noise_and_silence(speech, others):
    clean = speech[:RATE]
    mixture = add_at_snr(clean, others[0][:RATE], 13.0)
    assert abs(snr_db(clean, mixture) - 13.0) < 0.5
    silent = np.zeros(RATE, dtype=np.float32)
    assert np.array_equal(add_at_snr(silent, others[0][:RATE], 0.0), silent)
    with pytest.raises(ValueError, match="same shape"):
        add_at_snr(clean, others[0][:RATE // 2], 0.0)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 1.5, 2.0])
def test_coloured_noise_has_the_requested_spectral_slope(beta):
    noise = coloured_noise(1 << 16, beta, np.random.default_rng(3), RATE)
    assert noise.dtype == np.float32 and abs(np.mean(noise.astype(np.float64) ** 2) - 1.0) < 1e-3
    freqs, power = welch(noise, fs=RATE, nperseg=4096)
    band = (freqs >= 100) & (freqs <= 7000)
    slope = np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0]
    assert abs(slope + beta) < 0.3


def test_rir_bank_is_cached_and_rirs_are_physical(bank_path, bank):
    assert bank.loaded_from_cache and len(bank) == BANK["size"]
    again = RIRBank(cache=bank_path, **BANK)
    assert again.loaded_from_cache
    assert all(np.array_equal(a, b) for a, b in zip(bank.rirs, again.rirs))
    fresh = RIRBank(**BANK)  # simulated again without a cache: the seed makes the same rooms
    assert all(np.allclose(a, b) for a, b in zip(bank.rirs, fresh.rirs))
    for rir in bank.rirs:
        assert rir.dtype == np.float32 and np.isfinite(rir).all()
        assert len(rir) <= int(BANK["max_seconds"] * RATE)
        assert abs(np.sum(rir.astype(np.float64) ** 2) - 1.0) < 1e-4
        # Starts at the direct path: the first sample is a strong arrival, not leading silence.
        assert abs(rir[0]) > 0.25 * np.abs(rir).max()
        energy = rir.astype(np.float64) ** 2
        tenth = len(rir) // 10
        assert energy[-tenth:].sum() < 1e-3 * energy[:tenth].sum()
    with pytest.raises(ConfigError, match="delete the file"):
        RIRBank(cache=bank_path, **{**BANK, "seed": 1})


def test_moved_names_stay_importable_from_augment():
    assert RIRBank is rir.RIRBank
    assert (add_at_snr, coloured_noise, speed_perturb) == (signal.add_at_snr, signal.coloured_noise,
                                                            signal.speed_perturb)
    assert Augmenter.reverberate is signal.reverberate


@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()])
def test_rir_cache_save_interrupted_midway_leaves_nothing(tmp_path, monkeypatch, bank, failure):
    real_savez = np.savez

    def savez_then_fail(handle, **arrays):
        real_savez(handle, **arrays)  # the archive is written, then the process dies before the move
        handle.write(b"half")
        raise failure

    monkeypatch.setattr(RIRBank, "_simulate", lambda self: bank.rirs)  # no need to simulate again
    monkeypatch.setattr(rir.np, "savez", savez_then_fail)
    cache = tmp_path / "cache" / "rirs.npz"
    with pytest.raises(type(failure)):
        RIRBank(cache=cache, **BANK)
    assert not cache.exists()
    assert list(cache.parent.iterdir()) == []  # no temporary file left beside it either
    monkeypatch.undo()
    assert not RIRBank(cache=cache, **BANK).loaded_from_cache  # a later run simulates and saves afresh
    assert RIRBank(cache=cache, **BANK).loaded_from_cache


def envelope_db(wave: np.ndarray, hop: int = 80) -> np.ndarray:
    """RMS level of 5 ms frames, in dB."""
    frames = wave[:len(wave) // hop * hop].astype(np.float64).reshape(-1, hop)
    return 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)


def onset_frame(wave: np.ndarray) -> int:
    level = envelope_db(wave)
    return int(np.argmax(level > level.max() - 30.0))


def test_reverb_is_correlated_with_the_input_and_not_delayed(speech, bank):
    # The utterance opens with ~0.6 s of silence, so the speech onset is a timing reference.
    clean = speech[:2 * RATE]
    for rir in bank.rirs:
        out = Augmenter.reverberate(clean, rir, direct=0)
        assert out.shape == clean.shape and out.dtype == np.float32
        # The waveform itself decorrelates quickly with reverberation; its loudness contour does not.
        assert np.corrcoef(envelope_db(out), envelope_db(clean))[0, 1] > 0.6
        # Aligned on the direct sound: the onset is where it was (a 5 ms frame of slack), whereas
        # the simulated propagation delay alone would be 1-5 frames.
        assert abs(onset_frame(out) - onset_frame(clean)) <= 1
    augmenter = Augmenter(AugmentConfig(reverb_prob=1.0), RATE, rir_bank=bank)
    out = augmenter(clean, np.random.default_rng(0))
    assert not np.allclose(out, clean, atol=1e-3)
    assert abs(onset_frame(out) - onset_frame(clean)) <= 1


def test_reverberate_aligns_on_the_peak_by_default(speech):
    clean = speech[:RATE]
    rir = np.zeros(400, dtype=np.float32)
    rir[100], rir[250] = 1.0, 0.3  # 100 samples of leading silence, as in a measured RIR
    out = Augmenter.reverberate(clean, rir)
    assert np.allclose(out[:150], clean[:150], atol=1e-5)


def test_babble_comes_from_the_provided_source(speech):
    tone_hz = 1000.0
    tone = (0.3 * np.sin(2 * np.pi * tone_hz * np.arange(3 * RATE) / RATE)).astype(np.float32)
    calls = []

    def source(rng: np.random.Generator) -> np.ndarray:
        calls.append(1)
        return tone

    augmenter = Augmenter(AugmentConfig(babble_prob=1.0), RATE, babble_source=source)
    clean = speech[:2 * RATE]
    out = augmenter(clean, np.random.default_rng(5))
    assert 3 <= len(calls) <= 7
    assert 13.0 - 0.5 < snr_db(clean, out) < 20.0 + 0.5
    freqs, power = welch(out - clean, fs=RATE, nperseg=2048)
    assert abs(freqs[np.argmax(power)] - tone_hz) < 10.0
    with pytest.raises(ConfigError, match="babble source"):
        Augmenter(AugmentConfig(babble_prob=0.5), RATE)


@pytest.mark.parametrize("speed", [0.9, 1.1])
def test_speed_changes_duration_and_pitch(speed, speech):
    clean = speech[:2 * RATE]
    perturbed = speed_perturb(clean, speed, RATE)
    assert abs(len(perturbed) - len(clean) / speed) <= 2
    tone = np.sin(2 * np.pi * 500.0 * np.arange(RATE) / RATE).astype(np.float32)
    freqs, power = welch(speed_perturb(tone, speed, RATE), fs=RATE, nperseg=4096)
    assert abs(freqs[np.argmax(power)] - 500.0 * speed) < 8.0
    augmenter = Augmenter(AugmentConfig(speed_prob=1.0, speeds=(speed,)), RATE)
    out, index = augmenter.augment(clean, np.random.default_rng(0))
    assert index == 1 and out.shape == clean.shape and out.dtype == np.float32


def band_energy_db(wave: np.ndarray, low: float, high: float) -> float:
    """Energy of ``wave`` between ``low`` and ``high`` Hz relative to its whole energy, in dB."""
    freqs, power = welch(wave, fs=RATE, nperseg=1024)
    return float(10 * np.log10(power[(freqs >= low) & (freqs < high)].sum() / power.sum()))


def test_narrowband_leaves_the_telephone_band_and_only_it(speech):
    """Real speech through the telephone channel: its energy above 4 kHz is gone (speechocean762 has a
    few percent there), the band below is the same signal, and the other effects draw what they drew
    without it (its decision is drawn last, so enabling it does not reshuffle theirs)."""
    clean = speech[:2 * RATE]
    assert band_energy_db(clean, 4200, 8000) > -30.0
    config = AugmentConfig(narrowband_prob=1.0)
    out = Augmenter(config, RATE)(clean, np.random.default_rng(0))
    assert band_energy_db(out, 4200, 8000) < -60.0
    spectrum_in, spectrum_out = np.fft.rfft(clean), np.fft.rfft(out)
    low = slice(int(300 * len(clean) / RATE), int(3000 * len(clean) / RATE))
    assert np.abs(spectrum_out[low] - spectrum_in[low]).sum() < 0.05 * np.abs(spectrum_in[low]).sum()
    assert np.array_equal(signal.band_limit(clean, RATE, 8000), out)
    # 12 kHz is a narrower band than 16 kHz too: the cut follows the configured rate.
    wider = Augmenter(AugmentConfig(narrowband_prob=1.0, narrowband_rate=12000), RATE)(clean, np.random.default_rng(0))
    assert band_energy_db(wider, 4200, 5800) > -30.0 and band_energy_db(wider, 6200, 8000) < -60.0
    # The band is drawn after every other effect: with it, a crop gets the same speed and noise as without.
    plain = Augmenter(AugmentConfig(noise_prob=0.5, speed_prob=0.5), RATE)
    banded = Augmenter(AugmentConfig(noise_prob=0.5, speed_prob=0.5, narrowband_prob=1.0), RATE)
    for seed in range(6):
        without, speed = plain.augment(clean, np.random.default_rng(seed))
        with_band, banded_speed = banded.augment(clean, np.random.default_rng(seed))
        assert banded_speed == speed
        np.testing.assert_allclose(with_band, signal.band_limit(without, RATE, 8000), atol=1e-6)
    with pytest.raises(ConfigError, match="narrowband_rate"):
        AugmentConfig(narrowband_rate=8)


def test_speed_as_new_speakers_labels():
    config = AugmentConfig.from_dict({"speed_prob": 0.5, "speed_as_new_speakers": True})
    assert num_speed_classes(125, config) == 375
    assert num_speed_classes(125, AugmentConfig(speed_prob=0.5)) == 125
    assert [speed_label(4, k, 125) for k in range(3)] == [4, 129, 254]
    augmenter = Augmenter(config, RATE)
    wave = np.sin(np.arange(RATE) / 5).astype(np.float32) * 0.1
    assert augmenter.augment(wave, np.random.default_rng(0), speed_index=0) == (pytest.approx(wave), 0)
    assert augmenter.augment(wave, np.random.default_rng(0), speed_index=2)[1] == 2
    with pytest.raises(ValueError):
        speed_label(125, 1, 125)


def test_config_rejects_typos_and_bad_values():
    assert not AugmentConfig.from_dict(None).enabled
    with pytest.raises(ConfigError, match="unknown key 'noise_probability' in section 'augment'; "
                                          "did you mean 'noise_prob'"):
        AugmentConfig.from_dict({"noise_probability": 0.5})
    with pytest.raises(ConfigError, match="probability"):
        AugmentConfig.from_dict({"reverb_prob": 1.5})
    with pytest.raises(ConfigError, match="must not exceed"):
        AugmentConfig.from_dict({"snr_low": 20, "snr_high": 10})


def runs(mask: torch.Tensor) -> list[int]:
    """Lengths of the runs of True in a 1-D boolean mask."""
    padded = torch.cat([torch.zeros(1, dtype=torch.int8), mask.to(torch.int8), torch.zeros(1, dtype=torch.int8)])
    edges = torch.diff(padded)
    starts, ends = torch.nonzero(edges == 1).flatten(), torch.nonzero(edges == -1).flatten()
    return (ends - starts).tolist()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_specaugment_masks_the_requested_bands(device):
    aug = SpecAugment(time_masks=3, max_time_width=10, freq_masks=2, max_freq_width=6)
    feats = torch.randn(16, 150, 40, generator=torch.Generator().manual_seed(0)).to(device) + 5.0
    out = aug(feats, generator=torch.Generator(device).manual_seed(1))
    assert out.shape == feats.shape and out.device == feats.device
    mean = feats.mean(dim=1, keepdim=True).expand_as(feats)
    masked = out == mean
    assert torch.equal(out[~masked], feats[~masked])
    for b in range(feats.shape[0]):
        time_runs = runs(masked[b].all(dim=1).cpu())
        freq_runs = runs(masked[b].all(dim=0).cpu())
        assert len(time_runs) == 3 and all(1 <= w <= 10 for w in time_runs)
        assert len(freq_runs) == 2 and all(1 <= w <= 6 for w in freq_runs)
    # After mean normalisation the mask value is 0 (up to the rounding of the mean).
    normalised = feats - feats.mean(dim=1, keepdim=True)
    out = aug(normalised, generator=torch.Generator(device).manual_seed(1))
    assert out[masked].abs().max() < 1e-5


def test_specaugment_is_identity_in_eval_and_fits_short_inputs():
    aug = SpecAugment(time_masks=2, max_time_width=20, freq_masks=2, max_freq_width=20)
    feats = torch.randn(4, 100, 40)
    assert aug.eval()(feats) is feats
    aug.train()
    time_mask, freq_mask = aug.masks(8, 5, 3)
    assert all(len(runs(m)) == 2 for m in time_mask) and all(runs(m) == [1, 1] for m in freq_mask)
    assert aug(torch.randn(30, 40)).shape == (30, 40)
    with pytest.raises(ConfigError):
        SpecAugment(time_masks=-1)

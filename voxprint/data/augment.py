"""Waveform augmentation for speaker-embedding training: noise, babble, reverberation, speed, telephone band.

The recipe follows the x-vector/ECAPA practice (Snyder et al., 2018; Ko et al., 2015 for speed
perturbation, 2017 for simulated RIRs), with everything generated or simulated locally, so nothing
is downloaded:

- coloured noise (white, pink, brown and everything between) shaped as ``1 / f**beta`` on the fly;
- babble: the sum of a few other training utterances;
- reverberation with room impulse responses simulated by pyroomacoustics (image source method),
  simulated once and cached in an ``.npz`` file (:class:`~voxprint.data.rir.RIRBank`);
- speed perturbation by resampling (changes duration and pitch, like ``sox speed``);
- a telephone band: the crop resampled to a narrow rate (8 kHz by default) and back, so everything
  above 4 kHz is gone, as in telephone and many meeting recordings.

The signal primitives live in :mod:`voxprint.data.signal` and the RIR bank in
:mod:`voxprint.data.rir`; both stay importable from here. Every effect returns a float32 waveform
of the input's length, so a batch of equal-length crops stays one.

Example:
    >>> config = AugmentConfig.from_dict({"noise_prob": 1.0, "speed_prob": 0.5})
    >>> augmenter = Augmenter(config, sample_rate=16000)
    >>> rng = np.random.default_rng(0)
    >>> wave = (0.1 * np.sin(np.arange(32000) / 7)).astype(np.float32)
    >>> out = augmenter(wave, rng)
    >>> out.dtype, out.shape
    (dtype('float32'), (32000,))
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from voxprint.config import check_keys
from voxprint.data.rir import RIRBank
from voxprint.data.signal import (_unit_power, add_at_snr, band_limit, coloured_noise, fit_length, reverberate,
                                  speed_perturb)
from voxprint.errors import ConfigError

__all__ = [
    "AugmentConfig",
    "Augmenter",
    "RIRBank",
    "add_at_snr",
    "band_limit",
    "coloured_noise",
    "fit_length",
    "num_speed_classes",
    "speed_label",
    "speed_perturb",
]

#: A babble source returns one (other) training utterance, any length, float32 mono at the
#: augmenter's sample rate.
BabbleSource = Callable[[np.random.Generator], np.ndarray]


@dataclass
class AugmentConfig:
    """Augmentation settings, e.g. the ``augment:`` section of a training config.

    Every probability is per crop and per effect; effects are drawn independently, so several can
    apply to one crop (in the order speed, reverberation, babble, noise, telephone band: additive noise
    is recorded in the room after the talker's speech has been reverberated, and the channel carries both).

    Attributes:
        noise_prob: Probability of adding coloured noise.
        snr_low: Lower end (dB) of the uniformly drawn coloured-noise SNR.
        snr_high: Upper end (dB) of the coloured-noise SNR.
        noise_beta_low: Lower end of the spectral exponent: power ~ ``1 / f**beta`` (0 white,
            1 pink, 2 brown).
        noise_beta_high: Upper end of the spectral exponent.
        babble_prob: Probability of adding babble (needs a babble source).
        babble_snr_low: Lower end (dB) of the babble SNR.
        babble_snr_high: Upper end (dB) of the babble SNR.
        babble_min_speakers: Fewest summed utterances (drawn uniformly, inclusive).
        babble_max_speakers: Most summed utterances.
        reverb_prob: Probability of convolving with a simulated room impulse response.
        speed_prob: Probability of speed perturbation.
        narrowband_prob: Probability of passing the crop through a channel sampled at
            ``narrowband_rate`` (:func:`~voxprint.data.signal.band_limit`). Drawn only when above 0, so
            configs without it replay their augmentations unchanged.
        narrowband_rate: That channel's sample rate in Hz (8000: telephone).
        speeds: Speed factors drawn uniformly when speed perturbation applies (1.1 = 10 %
            faster/shorter).
        speed_as_new_speakers: Treat each speed as a different speaker (Kaldi/WeSpeaker practice);
            the trainer maps labels with :func:`speed_label` and sizes its classifier with
            :func:`num_speed_classes`.
        rir_bank_size: Number of simulated room impulse responses.
        rir_cache: ``.npz`` file holding the simulated RIRs; created if missing. ``None`` simulates
            in memory at every start.
        seed: Seed of the RIR simulation (rooms and positions), so a bank is reproducible; the
            per-crop random draws come from the generator passed to :class:`Augmenter`.

    Raises:
        ConfigError: A value out of range (probability, SNR or speed order, speed factor, bank size).

    Example:
        >>> AugmentConfig.from_dict({"reverb_prob": 0.5, "speeds": [0.95, 1.05]}).speeds
        (0.95, 1.05)
    """

    noise_prob: float = 0.0
    snr_low: float = 0.0
    snr_high: float = 15.0
    noise_beta_low: float = 0.0
    noise_beta_high: float = 2.0
    babble_prob: float = 0.0
    babble_snr_low: float = 13.0
    babble_snr_high: float = 20.0
    babble_min_speakers: int = 3
    babble_max_speakers: int = 7
    reverb_prob: float = 0.0
    speed_prob: float = 0.0
    narrowband_prob: float = 0.0
    narrowband_rate: int = 8000
    speeds: tuple[float, ...] = (0.9, 1.1)
    speed_as_new_speakers: bool = False
    rir_bank_size: int = 200
    rir_cache: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.speeds = tuple(float(s) for s in self.speeds)
        for name in ("noise_prob", "babble_prob", "reverb_prob", "speed_prob", "narrowband_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment.{name} must be a probability in [0, 1], got {value}")
        for low, high in (("snr_low", "snr_high"), ("noise_beta_low", "noise_beta_high"),
                          ("babble_snr_low", "babble_snr_high"),
                          ("babble_min_speakers", "babble_max_speakers")):
            if getattr(self, low) > getattr(self, high):
                raise ConfigError(f"augment.{low} ({getattr(self, low)}) must not exceed "
                                  f"augment.{high} ({getattr(self, high)})")
        if self.babble_min_speakers < 1:
            raise ConfigError(f"augment.babble_min_speakers must be at least 1, got {self.babble_min_speakers}")
        if self.speed_prob > 0 and not self.speeds:
            raise ConfigError("augment.speeds is empty but augment.speed_prob > 0; list at least one speed")
        if any(not 0.0 < s < 10.0 for s in self.speeds):
            raise ConfigError(f"augment.speeds must be factors in (0, 10), got {list(self.speeds)}")
        if self.narrowband_rate < 1000:
            raise ConfigError(f"augment.narrowband_rate must be a sample rate in Hz (8000 for telephone), "
                              f"got {self.narrowband_rate}")
        if self.reverb_prob > 0 and self.rir_bank_size < 1:
            raise ConfigError(f"augment.rir_bank_size must be at least 1, got {self.rir_bank_size}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> AugmentConfig:
        """Builds a config from a mapping; missing keys keep their defaults.

        Args:
            values: E.g. ``config["augment"]``; ``None`` gives the defaults (no augmentation).

        Returns:
            The settings.

        Raises:
            ConfigError: An unknown key (naming the closest valid one) or a bad value.

        Example:
            >>> AugmentConfig.from_dict({"noise_probability": 0.5})
            Traceback (most recent call last):
            ...
            voxprint.errors.ConfigError: config: unknown key 'noise_probability' in section 'augment'; did you mean 'noise_prob'?
        """
        values = dict(values or {})
        check_keys(values, [f.name for f in dataclasses.fields(cls)], "augment")
        return cls(**values)

    @property
    def enabled(self) -> bool:
        """Whether any effect can apply."""
        return max(self.noise_prob, self.babble_prob, self.reverb_prob, self.speed_prob, self.narrowband_prob) > 0.0


def speed_label(label: int, speed_index: int, num_speakers: int) -> int:
    """Class label of a speed-perturbed crop when each speed counts as a new speaker.

    Speed ``k`` (``speed_index = k``, 1-based into ``AugmentConfig.speeds``; 0 = not perturbed)
    of speaker ``label`` becomes class ``label + k * num_speakers``, so the original speakers keep
    their labels and the classifier needs :func:`num_speed_classes` outputs. Take ``speed_index``
    from :meth:`Augmenter.augment`; for a GE2E batch, pass one ``speed_index`` per speaker group to
    :meth:`Augmenter.augment` so all M crops of a (new) speaker share the speed.

    Args:
        label: Original speaker index in ``[0, num_speakers)``.
        speed_index: 0 for no perturbation, ``k >= 1`` for ``speeds[k - 1]``.
        num_speakers: Number of original speakers.

    Returns:
        The class label.

    Raises:
        ValueError: ``label`` or ``speed_index`` out of range.

    Example:
        >>> speed_label(3, 0, 10), speed_label(3, 2, 10)
        (3, 23)
    """
    if not 0 <= label < num_speakers:
        raise ValueError(f"label must be in [0, {num_speakers}), got {label}")
    if speed_index < 0:
        raise ValueError(f"speed_index must be >= 0, got {speed_index}")
    return int(label + speed_index * num_speakers)


def num_speed_classes(num_speakers: int, config: AugmentConfig) -> int:
    """Number of classes when speeds count as new speakers (else ``num_speakers``).

    Args:
        num_speakers: Number of original speakers.
        config: The augmentation settings.

    Returns:
        ``num_speakers * (1 + len(config.speeds))`` when speeds are new speakers, else ``num_speakers``.

    Example:
        >>> num_speed_classes(10, AugmentConfig(speed_prob=0.5, speed_as_new_speakers=True))
        30
    """
    if config.speed_as_new_speakers and config.speed_prob > 0:
        return num_speakers * (1 + len(config.speeds))
    return num_speakers


class Augmenter:
    """Applies the configured effects to waveform crops, each with its own probability.

    Args:
        config: Which effects, how likely, how strong.
        sample_rate: Sample rate of the crops in Hz.
        babble_source: Returns one other training utterance (float32, any length, at
            ``sample_rate``); required when ``config.babble_prob > 0``.
        rir_bank: A ready bank; by default one is built from ``config`` when
            ``config.reverb_prob > 0``.

    Raises:
        ConfigError: Babble without a source, or a bank at another sample rate.

    Example:
        >>> augmenter = Augmenter(AugmentConfig(noise_prob=1.0, snr_low=5.0, snr_high=5.0), 16000)
        >>> wave = (0.1 * np.sin(np.arange(8000) / 3)).astype(np.float32)
        >>> noisy = augmenter(wave, np.random.default_rng(0))
        >>> round(float(10 * np.log10(np.mean(wave ** 2) / np.mean((noisy - wave) ** 2))), 2)
        5.0
    """

    # Kept as a method so existing ``Augmenter.reverberate(...)`` calls work; see signal.reverberate.
    reverberate = staticmethod(reverberate)

    def __init__(self, config: AugmentConfig, sample_rate: int, babble_source: BabbleSource | None = None,
                 rir_bank: RIRBank | None = None):
        self.config = config
        self.sample_rate = int(sample_rate)
        if config.babble_prob > 0 and babble_source is None:
            raise ConfigError("augment.babble_prob > 0 needs a babble source (other training utterances)")
        self.babble_source = babble_source
        if rir_bank is None and config.reverb_prob > 0:
            rir_bank = RIRBank(config.rir_bank_size, self.sample_rate, cache=config.rir_cache, seed=config.seed)
        if rir_bank is not None and rir_bank.sample_rate != self.sample_rate:
            raise ConfigError(
                f"the RIR bank is at {rir_bank.sample_rate} Hz but the crops are at {self.sample_rate} Hz"
            )
        self.rir_bank = rir_bank

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augments one crop; see :meth:`augment`. Returns the waveform only."""
        return self.augment(wave, rng)[0]

    def augment(self, wave: np.ndarray, rng: np.random.Generator,
                speed_index: int | None = None) -> tuple[np.ndarray, int]:
        """Augments one crop and says which speed was applied.

        Args:
            wave: 1-D float waveform (not modified).
            rng: Source of every random choice, so a crop's augmentation replays from its generator.
            speed_index: Forces the speed (0 none, ``k`` for ``config.speeds[k - 1]``) instead of
                drawing it, e.g. one speed per speaker group when speeds are new speakers.

        Returns:
            The float32 crop, same length as ``wave``, finite, clipped to [-1, 1] only if it
            exceeds it; and the speed index (see :func:`speed_label`).

        Raises:
            ValueError: ``speed_index`` out of range.
        """
        c = self.config
        wave = np.asarray(wave, dtype=np.float32)
        length = len(wave)
        if length == 0:
            return wave.copy(), 0
        out = wave
        # Every decision is drawn even when its effect is off, so changing one probability does
        # not reshuffle the random draws of the others.
        use_speed, use_reverb, use_babble, use_noise = rng.random(4) < (
            c.speed_prob, c.reverb_prob, c.babble_prob, c.noise_prob)
        if speed_index is None:
            speed_index = int(rng.integers(1, len(c.speeds) + 1)) if use_speed and c.speeds else 0
        elif not 0 <= speed_index <= len(c.speeds):
            raise ValueError(f"speed_index must be in [0, {len(c.speeds)}], got {speed_index}")
        if speed_index > 0:
            out = fit_length(speed_perturb(out, c.speeds[speed_index - 1], self.sample_rate), length, rng)
        if use_reverb and self.rir_bank is not None:
            out = self.reverberate(out, self.rir_bank.sample(rng), direct=0)
        if use_babble and self.babble_source is not None:
            out = add_at_snr(out, self.babble(length, rng),
                             float(rng.uniform(c.babble_snr_low, c.babble_snr_high)))
        if use_noise:
            beta = float(rng.uniform(c.noise_beta_low, c.noise_beta_high))
            out = add_at_snr(out, coloured_noise(length, beta, rng, self.sample_rate),
                             float(rng.uniform(c.snr_low, c.snr_high)))
        # Drawn last, and only when enabled: the draws above stay those of a config without it.
        if c.narrowband_prob > 0 and rng.random() < c.narrowband_prob and c.narrowband_rate < self.sample_rate:
            out = band_limit(out, self.sample_rate, c.narrowband_rate)
        if out is wave:
            # Never hand back the caller's array (often a view of a cached utterance) to be mutated.
            out = wave.copy()
        if float(np.max(np.abs(out))) > 1.0:
            out = np.clip(out, -1.0, 1.0)
        return np.ascontiguousarray(out, dtype=np.float32), speed_index

    def babble(self, length: int, rng: np.random.Generator) -> np.ndarray:
        """Sum of 3-7 (per config) utterances from the babble source, each at equal power.

        Args:
            length: Length in samples.
            rng: Random source (also passed to the babble source).

        Returns:
            float32 babble of ``length`` samples.

        Raises:
            ConfigError: No babble source was given.
        """
        if self.babble_source is None:
            raise ConfigError("no babble source was given to the Augmenter")
        c = self.config
        talkers = int(rng.integers(c.babble_min_speakers, c.babble_max_speakers + 1))
        total = np.zeros(length, dtype=np.float32)
        for _ in range(talkers):
            utterance = np.asarray(self.babble_source(rng), dtype=np.float32)
            if utterance.size == 0:
                continue
            # Equal power per talker, so no single voice dominates and the babble stays babble.
            total += _unit_power(fit_length(utterance, length, rng))
        return total

"""Waveform augmentation for speaker-embedding training: noise, babble, reverberation, speed.

The recipe follows the x-vector/ECAPA practice (Snyder et al., 2018; Ko et al., 2015 for speed
perturbation, 2017 for simulated RIRs), with everything generated or simulated locally, so nothing
is downloaded:

- coloured noise (white, pink, brown and everything between) shaped as ``1 / f**beta`` on the fly;
- babble: the sum of a few other training utterances;
- reverberation with room impulse responses simulated by pyroomacoustics (image source method),
  simulated once and cached in an ``.npz`` file;
- speed perturbation by resampling (changes duration and pitch, like ``sox speed``).

Every effect returns a float32 waveform of the input's length, so a batch of equal-length crops stays
one.

Example
-------
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
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soxr
from scipy.signal import fftconvolve

from voxprint.errors import ConfigError

__all__ = [
    "AugmentConfig",
    "Augmenter",
    "RIRBank",
    "add_at_snr",
    "coloured_noise",
    "fit_length",
    "num_speed_classes",
    "speed_label",
    "speed_perturb",
]

#: A babble source returns one (other) training utterance, any length, float32 mono at the
#: augmenter's sample rate.
BabbleSource = Callable[[np.random.Generator], np.ndarray]

# Bumped whenever the simulation changes, so an old cache is not mistaken for a current one.
_RIR_CACHE_VERSION = 1


@dataclass
class AugmentConfig:
    """Augmentation settings, e.g. the ``augment:`` section of a training config.

    Every probability is per crop and per effect; effects are drawn independently, so several can
    apply to one crop (in the order speed, reverberation, babble, noise: additive noise is recorded
    in the room after the talker's speech has been reverberated).

    Arguments
    ---------
    noise_prob : float
        Probability of adding coloured noise.
    snr_low, snr_high : float
        Range (dB) of the uniformly drawn coloured-noise SNR.
    noise_beta_low, noise_beta_high : float
        Range of the spectral exponent: power ~ ``1 / f**beta`` (0 white, 1 pink, 2 brown).
    babble_prob : float
        Probability of adding babble (needs a babble source).
    babble_snr_low, babble_snr_high : float
        Range (dB) of the babble SNR.
    babble_min_speakers, babble_max_speakers : int
        Number of summed utterances, drawn uniformly in this inclusive range.
    reverb_prob : float
        Probability of convolving with a simulated room impulse response.
    speed_prob : float
        Probability of speed perturbation.
    speeds : tuple[float, ...]
        Speed factors drawn uniformly when speed perturbation applies (1.1 = 10 % faster/shorter).
    speed_as_new_speakers : bool
        Treat each speed as a different speaker (Kaldi/WeSpeaker practice); the trainer maps labels
        with :func:`speed_label` and sizes its classifier with :func:`num_speed_classes`.
    rir_bank_size : int
        Number of simulated room impulse responses.
    rir_cache : str | None
        ``.npz`` file holding the simulated RIRs; created if missing. ``None`` simulates in memory
        at every start.
    seed : int
        Seed of the RIR simulation (rooms and positions), so a bank is reproducible; the per-crop
        random draws come from the generator passed to :class:`Augmenter`.

    Example
    -------
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
    speeds: tuple[float, ...] = (0.9, 1.1)
    speed_as_new_speakers: bool = False
    rir_bank_size: int = 200
    rir_cache: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.speeds = tuple(float(s) for s in self.speeds)
        for name in ("noise_prob", "babble_prob", "reverb_prob", "speed_prob"):
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
        if self.reverb_prob > 0 and self.rir_bank_size < 1:
            raise ConfigError(f"augment.rir_bank_size must be at least 1, got {self.rir_bank_size}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> AugmentConfig:
        """Builds a config from a mapping; missing keys keep their defaults, unknown keys are errors.

        Arguments
        ---------
        values : dict[str, Any] | None
            E.g. ``config["augment"]``; ``None`` gives the defaults (no augmentation).

        Returns
        -------
        AugmentConfig
        """
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown augment option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    @property
    def enabled(self) -> bool:
        """Whether any effect can apply."""
        return max(self.noise_prob, self.babble_prob, self.reverb_prob, self.speed_prob) > 0.0


def speed_label(label: int, speed_index: int, num_speakers: int) -> int:
    """Class label of a speed-perturbed crop when each speed counts as a new speaker.

    Speed ``k`` (``speed_index = k``, 1-based into ``AugmentConfig.speeds``; 0 = not perturbed)
    of speaker ``label`` becomes class ``label + k * num_speakers``, so the original speakers keep
    their labels and the classifier needs :func:`num_speed_classes` outputs. Take ``speed_index``
    from :meth:`Augmenter.augment`; for a GE2E batch, pass one ``speed_index`` per speaker group to
    :meth:`Augmenter.augment` so all M crops of a (new) speaker share the speed.

    Arguments
    ---------
    label : int
        Original speaker index in ``[0, num_speakers)``.
    speed_index : int
        0 for no perturbation, ``k >= 1`` for ``speeds[k - 1]``.
    num_speakers : int
        Number of original speakers.

    Returns
    -------
    int
        The class label.

    Example
    -------
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

    Example
    -------
    >>> num_speed_classes(10, AugmentConfig(speed_prob=0.5, speed_as_new_speakers=True))
    30
    """
    if config.speed_as_new_speakers and config.speed_prob > 0:
        return num_speakers * (1 + len(config.speeds))
    return num_speakers


def add_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Adds ``noise`` scaled so that the mixture has exactly ``snr_db``.

    SNR is ``10 log10(P_signal / P_noise)`` with power the mean square over the whole segment.

    Arguments
    ---------
    signal : np.ndarray
        Clean 1-D waveform.
    noise : np.ndarray
        Noise of the same length.
    snr_db : float
        Target SNR in dB.

    Returns
    -------
    np.ndarray
        float32 ``signal + g * noise``. A silent signal (no defined SNR) or silent noise is returned
        unchanged.

    Example
    -------
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

    Arguments
    ---------
    num_samples : int
        Length in samples.
    beta : float
        Spectral exponent: 0 white, 1 pink, 2 brown.
    rng : np.random.Generator
        Random source.
    sample_rate : int
        Sample rate in Hz (for ``min_freq``).
    min_freq : float
        Lowest frequency (Hz) kept.

    Returns
    -------
    np.ndarray
        float32 noise with mean square 1.

    Example
    -------
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


def speed_perturb(wave: np.ndarray, speed: float, sample_rate: int) -> np.ndarray:
    """Plays ``wave`` ``speed`` times faster (duration / speed, pitch * speed), like ``sox speed``.

    The waveform is reinterpreted as sampled at ``sample_rate * speed`` and resampled to
    ``sample_rate`` with soxr, so the result has about ``len(wave) / speed`` samples.

    Arguments
    ---------
    wave : np.ndarray
        1-D float waveform.
    speed : float
        Speed factor (> 1 faster and shorter).
    sample_rate : int
        Sample rate in Hz.

    Returns
    -------
    np.ndarray
        The perturbed float32 waveform (length changed).

    Example
    -------
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

    Arguments
    ---------
    wave : np.ndarray
        1-D waveform (non-empty).
    length : int
        Target length in samples.
    rng : np.random.Generator
        Chooses the crop start.

    Returns
    -------
    np.ndarray
        A waveform of ``length`` samples.
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
    power = float(np.mean(np.square(wave, dtype=np.float64)))
    return wave / np.float32(math.sqrt(power)) if power > 0.0 else wave


class RIRBank:
    """Room impulse responses simulated with pyroomacoustics, cached in an ``.npz`` file.

    Each RIR comes from a random shoebox room (floor 3-10 m per side by default, height 2.5-4 m)
    with absorption set by Sabine's formula for a random RT60 (0.2-0.9 s by default), and random
    source and microphone positions (at least 0.5 m from the walls and 0.3 m from each other). The
    stored response starts at the direct path (sample 0 is the direct sound, located from the
    source-microphone distance; it is not always the peak, since coinciding reflections can sum
    higher), so convolving does not delay speech. It is cut ``max_seconds`` later (by then a
    0.9 s RT60 has decayed by ~65 dB) and normalised to unit energy, so reverberation keeps the
    speech level about constant.

    Simulation takes ~0.05-4 s per RIR on one core (small rooms with long RT60 need many image
    sources), hence the cache. The file is written atomically, so concurrent processes never read
    a half-written cache.

    Arguments
    ---------
    size : int
        Number of RIRs.
    sample_rate : int
        Sample rate in Hz.
    cache : str | os.PathLike | None
        ``.npz`` cache path: read if it exists, else simulated and written. ``None``: no cache.
    seed : int
        Simulation seed.
    room_size : tuple[float, float]
        Range of the floor's side lengths in metres.
    room_height : tuple[float, float]
        Range of the ceiling height in metres.
    rt60 : tuple[float, float]
        Range of the target reverberation time in seconds.
    max_seconds : float
        Length kept after the direct path.

    Raises
    ------
    ConfigError
        If an existing cache was made with other settings (sample rate, size, seed, ranges).

    Example
    -------
    >>> bank = RIRBank(2, 16000, rt60=(0.2, 0.3), max_seconds=0.25)
    >>> rir = bank.sample(np.random.default_rng(0))
    >>> rir.dtype, bool(abs(rir[0]) > 0.25 * np.abs(rir).max())
    (dtype('float32'), True)
    """

    def __init__(self, size: int, sample_rate: int, cache: str | os.PathLike | None = None, seed: int = 0,
                 room_size: tuple[float, float] = (3.0, 10.0), room_height: tuple[float, float] = (2.5, 4.0),
                 rt60: tuple[float, float] = (0.2, 0.9), max_seconds: float = 1.0):
        if size < 1:
            raise ConfigError(f"an RIR bank needs at least one RIR, got size={size}")
        self.sample_rate = int(sample_rate)
        self.settings = {
            "version": _RIR_CACHE_VERSION,
            "size": int(size),
            "sample_rate": self.sample_rate,
            "seed": int(seed),
            "room_size": [float(v) for v in room_size],
            "room_height": [float(v) for v in room_height],
            "rt60": [float(v) for v in rt60],
            "max_seconds": float(max_seconds),
        }
        self.cache = Path(cache) if cache is not None else None
        self.loaded_from_cache = False
        if self.cache is not None and self.cache.is_file():
            self.rirs = self._load(self.cache)
            self.loaded_from_cache = True
        else:
            self.rirs = self._simulate()
            if self.cache is not None:
                self._save(self.cache)

    def __len__(self) -> int:
        return len(self.rirs)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One RIR drawn uniformly (float32, direct path at sample 0, unit energy)."""
        return self.rirs[int(rng.integers(len(self.rirs)))]

    def _simulate(self) -> list[np.ndarray]:
        import pyroomacoustics as pra  # only needed when no cache exists

        s = self.settings
        rng = np.random.default_rng([s["seed"], 0x5249])
        c = float(pra.constants.get("c"))
        # pyroomacoustics places each arrival with a windowed-sinc fractional delay centred this
        # many samples after the true arrival time.
        sinc_delay = int(pra.constants.get("frac_delay_length")) // 2
        keep = max(1, int(round(s["max_seconds"] * self.sample_rate)))
        rirs: list[np.ndarray] = []
        while len(rirs) < s["size"]:
            dims = np.array([rng.uniform(*s["room_size"]), rng.uniform(*s["room_size"]),
                             rng.uniform(*s["room_height"])])
            rt60 = rng.uniform(*s["rt60"])
            try:
                absorption, max_order = pra.inverse_sabine(rt60, dims)
            except ValueError:
                # A large room cannot be made that dry (absorption > 1): draw another room.
                continue
            margin = 0.5
            source = rng.uniform(margin, dims - margin)
            mic = rng.uniform(margin, dims - margin)
            distance = float(np.linalg.norm(source - mic))
            if distance < 0.3:
                continue
            room = pra.ShoeBox(dims, fs=self.sample_rate, materials=pra.Material(absorption),
                               max_order=max_order)
            room.add_source(source)
            room.add_microphone(mic)
            room.compute_rir()
            rir = np.asarray(room.rir[0][0], dtype=np.float64)
            expected = int(round(distance / c * self.sample_rate)) + sinc_delay
            # The direct sound is the strongest arrival near its geometric time; searching a few
            # samples around it absorbs the rounding of the fractional delay.
            lo, hi = max(expected - 3, 0), min(expected + 4, len(rir))
            direct = lo + int(np.argmax(np.abs(rir[lo:hi])))
            rir = rir[direct:direct + keep]
            rir /= np.sqrt(np.sum(rir ** 2))
            rirs.append(rir.astype(np.float32))
        return rirs

    def _save(self, path: Path) -> None:
        lengths = np.array([len(r) for r in self.rirs], dtype=np.int64)
        padded = np.zeros((len(self.rirs), int(lengths.max())), dtype=np.float32)
        for i, rir in enumerate(self.rirs):
            padded[i, :len(rir)] = rir
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, rirs=padded, lengths=lengths, settings=np.array(repr(self.settings)))
        os.replace(tmp, path)

    def _load(self, path: Path) -> list[np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as data:
                padded, lengths, settings = data["rirs"], data["lengths"], str(data["settings"])
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"RIR cache {path} is unreadable ({exc}); delete it to simulate again") from exc
        if settings != repr(self.settings):
            raise ConfigError(
                f"RIR cache {path} was simulated with {settings}, but {self.settings} is asked for; "
                "delete the file or set augment.rir_cache to another path"
            )
        return [padded[i, :n].copy() for i, n in enumerate(lengths)]


class Augmenter:
    """Applies the configured effects to waveform crops, each with its own probability.

    Arguments
    ---------
    config : AugmentConfig
        Which effects, how likely, how strong.
    sample_rate : int
        Sample rate of the crops in Hz.
    babble_source : Callable[[np.random.Generator], np.ndarray] | None
        Returns one other training utterance (float32, any length, at ``sample_rate``); required
        when ``config.babble_prob > 0``.
    rir_bank : RIRBank | None
        A ready bank; by default one is built from ``config`` when ``config.reverb_prob > 0``.

    Example
    -------
    >>> augmenter = Augmenter(AugmentConfig(noise_prob=1.0, snr_low=5.0, snr_high=5.0), 16000)
    >>> wave = (0.1 * np.sin(np.arange(8000) / 3)).astype(np.float32)
    >>> noisy = augmenter(wave, np.random.default_rng(0))
    >>> round(float(10 * np.log10(np.mean(wave ** 2) / np.mean((noisy - wave) ** 2))), 2)
    5.0
    """

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

        Arguments
        ---------
        wave : np.ndarray
            1-D float waveform (not modified).
        rng : np.random.Generator
            Source of every random choice, so a crop's augmentation replays from its generator.
        speed_index : int | None
            Forces the speed (0 none, ``k`` for ``config.speeds[k - 1]``) instead of drawing it,
            e.g. one speed per speaker group when speeds are new speakers.

        Returns
        -------
        tuple[np.ndarray, int]
            The float32 crop, same length as ``wave``, finite, clipped to [-1, 1] only if it
            exceeds it; and the speed index (see :func:`speed_label`).
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
        if out is wave:
            # Never hand back the caller's array (often a view of a cached utterance) to be mutated.
            out = wave.copy()
        if float(np.max(np.abs(out))) > 1.0:
            out = np.clip(out, -1.0, 1.0)
        return np.ascontiguousarray(out, dtype=np.float32), speed_index

    @staticmethod
    def reverberate(wave: np.ndarray, rir: np.ndarray, direct: int | None = None) -> np.ndarray:
        """Convolves with ``rir``, aligned on its direct path so the speech is not delayed.

        Arguments
        ---------
        wave : np.ndarray
            1-D float32 waveform.
        rir : np.ndarray
            Room impulse response.
        direct : int | None
            Index of the direct path in ``rir``. ``None`` takes the peak, right for measured RIRs
            with leading silence. :class:`RIRBank` responses start at their direct path (0): in
            about one simulated room in four, coinciding reflections later sum to a higher peak
            than the direct sound, and aligning on that peak would advance the speech by up to
            ~20 ms.

        Returns
        -------
        np.ndarray
            float32 reverberant waveform of ``len(wave)`` samples.
        """
        rir = np.asarray(rir, dtype=np.float32)
        offset = int(np.argmax(np.abs(rir))) if direct is None else int(direct)
        full = fftconvolve(wave, rir, mode="full")
        return full[offset:offset + len(wave)].astype(np.float32, copy=False)

    def babble(self, length: int, rng: np.random.Generator) -> np.ndarray:
        """Sum of 3-7 (per config) utterances from the babble source, each at equal power.

        Arguments
        ---------
        length : int
            Length in samples.
        rng : np.random.Generator
            Random source (also passed to the babble source).

        Returns
        -------
        np.ndarray
            float32 babble of ``length`` samples.
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

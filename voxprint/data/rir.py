"""Room impulse responses simulated with pyroomacoustics (image source method), cached in an ``.npz``.

Simulating a bank takes seconds to minutes, so it is done once and the cache reused by every run
and data-loader worker; the cache is written atomically (:func:`voxprint.fileio.atomic_write`), so
no process ever reads a half-written file, even after a kill mid-save.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from voxprint.errors import ConfigError
from voxprint.fileio import atomic_write

__all__ = ["RIRBank"]

# Bumped whenever the simulation changes, so an old cache is not mistaken for a current one.
_RIR_CACHE_VERSION = 1


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
    sources), hence the cache.

    Args:
        size: Number of RIRs.
        sample_rate: Sample rate in Hz.
        cache: ``.npz`` cache path: read if it exists, else simulated and written. ``None``: no cache.
        seed: Simulation seed.
        room_size: Range of the floor's side lengths in metres.
        room_height: Range of the ceiling height in metres.
        rt60: Range of the target reverberation time in seconds.
        max_seconds: Length kept after the direct path.

    Raises:
        ConfigError: ``size`` < 1, or an existing cache is unreadable or was made with other settings
            (sample rate, size, seed, ranges).

    Example:
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
        """One RIR drawn uniformly (float32, direct path at sample 0, unit energy).

        Args:
            rng: Random source.

        Returns:
            The RIR (shared with the bank: do not modify it).
        """
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
        # Atomic: concurrent runs may read the cache while this one writes it, and a kill mid-save
        # must leave either no cache or a complete one (a truncated one would fail every later run).
        atomic_write(path, lambda handle: np.savez(handle, rirs=padded, lengths=lengths,
                                                   settings=np.array(repr(self.settings))))

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

"""GE2E batches: N speakers x M utterances, one random crop length per batch.

Every random choice of an epoch is drawn up front from ``(seed, epoch)``, so an epoch replays exactly
after a resume and each distributed rank can take its own share of the same batch list.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxprint.errors import DataError


@dataclass(frozen=True)
class CropRequest:
    """One utterance crop: which utterance, where the crop starts (fraction of the slack), how long,
    and the seed of its augmentation."""

    utterance: int
    start_fraction: float
    num_frames: int
    seed: int = 0


class GE2EBatchSampler:
    """Yields lists of :class:`CropRequest`, speaker-major (speaker 0's M crops first).

    Args:
        speaker_utterances: for each speaker, the indices of its utterances.
        speakers_per_batch: N.
        utterances_per_speaker: M; speakers with fewer utterances are sampled with replacement.
        crop_frames: (low, high) inclusive range of the per-batch crop length in frames.
        batches_per_epoch: default: enough batches to show each utterance about once.
        seed: base seed; epoch e uses ``seed + e``.
        rank, world_size: distributed share: rank r takes batches r, r + W, r + 2W, ...

    Example:
        >>> sampler = GE2EBatchSampler([[0, 1, 2], [3, 4, 5]], 2, 2, (140, 180), batches_per_epoch=1)
        >>> [len(batch) for batch in sampler]
        [4]
    """

    def __init__(self, speaker_utterances: list[list[int]], speakers_per_batch: int, utterances_per_speaker: int,
                 crop_frames: tuple[int, int], batches_per_epoch: int | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.speakers = [list(u) for u in speaker_utterances if len(u) > 0]
        if len(self.speakers) < speakers_per_batch:
            raise DataError(
                f"a GE2E batch needs {speakers_per_batch} speakers but the data has {len(self.speakers)}; "
                "lower data.speakers_per_batch"
            )
        self.n_speakers = speakers_per_batch
        self.m = utterances_per_speaker
        self.crop_frames = (int(crop_frames[0]), int(crop_frames[1]))
        total = sum(len(u) for u in self.speakers)
        per_batch = self.n_speakers * self.m
        self.batches_per_epoch = batches_per_epoch or max(1, -(-total // per_batch))
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_batches(self) -> list[list[CropRequest]]:
        """All batches of the current epoch (every rank's share)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for _ in range(self.batches_per_epoch):
            frames = int(rng.integers(self.crop_frames[0], self.crop_frames[1] + 1))
            speakers = rng.choice(len(self.speakers), size=self.n_speakers, replace=False)
            batch = []
            for spk in speakers:
                utts = self.speakers[spk]
                picks = rng.choice(utts, size=self.m, replace=len(utts) < self.m)
                starts = rng.random(self.m)
                seeds = rng.integers(0, 2**31, size=self.m)
                batch.extend(CropRequest(int(u), float(s), frames, int(k)) for u, s, k in zip(picks, starts, seeds))
            batches.append(batch)
        return batches

    def __iter__(self):
        yield from self.epoch_batches()[self.rank::self.world_size]

    def __len__(self) -> int:
        return len(range(self.rank, self.batches_per_epoch, self.world_size))

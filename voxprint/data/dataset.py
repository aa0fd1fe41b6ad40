"""Waveform crops for training, read from a data folder (optionally cached in memory)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from voxprint.audio import load_audio, remove_silence
from voxprint.data.augment import AugmentConfig, Augmenter, num_speed_classes, speed_label
from voxprint.data.folder import DataFolder
from voxprint.data.sampler import CropRequest


class CropDataset(Dataset):
    """Maps a :class:`CropRequest` to a float32 waveform crop of exactly the requested frames.

    Utterances shorter than the crop are repeated (tiled), as is common in speaker-embedding
    training, rather than zero-padded, so the crop holds only speech statistics.

    Args:
        folder: the data folder.
        sample_rate: target rate.
        samples_for_frames: converts a frame count to the number of samples the front-end needs.
        speakers: the speaker list that defines class indices (default: the folder's), so a
            validation folder labels speakers as the training folder does.
        cache: keep decoded audio in memory (int16) after the first read.
        vad_threshold_db: when not None, energy-based silence removal is applied at load time.
        augment: options of :class:`voxprint.data.augment.AugmentConfig`; empty: no augmentation.
            Each crop's random effects are seeded by its request, so epochs replay exactly.
    """

    def __init__(self, folder: DataFolder, sample_rate: int, samples_for_frames: Callable[[int], int],
                 speakers: list[str] | None = None, cache: bool = True, vad_threshold_db: float | None = None,
                 augment: dict[str, Any] | None = None):
        self.folder = folder
        self.utterances = folder.utterances
        self.speakers = list(speakers) if speakers is not None else folder.speakers
        speaker_index = {spk: i for i, spk in enumerate(self.speakers)}
        self.labels = [speaker_index[folder.utt2spk[u]] for u in self.utterances]
        self.sample_rate = sample_rate
        self.samples_for_frames = samples_for_frames
        self.vad_threshold_db = vad_threshold_db
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        self.augmenter: Augmenter | None = None
        self.augment_config = AugmentConfig.from_dict(augment)
        if self.augment_config.enabled:

            self.augmenter = Augmenter(self.augment_config, sample_rate, self._babble_utterance)

    @property
    def num_classes(self) -> int:
        """Classifier outputs: speakers, times (1 + speeds) when each speed is a new speaker."""
        return num_speed_classes(len(self.speakers), self.augment_config)

    def speaker_utterances(self) -> list[list[int]]:
        groups: list[list[int]] = [[] for _ in self.speakers]
        for index, label in enumerate(self.labels):
            groups[label].append(index)
        return groups

    def waveform(self, index: int) -> np.ndarray:
        if self._cache is not None and index in self._cache:
            return self._cache[index].astype(np.float32) / 32768.0
        wave = load_audio(self.folder.wav[self.utterances[index]], target_rate=self.sample_rate)
        if self.vad_threshold_db is not None:
            wave = remove_silence(wave, self.sample_rate, threshold_db=self.vad_threshold_db)
        if self._cache is not None:
            self._cache[index] = np.round(np.clip(wave, -1.0, 32767 / 32768) * 32768).astype(np.int16)
        return wave

    def _babble_utterance(self, rng: np.random.Generator) -> np.ndarray:
        return self.waveform(int(rng.integers(len(self.utterances))))

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, request: CropRequest) -> tuple[torch.Tensor, int]:
        wave = self.waveform(request.utterance)
        length = self.samples_for_frames(request.num_frames)
        if len(wave) < length:
            wave = np.tile(wave, -(-length // len(wave)))
        start = int(request.start_fraction * (len(wave) - length))
        crop = np.ascontiguousarray(wave[start:start + length])
        label = self.labels[request.utterance]
        if self.augmenter is not None:
            crop, speed_index = self.augmenter.augment(crop, np.random.default_rng(request.seed))
            if self.num_classes > len(self.speakers):
                label = speed_label(label, speed_index, len(self.speakers))
        return torch.from_numpy(crop), label


def collate_crops(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(crop, label)`` items of equal length into one batch (a DataLoader ``collate_fn``).

    Args:
        items: the ``(waveform, speaker label)`` pairs of :meth:`CropDataset.__getitem__`.

    Returns:
        ``(waves, labels)``: float waveforms ``(batch, samples)`` and int64 labels ``(batch,)``.
    """
    waves = torch.stack([wave for wave, _ in items])
    labels = torch.tensor([label for _, label in items], dtype=torch.long)
    return waves, labels

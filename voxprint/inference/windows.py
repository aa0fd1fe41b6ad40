"""The sliding-window embedder: per-window embeddings with their times, and the utterance embedding.

Verification needs one embedding per utterance; diarization and target-speaker detection need one
per window with its start and end time. Both come from :class:`SlidingWindowEmbedder`:

- features of long recordings are computed in chunks of about ``chunk_seconds`` as the windows need
  them (:class:`LazyFeatures`), so they never exist whole (a frame depends only on its own samples,
  so chunking changes nothing);
- windows of ``window_frames`` frames start every ``hop`` frames, the last one aligned to the end so no
  tail is lost (the GE2E paper's 160 frames with 50 % overlap by default);
- at most ``batch_frames`` frames (whole windows, at least one) go through the encoder at once, so
  memory is bounded by the batch, not by the length of the recording nor by the window length (the
  bundled model's 30 s windows and the GE2E LSTM's 1.6 s ones get the same budget);
- every window embedding is L2-normalised (whatever the encoder returns), and the utterance embedding
  is the normalised mean of the window embeddings (GE2E paper, section 3.3).

The embedder works with anything that follows the encoder contract of
:class:`voxprint.models.EmbeddingModel` (``frontend``, ``normalize_features``, ``encode``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from voxprint.windowing import WindowEmbeddings, window_starts

__all__ = ["CPU_PADDED_FRAMES", "PAD_FRACTION", "LazyFeatures", "SlidingWindowEmbedder", "WindowEmbeddings", "window_starts"]

#: Padding allowed in an encoder call that joins windows of different lengths (see
#: :class:`SlidingWindowEmbedder`).
PAD_FRACTION = 0.25
#: The most frames of a padded call on the CPU: a few windows, whose activations stay in cache. On this
#: project's 2-core machine such calls on 2 threads embedded dev recordings 1.1-1.25x faster than one call per
#: recording (docs/benchmarks.md, "Bulk extraction"); calls of 16,384 frames gained less or lost, and on one
#: thread joining windows did not pay (the padding cost what the larger calls saved).
CPU_PADDED_FRAMES = 2048


class LazyFeatures:
    """The feature frames of a long recording, computed a chunk at a time when sliced.

    Windows are requested in order, so each chunk covers the next ``chunk_frames`` frames from the
    first one asked for (or more when one request spans more); a frame depends only on its own
    samples, so the frames are those of the whole recording's features.

    Args:
        model: the embedding model (its ``frontend`` computes the frames).
        samples: the waveform.
        total: the number of frames of the whole waveform.
        chunk_frames: frames computed per front-end call.
    """

    def __init__(self, model: torch.nn.Module, samples: torch.Tensor, total: int, chunk_frames: int):
        self.frontend = model.frontend
        self.samples = samples
        self.total = total
        self.chunk_frames = chunk_frames
        self._first, self._cache = 0, self._compute(0, min(total, chunk_frames))

    def _compute(self, first: int, end: int) -> torch.Tensor:
        begin = first * int(self.frontend.frame_shift)
        return self.frontend(self.samples[begin:begin + self.frontend.num_samples(end - first)].unsqueeze(0))[0]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.total, int(self._cache.shape[-1]))

    def __len__(self) -> int:
        return self.total

    def materialize(self) -> torch.Tensor:
        """All frames in one tensor, filled a chunk at a time (never a second copy of the whole)."""
        whole = torch.empty(self.shape, dtype=self._cache.dtype, device=self._cache.device)
        for first in range(0, self.total, self.chunk_frames):
            chunk = self[first:min(self.total, first + self.chunk_frames)]
            whole[first:first + len(chunk)] = chunk
        return whole

    def __getitem__(self, frames: slice) -> torch.Tensor:
        first, end = frames.start or 0, min(self.total, self.total if frames.stop is None else frames.stop)
        if not (self._first <= first and end <= self._first + len(self._cache)):
            self._first = first
            self._cache = self._compute(first, min(self.total, max(end, first + self.chunk_frames)))
        return self._cache[first - self._first:end - self._first]


class SlidingWindowEmbedder:
    """Embeds waveforms window by window with an :class:`~voxprint.models.EmbeddingModel`.

    Args:
        model: the embedding model (front-end + encoder), in eval mode.
        window_frames: window length in feature frames (samples for raw-waveform models).
        overlap: fraction of a window shared with the next, in [0, 1).
        batch_frames: the most frames one encoder call receives, as whole windows (at least one); this
            bounds memory.
        chunk_seconds: audio per front-end call (bounds memory on long audio); a short last chunk
            joins the one before it, so no call sees less than half a chunk.
        encode: replaces ``model.encode`` (e.g. a frozen TorchScript trace of it) for windows of one length.
        encode_padded: replaces ``model.encode`` for zero-padded windows with their lengths.
        device: where the model runs.
        pad_fraction: windows of different lengths share an encoder call, zero-padded, while padding is at
            most this fraction of it, when the encoder embeds padded windows exactly (``exact_padding``) and
            the calls run on a GPU or on several torch threads (larger calls use them better; on one CPU
            thread they do not pay), on the CPU in calls of at most :data:`CPU_PADDED_FRAMES` frames;
            0 batches only windows of one length.
    """

    def __init__(self, model: torch.nn.Module, window_frames: int, overlap: float, batch_frames: int = 16384,
                 chunk_seconds: float = 60.0, encode: Callable[..., torch.Tensor] | None = None,
                 device: str | torch.device = "cpu", pad_fraction: float = PAD_FRACTION,
                 encode_padded: Callable[..., torch.Tensor] | None = None):
        if window_frames < 1 or not 0 <= overlap < 1 or batch_frames < 1 or chunk_seconds <= 0:
            raise ValueError("window_frames, batch_frames and chunk_seconds must be positive and overlap in [0, 1)")
        if not 0 <= pad_fraction < 1:
            raise ValueError(f"pad_fraction must be in [0, 1), not {pad_fraction}")
        # Only an encoder that embeds padded windows exactly gets windows of different lengths in one call.
        self.pad_fraction = float(pad_fraction) if getattr(model, "exact_padding", False) else 0.0
        self.encode_padded = encode_padded or model.encode
        self.model = model
        self.window_frames = int(window_frames)
        self.overlap = float(overlap)
        self.batch_frames = int(batch_frames)
        self.encode = encode or model.encode
        self.device = torch.device(device)
        frontend = model.frontend
        self.sample_rate = int(frontend.sample_rate)
        self._frame_shift = int(frontend.frame_shift)
        self.chunk_frames = max(1, int(round(chunk_seconds * self.sample_rate / self._frame_shift)))

    @torch.inference_mode()
    def features(self, wave: np.ndarray) -> torch.Tensor | LazyFeatures:
        """Normalised feature frames (F, D) of one waveform.

        Up to 1.5 chunks they are computed at once. Longer inputs whose normalisation is per window
        (``segment``, ``none``) get :class:`LazyFeatures`, computed a chunk at a time as windows ask for
        them, so the features of an hours-long recording never exist whole; with ``sliding``
        normalisation (which needs its neighbours) they are computed chunk by chunk into one tensor.
        """
        frontend = self.model.frontend
        samples = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        total = frontend.num_frames(len(samples))
        if total <= self.chunk_frames * 1.5:  # also the too-short case, which the front-end reports
            return self.model.normalize_features(frontend(samples.to(self.device).unsqueeze(0)))[0]
        lazy = LazyFeatures(self.model, samples.to(self.device), total, self.chunk_frames)
        if self.model.normalize != "sliding":
            return lazy
        return self.model.normalize_features(lazy.materialize().unsqueeze(0))[0]

    def __call__(self, wave: np.ndarray) -> WindowEmbeddings:
        """The window embeddings of one waveform (at the model's sample rate)."""
        return self.embed_many([wave])[0]

    def _batches(self, lengths: Sequence[int], counts: Sequence[int]) -> list[list[tuple[int, int]]]:
        """Windows ``(recording, window)`` grouped into encoder calls of at most :attr:`batch_frames` frames
        (padded frames counted). Without padding a call holds windows of one length (within a recording all
        windows have one length); with it (see ``pad_fraction``), windows sorted by length share a call while
        the shortest is at least ``1 - pad_fraction`` of the longest, so padding stays under that fraction.

        Example:
            >>> embedder = SlidingWindowEmbedder.__new__(SlidingWindowEmbedder)
            >>> embedder.batch_frames, embedder.pad_fraction, embedder.device = 1200, 0.25, torch.device("cuda")
            >>> embedder._batches([300, 280, 200, 300], [1, 1, 1, 2])  # 200 frames: over 25 % padding
            [[(0, 0), (3, 0), (3, 1), (1, 0)], [(2, 0)]]
            >>> embedder.pad_fraction = 0.0
            >>> embedder._batches([300, 280, 200, 300], [1, 1, 1, 2])
            [[(0, 0), (3, 0), (3, 1)], [(1, 0)], [(2, 0)]]
        """
        pad_fraction, limit = self.pad_fraction, self.batch_frames
        if self.device.type == "cpu":
            pad_fraction = pad_fraction if torch.get_num_threads() > 1 else 0.0
            limit = min(limit, CPU_PADDED_FRAMES) if pad_fraction > 0 else limit
        if pad_fraction == 0:
            by_length: dict[int, list[tuple[int, int]]] = {}
            for index, (count, length) in enumerate(zip(counts, lengths)):
                by_length.setdefault(length, []).extend((index, w) for w in range(count))
            batches = []
            for length, members in by_length.items():
                per_call = max(1, self.batch_frames // length)
                batches.extend(members[begin:begin + per_call] for begin in range(0, len(members), per_call))
            return batches
        windows = sorted(((i, w) for i, count in enumerate(counts) for w in range(count)), key=lambda e: -lengths[e[0]])
        batches = []
        longest = 0
        for i, w in windows:
            if not batches or (len(batches[-1]) + 1) * longest > limit or lengths[i] < (1 - pad_fraction) * longest:
                batches.append([])
                longest = lengths[i]
            batches[-1].append((i, w))
        return batches

    def embed_many(self, waves: Sequence[np.ndarray]) -> list[WindowEmbeddings]:
        """Window embeddings of several waveforms; windows share encoder calls (see ``pad_fraction``)."""
        return self.embed_features([self.features(w) for w in waves])

    @torch.inference_mode()
    def embed_features(self, features: Sequence[torch.Tensor | LazyFeatures]) -> list[WindowEmbeddings]:
        """Window embeddings from precomputed :meth:`features` of several recordings."""
        starts = [window_starts(f.shape[0], self.window_frames, self.overlap) for f in features]
        lengths = [min(self.window_frames, f.shape[0]) for f in features]
        outputs = [np.empty((len(s), 0), dtype=np.float32) for s in starts]
        for batch in self._batches(lengths, [len(s) for s in starts]):
            windows = [features[i][starts[i][w]:starts[i][w] + lengths[i]] for i, w in batch]
            sizes = [lengths[i] for i, _ in batch]
            if min(sizes) == max(sizes):
                embs = self.encode(torch.stack(windows))
            else:  # zero-padded to the longest window, with each window's length
                stacked = torch.nn.utils.rnn.pad_sequence(windows, batch_first=True)
                embs = self.encode_padded(stacked, torch.tensor(sizes, device=stacked.device))
            embs = torch.nn.functional.normalize(embs, dim=-1).cpu().numpy()
            for (i, w), row in zip(batch, embs):
                if outputs[i].shape[1] == 0:
                    outputs[i] = np.empty((len(starts[i]), row.shape[0]), dtype=np.float32)
                outputs[i][w] = row
        frontend = self.model.frontend
        results = []
        for output, first_frames, length in zip(outputs, starts, lengths):
            begin = np.asarray(first_frames, dtype=np.float64) * self._frame_shift
            results.append(WindowEmbeddings(output, begin / self.sample_rate,
                                            (begin + frontend.num_samples(length)) / self.sample_rate))
        return results

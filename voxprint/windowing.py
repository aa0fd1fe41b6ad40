"""Where sliding windows start and what they give: one definition for every runtime (PyTorch, ONNX, the
torch-free embedder).

This module imports only numpy, so torch-free code (``voxprint.export.standalone``) can use it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def window_starts(num_frames: int, window: int, overlap: float) -> list[int]:
    """Start frames of the sliding windows; the last window is aligned to the end so no tail is lost.

    Example:
        >>> window_starts(410, 160, 0.5)
        [0, 80, 160, 240, 250]
        >>> window_starts(100, 160, 0.5)
        [0]
    """
    if num_frames <= window:
        return [0]
    hop = max(1, int(round(window * (1.0 - overlap))))
    starts = list(range(0, num_frames - window + 1, hop))
    if starts[-1] != num_frames - window:
        starts.append(num_frames - window)
    return starts


@dataclass(frozen=True)
class WindowEmbeddings:
    """The windows of one recording.

    Attributes:
        embeddings: (W, D) float32, one unit-norm row per window.
        starts: (W,) start time of each window in seconds.
        ends: (W,) end time of each window in seconds (the last sample the window's frames read).
    """

    embeddings: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.embeddings)

    def utterance_embedding(self) -> np.ndarray:
        """The normalised mean of the window embeddings (a unit vector, float32).

        Example:
            >>> w = WindowEmbeddings(np.eye(2, dtype=np.float32), np.zeros(2), np.ones(2))
            >>> w.utterance_embedding().round(4)
            array([0.7071, 0.7071], dtype=float32)
        """
        mean = self.embeddings.mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

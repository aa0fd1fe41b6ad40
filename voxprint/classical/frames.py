"""Frame post-processing of the classical systems: Kaldi's ``add-deltas`` and per-recording mean/variance normalisation."""
from __future__ import annotations

import numpy as np

__all__ = ["add_deltas", "classical_frames", "mean_variance_normalise"]


def _delta(frames: np.ndarray, window: int) -> np.ndarray:
    # d_t = sum_n n (c_{t+n} - c_{t-n}) / (2 sum_n n^2), edges repeated (Kaldi's DeltaFeatures).
    padded = np.pad(frames, ((window, window), (0, 0)), mode="edge")
    count = len(frames)
    total = sum(n * (padded[window + n:window + n + count] - padded[window - n:window - n + count])
                for n in range(1, window + 1))
    return total / (2.0 * sum(n * n for n in range(1, window + 1)))


def add_deltas(frames: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """Frames (T, D) with their first ``order`` time derivatives appended: (T, D * (order + 1)).

    Example:
        >>> ramp = np.arange(6.0)[:, None]
        >>> add_deltas(ramp, order=1)[2:4]  # slope 1 away from the edges
        array([[2., 1.],
               [3., 1.]])
    """
    parts = [np.asarray(frames, dtype=np.float64)]
    for _ in range(order):
        parts.append(_delta(parts[-1], window))
    return np.concatenate(parts, axis=1)


def mean_variance_normalise(frames: np.ndarray, floor: float = 1e-8) -> np.ndarray:
    """Zero mean and unit variance per dimension over one recording (T, D).

    Example:
        >>> out = mean_variance_normalise(np.array([[1.0, 5.0], [3.0, 5.0]]))
        >>> out
        array([[-1.,  0.],
               [ 1.,  0.]])
    """
    frames = np.asarray(frames, dtype=np.float64)
    deviation = np.sqrt(np.maximum(frames.var(axis=0), floor))
    return (frames - frames.mean(axis=0)) / deviation


def classical_frames(cepstra: np.ndarray, deltas: int = 2) -> np.ndarray:
    """The frames GMM-UBM and the i-vector model: cepstra + deltas + double deltas, then per-recording
    mean/variance normalisation (after the energy VAD has removed the silence the model was told to remove)."""
    return mean_variance_normalise(add_deltas(cepstra, order=deltas))

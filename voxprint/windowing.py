"""Where sliding windows start: one definition for every runtime (PyTorch, ONNX, the torch-free embedder).

This module imports nothing heavy, so torch-free code (``voxprint.export.standalone``) can use it.
"""
from __future__ import annotations


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

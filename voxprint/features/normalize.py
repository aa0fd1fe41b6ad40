"""Cepstral mean normalisation of feature sequences.

Subtracting the mean over time removes stationary channel effects (microphone,
room, gain), which otherwise look like speaker traits to an embedding model.
"""
from __future__ import annotations

import torch

__all__ = ["mean_normalize", "sliding_mean_normalize"]


def _check_feats(feats: torch.Tensor, fn: str) -> None:
    if feats.dim() not in (2, 3):
        raise ValueError(
            f"{fn} expects features shaped (frames, dim) or (batch, frames, dim), got {tuple(feats.shape)}."
        )


def mean_normalize(feats: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Subtracts each utterance's mean over time (per-utterance CMN).

    Args:
        feats: Features ``(frames, dim)`` or a padded batch ``(batch, frames, dim)``.
        lengths: Number of valid frames of each utterance in a batch, shape ``(batch,)``
            (absolute frame counts, not relative lengths). Only valid frames enter
            the mean, and padding frames are returned as zeros. ``None`` means all
            frames are valid.

    Returns:
        Normalised features, same shape and dtype as ``feats``.

    Example:
        >>> feats = torch.randn(2, 5, 3)
        >>> out = mean_normalize(feats, torch.tensor([5, 3]))
        >>> bool(out[1, 3:].eq(0).all()), bool(out[1, :3].mean(0).abs().max() < 1e-6)
        (True, True)
    """
    _check_feats(feats, "mean_normalize")
    if lengths is None:
        return feats - feats.mean(dim=-2, keepdim=True)
    if feats.dim() != 3:
        raise ValueError("lengths can only be given with a batch of features shaped (batch, frames, dim).")
    lengths = (lengths if isinstance(lengths, torch.Tensor) else torch.as_tensor(lengths)).to(feats.device).reshape(-1)
    num_frames = feats.shape[-2]
    # The checks read values, which a TorchScript trace would freeze as constants: a trace (the inference
    # encoder's, whose callers pass valid lengths) goes without them.
    if not torch.jit.is_tracing():
        if lengths.numel() != feats.shape[0]:
            raise ValueError(f"got {lengths.numel()} lengths for a batch of {feats.shape[0]} utterances.")
        if bool((lengths < 1).any()) or bool((lengths > num_frames).any()):
            raise ValueError(
                f"lengths must be frame counts between 1 and {num_frames}, got {lengths.tolist()}."
            )
    valid = (torch.arange(num_frames, device=feats.device) < lengths.unsqueeze(1)).unsqueeze(-1)
    valid = valid.to(feats.dtype)
    mean = (feats * valid).sum(dim=-2, keepdim=True) / lengths.to(feats.dtype).view(-1, 1, 1)
    return (feats - mean) * valid


def sliding_mean_normalize(feats: torch.Tensor, window_frames: int = 300) -> torch.Tensor:
    """Subtracts a sliding-window mean, like Kaldi ``apply-cmvn-sliding --center=true --norm-vars=false``.

    Each frame ``t`` is normalised by the mean of a window of ``window_frames``
    frames starting at ``t - window_frames // 2``; near the edges the window is
    shifted to stay inside the utterance, and an utterance shorter than the
    window uses its whole length (so it reduces to :func:`mean_normalize`).

    Args:
        feats: Features ``(frames, dim)`` or ``(batch, frames, dim)``; every utterance
            in a batch is treated as having all ``frames`` frames.
        window_frames: Window length in frames (300 frames = 3 s at a 10 ms shift).

    Returns:
        Normalised features, same shape and dtype as ``feats``.

    Example:
        >>> feats = torch.randn(1000, 40)
        >>> sliding_mean_normalize(feats, 300).shape
        torch.Size([1000, 40])
    """
    _check_feats(feats, "sliding_mean_normalize")
    if window_frames < 1:
        raise ValueError(f"window_frames must be at least 1, got {window_frames}.")
    num_frames = feats.shape[-2]
    if num_frames == 0:
        return feats.clone()
    device = feats.device
    t = torch.arange(num_frames, device=device)
    # Window [start, end) per frame, with Kaldi's edge shifting folded into one clamp.
    starts = (t - window_frames // 2).clamp(0, max(num_frames - window_frames, 0))
    ends = (starts + window_frames).clamp(max=num_frames)
    # Windowed sums as differences of a cumulative sum, accumulated in float64
    # (as Kaldi does) so long utterances do not lose precision to cancellation.
    csum = torch.cumsum(feats.to(torch.float64), dim=-2)
    csum = torch.cat((torch.zeros_like(csum.narrow(-2, 0, 1)), csum), dim=-2)
    window_sum = csum.index_select(-2, ends) - csum.index_select(-2, starts)
    mean = window_sum / (ends - starts).to(torch.float64).unsqueeze(-1)
    return (feats.to(torch.float64) - mean).to(feats.dtype)

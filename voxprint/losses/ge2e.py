"""Generalized end-to-end (GE2E) loss, Wan et al., "Generalized End-to-End Loss for Speaker Verification", 2018.

A batch holds N speakers x M utterances, speaker-major. Each embedding e_ji is scored against every
speaker centroid with a learnable affine cosine ``S_ji,k = w * cos(e_ji, c_k) + b`` (w > 0); the own-speaker
centroid leaves e_ji out (eq. 8), which the paper found stabilises training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from voxprint.registry import LOSSES


def ge2e_similarity(embeddings: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Similarity matrix S of shape (N, M, N) from embeddings of shape (N, M, D).

    Vectorised: the leave-one-out own-speaker centroid is (sum - e_ji) / (M - 1), written into the
    diagonal positions of the all-centroid cosine matrix with a mask instead of a loop over speakers.
    """
    n_speakers, n_utts, _ = embeddings.shape
    if n_utts < 2:
        raise ValueError("GE2E needs at least 2 utterances per speaker (M >= 2)")
    centroids = embeddings.mean(dim=1)  # (N, D)
    loo_centroids = (embeddings.sum(dim=1, keepdim=True) - embeddings) / (n_utts - 1)  # (N, M, D)
    normed = F.normalize(embeddings, dim=-1)
    cos_all = torch.einsum("nmd,kd->nmk", normed, F.normalize(centroids, dim=-1))
    cos_own = (normed * F.normalize(loo_centroids, dim=-1)).sum(dim=-1)  # (N, M)
    own = torch.eye(n_speakers, dtype=torch.bool, device=embeddings.device).unsqueeze(1)  # (N, 1, N)
    cos = torch.where(own, cos_own.unsqueeze(-1), cos_all)
    return weight * cos + bias


class AffineCosineLoss(nn.Module):
    """Shared by GE2E and TE2E: a learnable affine map ``w * cos + b`` with w kept positive.

    The papers constrain w > 0 so that a larger cosine always means "more likely the same speaker".
    """

    needs_labels = False
    variants: tuple[str, ...] = ()

    def __init__(self, variant: str, init_weight: float, init_bias: float, reduction: str):
        super().__init__()
        if variant not in self.variants:
            raise ValueError(f"{type(self).__name__} variant must be one of {self.variants}, not {variant!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
        self.variant = variant
        self.reduction = reduction
        self.weight = nn.Parameter(torch.tensor(float(init_weight)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    def positive_weight(self) -> torch.Tensor:
        return self.weight.clamp(min=1e-6)

    def reduce(self, values: torch.Tensor) -> torch.Tensor:
        return values.sum() if self.reduction == "sum" else values.mean()


@LOSSES.register("ge2e")
class GE2ELoss(AffineCosineLoss):
    """GE2E loss with the paper's softmax (eq. 6) or contrast (eq. 7) variant.

    Args:
        variant: ``"softmax"`` or ``"contrast"``.
        init_weight, init_bias: initial w and b (paper: 10 and -5).
        reduction: ``"mean"`` over the N*M utterances, or ``"sum"`` as written in the paper.

    Example:
        >>> loss = GE2ELoss()
        >>> emb = torch.nn.functional.normalize(torch.randn(4 * 3, 8), dim=-1)
        >>> float(loss(emb, n_speakers=4)) > 0
        True
    """

    variants = ("softmax", "contrast")

    def __init__(self, variant: str = "softmax", init_weight: float = 10.0, init_bias: float = -5.0,
                 reduction: str = "mean"):
        super().__init__(variant, init_weight, init_bias, reduction)

    def forward(self, embeddings: torch.Tensor, n_speakers: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        grouped = embeddings.reshape(n_speakers, -1, embeddings.shape[-1])
        sim = ge2e_similarity(grouped, self.positive_weight(), self.bias)  # (N, M, N)
        n, m, _ = sim.shape
        own = torch.eye(n, dtype=torch.bool, device=sim.device).unsqueeze(1).expand(n, m, n)
        positive = sim[own].reshape(n, m)
        if self.variant == "softmax":
            per_utt = torch.logsumexp(sim, dim=-1) - positive
        else:
            prob = torch.sigmoid(sim)
            hardest_other = prob.masked_fill(own, float("-inf")).amax(dim=-1)
            per_utt = 1.0 - torch.sigmoid(positive) + hardest_other
        return self.reduce(per_utt)

"""Tuple-based end-to-end (TE2E) loss, the baseline of the GE2E paper.

Wan et al., "Generalized End-to-End Loss for Speaker Verification", 2018, section 2.1, restating
Heigold et al., "End-to-End Text-Dependent Speaker Verification", 2016. A tuple is one evaluation
utterance e_j~ of speaker j and an enrollment set of speaker k; with the enrollment centroid c_k
(eq. 1) the tuple is scored ``s = w * cos(e_j~, c_k) + b`` (eq. 2, learnable w > 0 and b) and the
loss is, exactly as eq. 3 writes it,

    L_T(e_j~, c_k) = delta(j, k) * (1 - sigmoid(s)) + (1 - delta(j, k)) * sigmoid(s).

Eq. 3 is linear in the sigmoid, not a cross-entropy: a confidently wrong tuple costs at most 1.
Heigold et al. trained the same score with the negative log-likelihood of logistic regression,
``-log sigmoid(s)`` for positive and ``-log(1 - sigmoid(s))`` for negative tuples; that form is
available as ``variant="logistic"``.

Tuples are cut from an ordinary GE2E batch (N speakers x M utterances, speaker-major), so the
same sampler feeds both losses. Every utterance e_ji is the evaluation utterance of two tuples:

- a positive tuple, enrolled on speaker j's other M - 1 utterances (leaving e_ji out, as GE2E's
  eq. 8 does, so the evaluation utterance is never part of its own enrollment);
- a negative tuple, enrolled on all M utterances of speaker
  ``k = (j + 1 + (i mod (N - 1))) mod N``: the i-th utterance of speaker j takes the i-th speaker
  after j in a fixed rotation that skips j itself.

Positive and negative tuples therefore alternate and are equal in number (N * M each), as in the
paper, and the loss is a deterministic function of the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from voxprint.losses.ge2e import AffineCosineLoss
from voxprint.registry import LOSSES

__all__ = ["TE2ELoss", "te2e_negative_speakers", "te2e_scores"]


def te2e_negative_speakers(n_speakers: int, n_utts: int, device: torch.device | None = None) -> torch.Tensor:
    """Enrollment speaker of each utterance's negative tuple, shape (N, M).

    Utterance i of speaker j is paired with speaker ``(j + 1 + (i mod (N - 1))) mod N``; taking
    the rotation modulo N - 1 keeps it off j, and spreads the negatives evenly over the other
    speakers when M is a multiple of N - 1.

    Args:
        n_speakers: N, at least 2 (a negative tuple needs another speaker).
        n_utts: M, utterances per speaker.
        device: Device of the returned tensor.

    Returns:
        int64 tensor of shape (N, M).

    Example:
        >>> te2e_negative_speakers(3, 4).tolist()
        [[1, 2, 1, 2], [2, 0, 2, 0], [0, 1, 0, 1]]
    """
    if n_speakers < 2:
        raise ValueError("TE2E needs at least 2 speakers per batch (N >= 2) to build negative tuples")
    speaker = torch.arange(n_speakers, device=device).unsqueeze(1)
    rotation = torch.arange(n_utts, device=device).unsqueeze(0) % (n_speakers - 1)
    return (speaker + 1 + rotation) % n_speakers


def te2e_scores(embeddings: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``s = w * cos(e_j~, c_k) + b`` of the 2 * N * M tuples of a batch.

    Args:
        embeddings: Shape (N, M, D), speaker-major.
        weight, bias: Scalars w (should be > 0) and b.

    Returns:
        A tuple ``(scores, positive)``:

        - ``scores``: shape (2 * N * M,): for each utterance in batch order, its positive then its negative
          tuple.
        - ``positive``: bool, same shape: True for positive tuples (alternating True, False, ...).

    Example:
        >>> emb = torch.eye(2).repeat_interleave(2, dim=0).reshape(2, 2, 2)  # 2 speakers, orthogonal
        >>> scores, positive = te2e_scores(emb, torch.tensor(10.0), torch.tensor(-5.0))
        >>> scores.tolist(), positive.tolist()
        ([5.0, -5.0, 5.0, -5.0, 5.0, -5.0, 5.0, -5.0], [True, False, True, False, True, False, True, False])
    """
    n_speakers, n_utts, _ = embeddings.shape
    if n_utts < 2:
        raise ValueError("TE2E needs at least 2 utterances per speaker (M >= 2)")
    totals = embeddings.sum(dim=1, keepdim=True)  # (N, 1, D)
    # Leave-one-out centroids: the evaluation utterance must not enroll its own positive tuple.
    own = (totals - embeddings) / (n_utts - 1)  # (N, M, D)
    other = (totals.squeeze(1) / n_utts)[te2e_negative_speakers(n_speakers, n_utts, embeddings.device)]
    cos_pos = F.cosine_similarity(embeddings, own, dim=-1)  # (N, M)
    cos_neg = F.cosine_similarity(embeddings, other, dim=-1)
    scores = weight * torch.stack((cos_pos, cos_neg), dim=-1).reshape(-1) + bias
    positive = torch.arange(scores.shape[0], device=scores.device) % 2 == 0
    return scores, positive


@LOSSES.register("te2e")
class TE2ELoss(AffineCosineLoss):
    """TE2E loss (GE2E paper eq. 1-3) over the tuples of an N x M batch.

    Args:
        variant: ``"paper"``: eq. 3, ``1 - sigmoid(s)`` for positive and ``sigmoid(s)`` for negative tuples;
            ``"logistic"``: Heigold et al.'s cross-entropy, ``-log sigmoid(s)`` and
            ``-log(1 - sigmoid(s))``.
        init_weight, init_bias: Initial w and b (the GE2E paper uses 10 and -5).
        reduction: ``"mean"`` over the 2 * N * M tuples, or ``"sum"``.

    Example:
        >>> loss = TE2ELoss()
        >>> emb = torch.nn.functional.normalize(torch.randn(4 * 3, 8), dim=-1)
        >>> 0 < loss(emb, n_speakers=4).item() < 1
        True
    """

    variants = ("paper", "logistic")

    def __init__(self, variant: str = "paper", init_weight: float = 10.0, init_bias: float = -5.0,
                 reduction: str = "mean"):
        super().__init__(variant, init_weight, init_bias, reduction)

    def forward(self, embeddings: torch.Tensor, n_speakers: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of a speaker-major batch of shape (N * M, D); ``labels`` is ignored."""
        grouped = embeddings.reshape(n_speakers, -1, embeddings.shape[-1])
        scores, positive = te2e_scores(grouped, self.positive_weight(), self.bias)
        if self.variant == "paper":
            prob = torch.sigmoid(scores)
            per_tuple = torch.where(positive, 1.0 - prob, prob)
        else:
            # softplus(-s) = -log sigmoid(s) without the overflow of exp for large |s|.
            per_tuple = F.softplus(torch.where(positive, -scores, scores))
        return self.reduce(per_tuple)

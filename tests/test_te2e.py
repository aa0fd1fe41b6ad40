"""TE2E loss against a slow, tuple-by-tuple transcription of the GE2E paper's eq. 1-3 (Wan et al. 2018)."""
from __future__ import annotations

import math

import pytest
import torch

from voxprint.losses.te2e import TE2ELoss, te2e_negative_speakers, te2e_scores
from voxprint.registry import LOSSES


def slow_reference(emb: torch.Tensor, w: float, b: float, variant: str = "paper") -> tuple[float, int, int]:
    """Sum of the tuple losses, and the numbers of positive and negative tuples, one tuple at a time."""
    n, m, _ = emb.shape
    total, n_pos, n_neg = 0.0, 0, 0

    def cos(x: torch.Tensor, y: torch.Tensor) -> float:
        return float(torch.dot(x, y) / (x.norm() * y.norm()))

    for j in range(n):
        for i in range(m):
            e = emb[j, i]
            own = sum(emb[j, q] for q in range(m) if q != i) / (m - 1)
            k = (j + 1 + i % (n - 1)) % n  # the documented rotation over the other speakers
            assert k != j
            other = sum(emb[k, q] for q in range(m)) / m  # eq. 1
            for delta, centroid in ((1, own), (0, other)):
                s = w * cos(e, centroid) + b  # eq. 2
                sig = 1 / (1 + math.exp(-s))
                if variant == "paper":  # eq. 3
                    total += delta * (1 - sig) + (1 - delta) * sig
                else:
                    total += -math.log(sig) if delta else -math.log(1 - sig)
                n_pos += delta
                n_neg += 1 - delta
    return total, n_pos, n_neg


@pytest.mark.parametrize("variant", ["paper", "logistic"])
@pytest.mark.parametrize("n,m", [(2, 2), (3, 4), (5, 3), (4, 7)])
def test_loss_matches_slow_reference(variant, n, m):
    torch.manual_seed(100 * n + m)
    emb = torch.randn(n, m, 6, dtype=torch.float64)
    loss = TE2ELoss(variant=variant, init_weight=2.5, init_bias=-0.75, reduction="sum").double()
    expected, n_pos, n_neg = slow_reference(emb, 2.5, -0.75, variant)
    assert n_pos == n_neg == n * m
    assert loss(emb.reshape(n * m, 6), n_speakers=n).item() == pytest.approx(expected, rel=1e-10)
    mean = TE2ELoss(variant=variant, init_weight=2.5, init_bias=-0.75).double()
    assert mean(emb.reshape(n * m, 6), n_speakers=n).item() == pytest.approx(expected / (2 * n * m), rel=1e-10)


@pytest.mark.parametrize("n,m", [(2, 3), (4, 6), (6, 5)])
def test_positive_and_negative_tuples_alternate_and_balance(n, m):
    scores, positive = te2e_scores(torch.randn(n, m, 4), torch.tensor(10.0), torch.tensor(-5.0))
    assert scores.shape == positive.shape == (2 * n * m,)
    assert positive[0::2].all() and not positive[1::2].any()
    assert int(positive.sum()) == int((~positive).sum()) == n * m
    negatives = te2e_negative_speakers(n, m)
    assert not (negatives == torch.arange(n).unsqueeze(1)).any()


def test_rotation_uses_every_other_speaker_equally():
    negatives = te2e_negative_speakers(4, 6)  # M a multiple of N - 1
    for j in range(4):
        counts = torch.bincount(negatives[j], minlength=4).tolist()
        assert counts[j] == 0 and sorted(counts) == [0, 2, 2, 2]


def test_gradients_reach_weight_bias_and_embeddings():
    torch.manual_seed(0)
    emb = torch.randn(12, 5, requires_grad=True)
    loss = TE2ELoss()
    loss(emb, n_speakers=4).backward()
    assert loss.weight.grad is not None and loss.weight.grad.abs() > 0
    assert loss.bias.grad is not None and loss.bias.grad.abs() > 0
    assert emb.grad is not None and emb.grad.abs().sum() > 0 and torch.isfinite(emb.grad).all()


def test_separated_embeddings_give_near_zero_loss():
    n, m = 5, 4
    # Each speaker on its own axis, with a little within-speaker spread.
    torch.manual_seed(1)
    emb = torch.eye(n).repeat_interleave(m, dim=0) + 0.01 * torch.rand(n * m, n)
    default = TE2ELoss()(emb, n_speakers=n).item()
    # With w = 10, b = -5 the floor is sigmoid(-5) ~ 0.0067 per tuple (cos 1 vs cos 0).
    assert default < 0.01
    sharp = TE2ELoss(init_weight=40.0, init_bias=-20.0)
    assert sharp(emb, n_speakers=n).item() < 1e-6
    assert TE2ELoss(variant="logistic", init_weight=40.0, init_bias=-20.0)(emb, n_speakers=n).item() < 1e-6
    # Groups that each mix all the speakers leave nothing to separate: the loss is far from zero.
    mixed = emb.reshape(n, m, n).transpose(0, 1).reshape(n * m, n)
    assert sharp(mixed, n_speakers=m).item() > 0.3


def test_registered_and_validates_options():
    assert LOSSES.get("te2e") is TE2ELoss
    assert TE2ELoss.needs_labels is False
    loss = TE2ELoss()
    assert loss.weight.item() == 10.0 and loss.bias.item() == -5.0
    with pytest.raises(ValueError, match="variant"):
        TE2ELoss(variant="triplet")
    with pytest.raises(ValueError, match="reduction"):
        TE2ELoss(reduction="max")
    with pytest.raises(ValueError, match="N >= 2"):
        loss(torch.randn(4, 3), n_speakers=1)
    with pytest.raises(ValueError, match="M >= 2"):
        loss(torch.randn(4, 3), n_speakers=4)


def test_negative_weight_is_clamped():
    loss = TE2ELoss()
    with torch.no_grad():
        loss.weight.fill_(-3.0)
    # A negative w would reward dissimilarity; the clamp makes every score b instead.
    expected = (1 - torch.sigmoid(torch.tensor(-5.0)) + torch.sigmoid(torch.tensor(-5.0))) / 2
    assert loss(torch.randn(6, 4), n_speakers=3).item() == pytest.approx(float(expected), rel=1e-5)

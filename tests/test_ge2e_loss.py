"""GE2E loss against a slow, loop-by-loop transcription of the paper's equations (Wan et al. 2018, eq. 5-9)."""
import math

import pytest
import torch

from voxprint.losses import GE2ELoss, ge2e_similarity


def reference_loss(emb: torch.Tensor, w: float, b: float, variant: str) -> float:
    """Equations 5-9 computed one utterance and one speaker at a time."""
    n, m, _ = emb.shape
    total = 0.0
    for j in range(n):
        for i in range(m):
            e = emb[j, i]
            sims = []
            for k in range(n):
                if k == j:
                    others = [emb[j, q] for q in range(m) if q != i]
                    centroid = sum(others) / (m - 1)  # eq. 8: centroid without e_ji
                else:
                    centroid = emb[k].mean(dim=0)
                cos = float(torch.dot(e, centroid) / (e.norm() * centroid.norm()))
                sims.append(w * cos + b)  # eq. 5 / 9
            if variant == "softmax":  # eq. 6
                total += -sims[j] + math.log(sum(math.exp(s) for s in sims))
            else:  # eq. 7
                sig = [1 / (1 + math.exp(-s)) for s in sims]
                total += 1 - sig[j] + max(sig[k] for k in range(n) if k != j)
    return total


@pytest.mark.parametrize("variant", ["softmax", "contrast"])
@pytest.mark.parametrize("n,m", [(2, 2), (4, 3), (5, 6)])
def test_loss_matches_paper_equations(variant, n, m):
    torch.manual_seed(n * 10 + m)
    emb = torch.randn(n, m, 7, dtype=torch.float64)
    loss = GE2ELoss(variant=variant, init_weight=3.5, init_bias=-1.25, reduction="sum").double()
    got = loss(emb.reshape(n * m, 7), n_speakers=n).item()
    assert got == pytest.approx(reference_loss(emb, 3.5, -1.25, variant), rel=1e-9)


def test_mean_reduction_is_sum_over_utterances():
    torch.manual_seed(0)
    emb = torch.randn(12, 5)
    summed = GE2ELoss(reduction="sum")(emb, n_speakers=4)
    mean = GE2ELoss(reduction="mean")(emb, n_speakers=4)
    assert float(summed) == pytest.approx(12 * float(mean), rel=1e-5)


def test_initial_parameters_and_weight_kept_positive():
    loss = GE2ELoss()
    assert float(loss.weight) == 10.0 and float(loss.bias) == -5.0
    emb = torch.randn(6, 4)
    with torch.no_grad():
        loss.weight.fill_(-3.0)
    # A negative w would reward dissimilarity; the clamp makes the scores flat instead.
    sim = ge2e_similarity(emb.reshape(3, 2, 4), loss.weight.clamp(min=1e-6), loss.bias)
    assert torch.allclose(sim, torch.full_like(sim, -5.0), atol=1e-5)


def test_own_centroid_excludes_the_utterance():
    # Speaker 0 has two utterances; with e_00 left out its centroid is e_01 exactly.
    emb = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [1.0, -1.0]]])
    sim = ge2e_similarity(emb, torch.tensor(1.0), torch.tensor(0.0))
    assert float(sim[0, 0, 0]) == pytest.approx(0.0, abs=1e-6)  # cos(e00, e01)
    assert float(sim[0, 0, 1]) == pytest.approx(1.0, abs=1e-6)  # cos(e00, mean of speaker 1 = (1, 0))


def test_gradients_reach_embeddings_and_affine_parameters():
    torch.manual_seed(1)
    emb = torch.randn(8, 6, requires_grad=True)
    loss = GE2ELoss(variant="contrast")
    loss(emb, n_speakers=4).backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert loss.weight.grad is not None and loss.bias.grad is not None


def test_needs_two_utterances_per_speaker():
    with pytest.raises(ValueError, match="M >= 2"):
        GE2ELoss()(torch.randn(3, 4), n_speakers=3)


def test_perfect_separation_gives_low_loss_and_chance_gives_ln_n():
    # Orthogonal speakers, identical utterances within a speaker: far below chance.
    emb = torch.eye(4).repeat_interleave(3, dim=0)
    assert float(GE2ELoss(init_weight=10, init_bias=-5)(emb, n_speakers=4)) < 0.01
    same = torch.ones(12, 4)
    assert float(GE2ELoss()(same, n_speakers=4)) == pytest.approx(math.log(4), rel=1e-5)

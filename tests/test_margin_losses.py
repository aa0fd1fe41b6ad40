"""Softmax and angular-margin losses against their formulas, written out one scalar at a time."""
import math

import pytest
import torch
import torch.nn.functional as F

from voxprint.errors import ConfigError
from voxprint.losses import AAMSoftmaxLoss, AMSoftmaxLoss, SoftmaxLoss, SphereFaceLoss
from voxprint.losses.margin import sphereface_psi
from voxprint.registry import LOSSES

# 3 embeddings x 4 classes in 3-D. Row 0 is close to its class; row 1's target weight is at ~107 degrees
# (cos < 0, theta + 0.2 < pi); row 2's target weight is almost opposite (theta + 0.2 > pi).
EMB = [[2.0, 0.5, -0.3], [0.2, -1.5, 0.7], [-1.0, 0.1, 0.05]]
WEIGHT = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.5], [0.3, -0.4, 1.2], [-0.5, 0.5, 0.5]]
BIAS = [0.1, -0.2, 0.3, 0.0]
LABELS = [0, 1, 0]

ALL_LOSSES = [SoftmaxLoss, AMSoftmaxLoss, AAMSoftmaxLoss, SphereFaceLoss]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def cosine(a: list[float], b: list[float]) -> float:
    return dot(a, b) / math.sqrt(dot(a, a) * dot(b, b))


def cross_entropy(logits: list[list[float]], labels: list[int]) -> float:
    return sum(math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(logits, labels)) / len(labels)


def with_weights(loss: torch.nn.Module) -> torch.nn.Module:
    loss = loss.double()
    loss.weight.data = torch.tensor(WEIGHT, dtype=torch.float64)
    if hasattr(loss, "bias"):
        loss.bias.data = torch.tensor(BIAS, dtype=torch.float64)
    return loss


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(EMB, dtype=torch.float64), torch.tensor(LABELS)


def check(loss: torch.nn.Module, expected: list[list[float]]) -> None:
    emb, labels = inputs()
    torch.testing.assert_close(loss.logits(emb, labels), torch.tensor(expected, dtype=torch.float64))
    got = loss(emb, n_speakers=3, labels=labels).item()
    assert got == pytest.approx(cross_entropy(expected, LABELS), rel=1e-10)


def test_fixture_covers_the_angular_regions():
    thetas = [math.acos(cosine(e, WEIGHT[y])) for e, y in zip(EMB, LABELS)]
    assert thetas[0] < math.pi / 2 < thetas[1] < math.pi - 0.2 < thetas[2]


def test_softmax_is_linear_classifier_plus_cross_entropy():
    expected = [[dot(e, w) + b for w, b in zip(WEIGHT, BIAS)] for e in EMB]
    check(with_weights(SoftmaxLoss(3, 4)), expected)


@pytest.mark.parametrize("m,s", [(0.2, 30.0), (0.35, 5.0)])
def test_am_softmax_formula(m, s):
    expected = [[s * (cosine(e, w) - (m if j == y else 0.0)) for j, w in enumerate(WEIGHT)]
                for e, y in zip(EMB, LABELS)]
    check(with_weights(AMSoftmaxLoss(3, 4, margin=m, scale=s)), expected)


def test_am_softmax_without_margin_is_cross_entropy_on_cosine():
    torch.manual_seed(0)
    emb, weight = torch.randn(6, 5), torch.randn(7, 5)
    labels = torch.tensor([0, 3, 6, 2, 2, 5])
    loss = AMSoftmaxLoss(5, 7, margin=0.0, scale=1.0)
    loss.weight.data = weight
    cos = (emb / emb.norm(dim=1, keepdim=True)) @ (weight / weight.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(loss(emb, n_speakers=2, labels=labels), F.cross_entropy(cos, labels))


def aam_target(c: float, m: float, easy: bool) -> float:
    theta = math.acos(c)
    if easy:
        return math.cos(theta + m) if c > 0 else c
    return math.cos(theta + m) if theta + m < math.pi else c - math.sin(m) * m


@pytest.mark.parametrize("easy", [False, True])
def test_aam_softmax_formula(easy):
    m, s = 0.2, 30.0
    expected = [[s * (aam_target(cosine(e, w), m, easy) if j == y else cosine(e, w)) for j, w in enumerate(WEIGHT)]
                for e, y in zip(EMB, LABELS)]
    check(with_weights(AAMSoftmaxLoss(3, 4, margin=m, scale=s, easy_margin=easy)), expected)


def test_aam_easy_margin_differs_from_standard_only_where_cosine_is_negative():
    torch.manual_seed(1)
    emb, labels = torch.randn(64, 6, dtype=torch.float64), torch.randint(0, 5, (64,))
    standard = AAMSoftmaxLoss(6, 5, margin=0.3).double()
    easy = AAMSoftmaxLoss(6, 5, margin=0.3, easy_margin=True).double()
    easy.load_state_dict(standard.state_dict())
    # Random directions in 6-D are rarely near-opposite: make a few targets point away from their class.
    emb[:6] = -standard.weight.detach()[labels[:6]] + 0.05 * emb[:6]
    cos_y = standard.cosine(emb).gather(1, labels[:, None]).squeeze(1)
    assert (cos_y > 0).any() and (cos_y < 0).any() and (cos_y < math.cos(math.pi - 0.3)).any()
    differs = (standard.logits(emb, labels) != easy.logits(emb, labels))
    target = F.one_hot(labels, 5).bool()
    assert not differs[~target].any()
    assert torch.equal(differs[target], cos_y < 0)


def test_aam_standard_target_falls_back_exactly_where_theta_plus_m_exceeds_pi():
    m = 0.3
    loss = AAMSoftmaxLoss(2, 2, margin=m, scale=1.0).double()
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    target = loss.target_logit(torch.cos(theta))
    beyond = theta + m > math.pi + 1e-9
    # atol: sin(theta) is floored at 1e-6 to keep the gradient finite at theta = 0.
    torch.testing.assert_close(target[~beyond], torch.cos(theta[~beyond] + m), rtol=0, atol=1e-6)
    torch.testing.assert_close(target[beyond], torch.cos(theta[beyond]) - m * math.sin(m))
    # The fallback keeps the target logit decreasing in theta (plain cos(theta + m) turns back up).
    assert (target.diff() < 0).all()


def test_aam_margin_ramp_per_epoch():
    loss = AAMSoftmaxLoss(4, 3, margin=0.3, initial_margin=0.1, ramp_start_epoch=2, ramp_end_epoch=6)
    margins = []
    for epoch in range(9):
        loss.set_epoch(epoch)
        margins.append(loss.current_margin)
    assert margins == pytest.approx([0.1, 0.1, 0.1, 0.15, 0.2, 0.25, 0.3, 0.3, 0.3])
    assert AAMSoftmaxLoss(4, 3, margin=0.3).current_margin == 0.3  # no ramp configured: full margin
    assert AAMSoftmaxLoss(4, 3, margin=0.3, ramp_end_epoch=5).current_margin == 0.0


def test_aam_logits_use_the_ramped_margin():
    ramped = with_weights(AAMSoftmaxLoss(3, 4, margin=0.4, ramp_start_epoch=0, ramp_end_epoch=4))
    ramped.set_epoch(1)
    fixed = with_weights(AAMSoftmaxLoss(3, 4, margin=0.1))
    emb, labels = inputs()
    torch.testing.assert_close(ramped.logits(emb, labels), fixed.logits(emb, labels))


def psi_by_definition(theta: float, m: int) -> float:
    k = min(math.floor(m * theta / math.pi), m - 1)
    return (-1) ** k * math.cos(m * theta) - 2 * k


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_sphereface_psi_matches_definition(m):
    theta = [0.0, 0.1, 0.7, 1.2, 1.6, 2.2, 2.9, 3.1]
    got = sphereface_psi(torch.cos(torch.tensor(theta, dtype=torch.float64)), m)
    torch.testing.assert_close(got, torch.tensor([psi_by_definition(t, m) for t in theta], dtype=torch.float64))


def test_sphereface_psi_continuous_and_decreasing_for_m4():
    m, n = 4, 20001
    theta = torch.linspace(0, math.pi, n, dtype=torch.float64)
    psi = sphereface_psi(torch.cos(theta), m)
    steps = psi.diff()
    assert (steps < 1e-12).all()  # monotonically decreasing (flat only at the joins, to rounding)
    assert steps.abs().max() < 1.01 * m * (math.pi / (n - 1))  # |psi'| <= m: no jumps at k pi / m
    assert psi[0].item() == pytest.approx(1.0) and psi[-1].item() == pytest.approx(-(2 * m - 1))


def test_sphereface_psi_is_cosine_for_m1():
    cos = torch.cos(torch.linspace(0, math.pi, 101, dtype=torch.float64))
    torch.testing.assert_close(sphereface_psi(cos, 1), cos)


def sphereface_expected(lam: float, m: int, scale: float | None) -> list[list[float]]:
    rows = []
    for e, y in zip(EMB, LABELS):
        norm = math.sqrt(dot(e, e)) if scale is None else scale
        row = []
        for j, w in enumerate(WEIGHT):
            c = cosine(e, w)
            value = (lam * c + psi_by_definition(math.acos(c), m)) / (1 + lam) if j == y else c
            row.append(norm * value)
        rows.append(row)
    return rows


@pytest.mark.parametrize("m", [2, 4])
def test_sphereface_formula_without_annealing(m):
    check(with_weights(SphereFaceLoss(3, 4, margin=m, lambda_base=0.0, lambda_min=0.0)), sphereface_expected(0.0, m, None))


def test_sphereface_formula_with_lambda_and_fixed_scale():
    loss = with_weights(SphereFaceLoss(3, 4, margin=4, scale=16.0, lambda_base=3.0, gamma=0.5, power=1.0, lambda_min=0.0))
    loss.eval()  # evaluation calls do not advance the schedule
    check(loss, sphereface_expected(3.0, 4, 16.0))


def test_sphereface_lambda_schedule_counts_training_forward_calls():
    loss = SphereFaceLoss(3, 4, lambda_base=100.0, gamma=0.5, power=2.0, lambda_min=4.0)
    emb, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])
    lambdas = []
    for _ in range(4):
        lambdas.append(loss.current_lambda)
        loss(emb, n_speakers=1, labels=labels)
    assert lambdas == pytest.approx([100.0, 100 / 1.5 ** 2, 100 / 2.0 ** 2, 100 / 2.5 ** 2])
    loss.logits(emb, labels)
    loss.eval()
    loss(emb, n_speakers=1, labels=labels)
    assert int(loss.iteration) == 4
    loss.iteration.fill_(1000)
    assert loss.current_lambda == 4.0  # floor


@pytest.mark.parametrize("cls", ALL_LOSSES)
def test_gradients_reach_embeddings_and_weights(cls):
    torch.manual_seed(2)
    loss = cls(6, 4)
    emb = torch.randn(5, 6)
    emb[0] = loss.weight.detach()[1] * 3  # cos = 1 exactly: sqrt / acos must not give NaN gradients
    emb.requires_grad_(True)
    loss(emb, n_speakers=1, labels=torch.tensor([1, 0, 2, 3, 1])).backward()
    for grad in (emb.grad, loss.weight.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("cls,first,second", [(AMSoftmaxLoss, 0.2, 0.4), (AAMSoftmaxLoss, 0.2, 0.5),
                                              (SphereFaceLoss, 2, 4)])
def test_state_dict_loads_across_margins(cls, first, second):
    trained = cls(3, 4, margin=first)
    trained.weight.data.normal_()
    assert [name for name, _ in trained.named_parameters()] == ["weight"]
    finetune = cls(3, 4, margin=second, scale=40.0 if cls is not SphereFaceLoss else None)
    finetune.load_state_dict(trained.state_dict())
    assert finetune.margin == second
    torch.testing.assert_close(finetune.weight, trained.weight)
    emb, labels = inputs()
    emb = emb.float()
    reference = cls(3, 4, margin=second, scale=40.0 if cls is not SphereFaceLoss else None)
    reference.weight.data = trained.weight.data.clone()
    torch.testing.assert_close(finetune.logits(emb, labels), reference.logits(emb, labels))


def test_registry_builds_every_loss_with_config_options():
    for name in ("softmax", "am_softmax", "aam_softmax", "sphereface"):
        assert LOSSES.get(name).needs_labels is True
    loss = LOSSES.build("aam_softmax", embedding_dim=8, num_classes=5, margin=0.3, scale=32.0,
                        ramp_start_epoch=1, ramp_end_epoch=3)
    assert (loss.margin, loss.scale, loss.weight.shape) == (0.3, 32.0, (5, 8))
    with pytest.raises(ConfigError):
        LOSSES.build("am_softmax", embedding_dim=8, num_classes=5, easy_margin=True)


@pytest.mark.parametrize("cls", ALL_LOSSES)
def test_labels_are_required(cls):
    with pytest.raises(ValueError, match="labels"):
        cls(3, 4)(torch.randn(2, 3), n_speakers=1)


@pytest.mark.parametrize("cls", ALL_LOSSES)
def test_half_embeddings_are_computed_in_float32(cls):
    torch.manual_seed(3)
    loss = cls(8, 5).eval()
    emb, labels = torch.randn(4, 8).half(), torch.tensor([0, 1, 4, 2])
    value = loss(emb, n_speakers=1, labels=labels)
    assert value.dtype == torch.float32 and loss.logits(emb, labels).dtype == torch.float32
    torch.testing.assert_close(value, loss(emb.float(), n_speakers=1, labels=labels))


def test_weight_is_xavier_normal():
    torch.manual_seed(4)
    weight = AMSoftmaxLoss(400, 600).weight
    assert weight.std().item() == pytest.approx(math.sqrt(2.0 / (400 + 600)), rel=0.05)
    assert weight.mean().abs().item() < 0.01

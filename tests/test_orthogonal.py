"""Orthogonality regularisers: SO and SRIP values and gradients, lambda schedules, the regulariser's layer lookup."""
import pytest
import torch
from torch import nn

from voxprint.config import load_config
from voxprint.errors import ConfigError
from voxprint.losses.orthogonal import (
    LambdaSchedule,
    OrthogonalRegularizer,
    bansal_milestones,
    gram_minus_identity,
    soft_orthogonality,
    srip,
)
from voxprint.models.lstm_dvector import LSTMDVector
from voxprint.models.tdnn import TDNNXVector
from voxprint.runs import load_torch_file
from voxprint.training import train

SHAPES = {"tall": (7, 4), "wide": (4, 7), "square": (5, 5)}


def _weight(shape: tuple[int, int], seed: int = 0, scale: float = 0.5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=generator, dtype=torch.float64)


def _with_singular_values(values: list[float], rows: int, seed: int = 0) -> torch.Tensor:
    """A (rows, len(values)) matrix with the given singular values and random singular vectors."""
    generator = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, len(values), generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=generator, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ v.T


def _exact_spectral_norm(weight: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(gram_minus_identity(weight), ord=2)


# --- soft orthogonality ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_soft_orthogonality_uses_the_smaller_gram(shape):
    w = _weight(shape)
    out_dim, in_dim = shape
    if out_dim >= in_dim:  # y = W x with out >= in: W^T W (in x in)
        expected = ((w.T @ w - torch.eye(in_dim, dtype=w.dtype)) ** 2).sum()
    else:  # wide: W W^T (out x out)
        expected = ((w @ w.T - torch.eye(out_dim, dtype=w.dtype)) ** 2).sum()
    assert gram_minus_identity(w).shape == (min(shape),) * 2
    assert torch.allclose(soft_orthogonality(w), expected)


@pytest.mark.parametrize("transpose", [False, True], ids=["orthonormal-columns", "orthonormal-rows"])
def test_soft_orthogonality_is_zero_for_orthogonal_matrices(transpose):
    q, _ = torch.linalg.qr(_weight((9, 5)))
    w = q.T if transpose else q
    assert float(soft_orthogonality(w)) < 1e-24
    assert float(soft_orthogonality(2 * w)) == pytest.approx(5 * 3.0**2)  # s = 2: (4 - 1)^2 per dimension


# --- SRIP ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7, 4), (4, 7), (16, 10)])
def test_srip_converges_from_below_to_the_spectral_norm(shape):
    w = _weight(shape, seed=1)
    exact = float(_exact_spectral_norm(w))
    # Same start (same seed) for every count, so the estimates are one power-iteration sequence.
    errors = [exact - float(srip(w, n, generator=torch.Generator().manual_seed(3))) for n in (1, 2, 3, 5, 10, 20, 50)]
    assert all(e >= -1e-12 for e in errors)  # never above the true norm (up to rounding)
    assert all(later <= earlier + 1e-12 for earlier, later in zip(errors, errors[1:]))
    assert errors[0] > 1e-3  # the test means something: one step is not already exact
    assert errors[-1] < 1e-9 * exact


def test_srip_with_two_iterations_is_the_papers_estimator():
    """u = A v0, v = A u, sigma ~ ||v|| / ||u|| (Bansal et al., 2018)."""
    w = _weight((8, 5), seed=2)
    a = gram_minus_identity(w)
    v0 = torch.randn(5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    u = a @ v0
    v = a @ u
    estimate = srip(w, iterations=2, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(estimate, v.norm() / u.norm())


@pytest.mark.parametrize("singular_values", [[0.3, 0.9, 1.2, 1.8], [0.2, 0.9, 1.1, 1.3]],
                         ids=["positive-dominant", "negative-dominant"])
@pytest.mark.parametrize("transpose", [False, True], ids=["tall", "wide"])
def test_srip_gradient_matches_the_exact_spectral_norm_when_converged(singular_values, transpose):
    # Eigenvalues s^2 - 1 of A: dominant 2.24 (or -0.96, where the sign of the eigenvalue matters)
    # with a clear gap, so 200 iterations converge to machine precision.
    base = _with_singular_values(singular_values, rows=6)
    w_est = (base.T if transpose else base).clone().requires_grad_(True)
    w_exact = w_est.detach().clone().requires_grad_(True)
    estimate = srip(w_est, iterations=200, generator=torch.Generator().manual_seed(0))
    exact = _exact_spectral_norm(w_exact)
    estimate.backward()
    exact.backward()
    assert torch.allclose(estimate, exact, atol=1e-10)
    assert torch.allclose(w_est.grad, w_exact.grad, atol=1e-8)


def test_srip_is_zero_with_a_finite_gradient_for_orthogonal_weights():
    q, _ = torch.linalg.qr(_weight((6, 4)))
    q.requires_grad_(True)
    value = srip(q)
    value.backward()
    assert value.item() < 1e-12 and torch.isfinite(q.grad).all()


def test_srip_random_start_follows_the_generator():
    w = _weight((6, 4))
    first = srip(w, generator=torch.Generator().manual_seed(5))
    again = srip(w, generator=torch.Generator().manual_seed(5))
    other = srip(w, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)
    with pytest.raises(ValueError, match="at least 1"):
        srip(w, iterations=0)


# --- lambda schedules ---------------------------------------------------------------------------------

def test_constant_schedule():
    schedule = LambdaSchedule.constant()
    assert [schedule.value_at(e) for e in (0, 1, 50, 10_000)] == [0.1] * 4
    assert LambdaSchedule.constant(0.03).value_at(7) == 0.03


def test_decreasing_schedule_at_the_reference_length():
    schedule = LambdaSchedule.decreasing()
    assert schedule.values == (0.2, 1e-2, 1e-4, 1e-6, 0.0)
    assert schedule.milestones == (20, 40, 60, 80)
    expected = {0: 0.2, 19: 0.2, 20: 1e-2, 39: 1e-2, 40: 1e-4, 59: 1e-4, 60: 1e-6, 79: 1e-6, 80: 0.0, 99: 0.0}
    assert {epoch: schedule.value_at(epoch) for epoch in expected} == expected


@pytest.mark.parametrize("total_epochs, milestones", [(100, (20, 40, 60, 80)), (50, (10, 20, 30, 40))])
def test_decreasing_schedule_is_the_papers(total_epochs, milestones):
    # Zhu and Mak, section 3.3: the LSTM's lambda drops after 20, 40, 60 and 80 of 100 epochs, the
    # TDNN's after 10, 20, 30 and 40 of 50 (Bansal et al.'s 20, 50, 70, 120 of 200 scaled to these
    # lengths, the schedule voxprint used before, gives (10, 25, 35, 60) and (5, 13, 18, 30)).
    assert LambdaSchedule.decreasing(total_epochs=total_epochs).milestones == milestones


def test_the_earlier_bansal_milestones_stay_reproducible():
    # The committed recipes/orthogonal *_dec runs (20 epochs) were trained with these.
    assert bansal_milestones(20) == (2, 5, 7, 12)
    assert [bansal_milestones(t) for t in (200, 30, 10, 2)] == [(20, 50, 70, 120), (3, 8, 11, 18), (1, 3, 4, 6),
                                                                (1, 1, 1, 1)]
    pinned = LambdaSchedule.from_config({"schedule": "decreasing", "milestones": list(bansal_milestones(20))}, 20)
    assert [pinned.value_at(e) for e in (1, 2, 5, 7, 12)] == [0.2, 1e-2, 1e-4, 1e-6, 0.0]


@pytest.mark.parametrize("total_epochs, milestones", [(200, (40, 80, 120, 160)), (30, (6, 12, 18, 24)),
                                                      (20, (4, 8, 12, 16)), (10, (2, 4, 6, 8)), (5, (1, 2, 3, 4)),
                                                      (3, (1, 1, 2, 2)), (2, (1, 1, 1, 1))])
def test_decreasing_schedule_scales_to_the_run_length(total_epochs, milestones):
    schedule = LambdaSchedule.decreasing(total_epochs=total_epochs)
    assert schedule.milestones == milestones
    assert schedule.value_at(0) == 0.2  # on for the first epoch of any run
    assert schedule.value_at(total_epochs - 1) == 0.0  # off by the last


def test_decreasing_schedule_with_explicit_milestones_is_not_scaled():
    schedule = LambdaSchedule.decreasing(values=(0.5, 0.1), milestones=(4,), total_epochs=1000)
    assert [schedule.value_at(e) for e in (0, 3, 4, 500)] == [0.5, 0.5, 0.1, 0.1]


def test_schedule_from_config():
    assert LambdaSchedule.from_config({}, 10) == LambdaSchedule.constant(0.1)
    assert LambdaSchedule.from_config({"schedule": "constant", "value": 0.2}, 10).value_at(9) == 0.2
    assert LambdaSchedule.from_config({"schedule": "decreasing"}, 30) == LambdaSchedule.decreasing(total_epochs=30)
    custom = LambdaSchedule.from_config({"schedule": "decreasing", "values": [1, 0.5, 0], "milestones": [2, 5]}, 30)
    assert (custom.values, custom.milestones) == ((1.0, 0.5, 0.0), (2, 5))


@pytest.mark.parametrize("options, match", [
    ({"schedule": "cosine"}, "constant or decreasing"),
    ({"schedule": "constant", "values": [0.1]}, "is an option of a decreasing schedule"),
    ({"schedule": "decreasing", "value": 0.1}, "is an option of a constant schedule"),
    ({"schedule": "decreasing", "values": [0.1, 0.0], "milestones": [1, 2]}, "one value more"),
    ({"schedule": "decreasing", "values": [0.1, 0.0]}, "default milestones"),
    ({"schedule": "decreasing", "values": [0.1, -1.0], "milestones": [3]}, "non-negative"),
    ({"schedule": "decreasing", "values": [0.3, 0.2, 0.1], "milestones": [5, 2]}, "non-decreasing"),
])
def test_schedule_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        LambdaSchedule.from_config(options, 10)


# --- the regulariser ----------------------------------------------------------------------------------

def _tdnn(embedding_bias: bool = False) -> TDNNXVector:
    torch.manual_seed(0)
    return TDNNXVector(input_dim=8, channels=8, stats_channels=12, segment6_dim=10, embedding_dim=6,
                       embedding_bias=embedding_bias)


def _wrapped(encoder: nn.Module) -> nn.Module:
    """The trainer's layout: step module -> model -> encoder."""
    return nn.ModuleDict({"model": nn.ModuleDict({"encoder": encoder})})


@pytest.mark.parametrize("kind", ["so", "srip"])
def test_regularizer_is_lambda_times_the_penalty_of_the_named_layer(kind):
    wrapped = _wrapped(_tdnn())
    schedule = LambdaSchedule.decreasing(values=(0.2, 0.05), milestones=(3,))
    reg = OrthogonalRegularizer(kind, ["encoder.embedding"], schedule)  # suffix of model.encoder.embedding
    weight = wrapped["model"]["encoder"].embedding.weight
    torch.manual_seed(1)
    value = reg(wrapped, epoch=4)
    torch.manual_seed(1)
    direct = soft_orthogonality(weight) if kind == "so" else srip(weight)
    assert torch.allclose(value, 0.05 * direct)
    assert [name for name, _ in reg.weights(wrapped)] == ["model.encoder.embedding"]
    assert reg.weights(wrapped) == OrthogonalRegularizer(kind, ["model.encoder.embedding"]).weights(wrapped)


@pytest.mark.parametrize("kind", ["so", "srip"])
def test_regularizer_gradient_reaches_only_the_named_layer(kind):
    model = _tdnn()
    OrthogonalRegularizer(kind, ["embedding"])(model, epoch=0).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads.pop("embedding.weight").abs().sum() > 0
    assert all(grad is None for grad in grads.values())


def test_regularizer_sums_over_layers():
    model = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Tanh(), nn.Linear(4, 6, bias=False))
    reg = OrthogonalRegularizer("so", ["0", "2"], LambdaSchedule.constant(1.0))
    expected = soft_orthogonality(model[0].weight) + soft_orthogonality(model[2].weight)
    assert torch.allclose(reg(model, epoch=0), expected)


def test_regularizer_on_lstm_projections():
    encoder = LSTMDVector(input_dim=8, hidden_size=12, proj_size=5, num_layers=3, embedding_dim=4,
                          embedding_bias=False)
    reg = OrthogonalRegularizer("so", ["encoder.lstm", "encoder.embedding"], LambdaSchedule.constant(1.0))
    model = _wrapped(encoder)
    names = [name for name, _ in reg.weights(model)]
    assert names == ["model.encoder.lstm.weight_hr_l0", "model.encoder.lstm.weight_hr_l1",
                     "model.encoder.lstm.weight_hr_l2", "model.encoder.embedding"]
    expected = sum(soft_orthogonality(getattr(encoder.lstm, f"weight_hr_l{k}")) for k in range(3))
    expected = expected + soft_orthogonality(encoder.embedding.weight)
    assert torch.allclose(reg(model, epoch=0), expected)


def test_zero_lambda_skips_the_penalty_but_still_checks_names():
    model = _tdnn()
    off = LambdaSchedule.constant(0.0)
    value = OrthogonalRegularizer("srip", ["embedding"], off)(model, epoch=0)
    assert value.shape == () and float(value) == 0.0
    with pytest.raises(ConfigError, match="not found"):
        OrthogonalRegularizer("srip", ["nope"], off)(model, epoch=0)


def test_missing_layer_names_it_and_lists_the_linear_layers():
    with pytest.raises(ConfigError) as info:
        OrthogonalRegularizer("so", ["encoder.embeding"])(_wrapped(_tdnn()), epoch=0)
    message = str(info.value)
    assert "'encoder.embeding' not found" in message
    assert "model.encoder.segment6" in message and "model.encoder.embedding" in message


def test_layer_with_bias_is_refused():
    with pytest.raises(ConfigError, match="embedding_bias: false"):
        OrthogonalRegularizer("srip", ["encoder.embedding"])(_wrapped(_tdnn(embedding_bias=True)), epoch=0)


def test_non_linear_and_ambiguous_layers_are_refused():
    with pytest.raises(ConfigError, match="is a TDNNLayer, not a linear layer"):
        OrthogonalRegularizer("so", ["frame1"])(_tdnn(), epoch=0)
    twice = nn.ModuleDict({"a": _tdnn(), "b": _tdnn()})
    with pytest.raises(ConfigError, match="ambiguous"):
        OrthogonalRegularizer("so", ["embedding"])(twice, epoch=0)
    lstm_without_projection = nn.ModuleDict({"lstm": nn.LSTM(4, 6)})
    with pytest.raises(ConfigError, match="is a LSTM"):
        OrthogonalRegularizer("so", ["lstm"])(lstm_without_projection, epoch=0)


def test_regularizer_from_config():
    reg = OrthogonalRegularizer.from_config({"kind": "SRIP", "schedule": "decreasing", "iterations": 3}, 30)
    assert (reg.kind, reg.layer_names, reg.iterations) == ("srip", ["encoder.embedding"], 3)
    assert reg.schedule == LambdaSchedule.decreasing(total_epochs=30)
    reg = OrthogonalRegularizer.from_config({"kind": "so", "layer_names": ["encoder.lstm"], "value": 0.5}, 30)
    assert reg.schedule == LambdaSchedule.constant(0.5) and reg.layer_names == ["encoder.lstm"]


@pytest.mark.parametrize("options, match", [
    ({}, "needs a kind"),
    ({"kind": "l2"}, "kind must be one of"),
    ({"kind": "so", "layer_names": "encoder.embedding"}, "non-empty list"),
    ({"kind": "srip", "iterations": 0}, "iterations"),
    ({"kind": "so", "lambda": 0.1}, "unknown key 'lambda' in section 'regularizer'"),
])
def test_regularizer_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        OrthogonalRegularizer.from_config(options, 10)


# --- in training ----------------------------------------------------------------------------------

def test_train_applies_the_regularizer(tiny_train_folder, tmp_path):
    def trained(regularizer: dict, name: str) -> tuple[torch.Tensor, list[dict]]:
        config = load_config(None, {
            "seed": 5,
            "model": {"name": "lstm_dvector", "hidden_size": 24, "proj_size": 12, "num_layers": 1,
                      "embedding_dim": 8, "embedding_bias": False},
            "data": {"train": str(tiny_train_folder), "speakers_per_batch": 4, "utterances_per_speaker": 2,
                     "batches_per_epoch": 2, "valid_fraction": 0.0, "crop_frames": [40, 50]},
            "optim": {"epochs": 1, "lr": 0.05},
            "regularizer": regularizer,
        })
        result = train(config, tmp_path / name, progress=False)
        step = load_torch_file(tmp_path / name / "checkpoint.pt")["step"]
        return step["model.encoder.embedding.weight"], result.history

    plain, _ = trained({}, "plain")
    regularized, history = trained({"kind": "so", "value": 1.0}, "so")
    # Two steps with lambda 1 cut the embedding layer's SO penalty by a fifth or more (5.2 -> 3.9); without
    # the regulariser it barely moves (5.2 -> 5.16).
    assert float(soft_orthogonality(regularized)) < 0.8 * float(soft_orthogonality(plain))
    assert [r["regularizer_lambda"] for r in history] == [1.0]

"""Orthogonality regularisers of linear layers: soft orthogonality (SO) and the spectral restricted
isometry property (SRIP), with their coefficient schedules.

Bansal et al., "Can We Gain More from Orthogonality Regularizations in Training Deep CNNs?" (NeurIPS
2018) define both penalties; Zhu and Mak, "Orthogonality Regularizations for End-to-End Speaker
Verification" (Odyssey 2020), add them to GE2E training of an LSTM and an x-vector TDNN, on the
bias-free layer that produces the speaker embedding, because cosine scoring implicitly assumes the
embedding's dimensions are orthogonal.

For a layer ``y = W x`` with ``W`` of shape (out, in), both penalties use the *smaller* Gram matrix,
``G = W^T W`` (in x in) when out >= in and ``G = W W^T`` (out x out) otherwise: the larger Gram has
rank at most min(out, in) and can never be the identity, so penalising it would fight an
unreachable target. With ``A = G - I``:

- SO: ``||A||_F^2``, zero iff the columns (tall W) or rows (wide W) of W are orthonormal;
- SRIP: ``sigma(A)``, the spectral norm, i.e. the largest |s_i^2 - 1| over the singular values s_i of W,
  estimated by power iteration (two steps in both papers).

These are not training losses (not in :data:`voxprint.registry.LOSSES`): :class:`OrthogonalRegularizer`
adds ``lambda(epoch) * penalty`` to whichever loss trains the model.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from voxprint.config import check_keys
from voxprint.errors import ConfigError

KINDS = ("so", "srip")

# Keys of a ``regularizer:`` config section: the regulariser's own, then those of its schedule kind.
REGULARIZER_OPTIONS: tuple[str, ...] = ("kind", "layer_names", "iterations", "schedule")
SCHEDULE_OPTIONS: dict[str, tuple[str, ...]] = {"constant": ("value",), "decreasing": ("values", "milestones")}

# The decreasing schedule of the speaker-verification paper (Zhu and Mak, 2020, section 3.3): "start
# with lambda = 0.2", reduce it to 1e-2, 1e-4 and 1e-6 "after 20, 40, 60" epochs and set it "to 0 after
# 80 epochs" of the LSTM's 100 (the TDNN's 50 epochs drop at 10, 20, 30 and 40: the same fractions).
# Shorter or longer runs scale the milestones proportionally (see :meth:`LambdaSchedule.decreasing`).
DECREASING_VALUES: tuple[float, ...] = (0.2, 1e-2, 1e-4, 1e-6, 0.0)
REFERENCE_MILESTONES: tuple[int, ...] = (20, 40, 60, 80)
REFERENCE_EPOCHS: int = 100
# The milestones voxprint used before the paper's text was at hand: Bansal et al.'s released code for
# SO and SRIP on CNNs (after epochs 20, 50, 70 and 120 of 200). The committed decreasing-lambda runs of
# recipes/orthogonal were trained with them; ``milestones`` reproduces them for a given run length
# (:func:`bansal_milestones`).
BANSAL_MILESTONES: tuple[int, ...] = (20, 50, 70, 120)
BANSAL_EPOCHS: int = 200


def gram_minus_identity(weight: torch.Tensor) -> torch.Tensor:
    """``A = G - I`` for the smaller Gram matrix ``G`` of ``weight`` (out, in, ...).

    Weights with more than two dimensions (convolutions) are flattened to (out, in * kernel), as in
    Bansal et al.

    Example:
        >>> gram_minus_identity(torch.ones(3, 2)).tolist()  # tall: W^T W is 2 x 2
        [[2.0, 3.0], [3.0, 2.0]]
        >>> gram_minus_identity(torch.ones(2, 3)).shape  # wide: W W^T is 2 x 2
        torch.Size([2, 2])
    """
    w = weight.reshape(weight.shape[0], -1)
    rows, cols = w.shape
    gram = w.T @ w if rows >= cols else w @ w.T
    return gram - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)


def soft_orthogonality(weight: torch.Tensor) -> torch.Tensor:
    """Soft orthogonality ``||G - I||_F^2`` of ``weight`` (out, in), ``G`` its smaller Gram matrix.

    Example:
        >>> float(soft_orthogonality(torch.eye(4, 3)))  # orthonormal columns
        0.0
        >>> float(soft_orthogonality(2 * torch.eye(2)))  # (4 - 1)^2 on each of 2 diagonal entries
        18.0
    """
    return gram_minus_identity(weight).square().sum()


def srip(weight: torch.Tensor, iterations: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """SRIP penalty: the spectral norm ``sigma(G - I)`` of ``weight`` (out, in), by power iteration.

    ``A = G - I`` is symmetric, so its spectral norm is its largest |eigenvalue|. From a random unit
    vector ``v0``, ``iterations`` multiplications by ``A`` give the estimate
    ``||A^n v0|| / ||A^(n-1) v0||`` (n = ``iterations``): with the papers' two steps, ``u = A v0``,
    ``v = A u`` and ``sigma ~ ||v|| / ||u||``, exactly Bansal et al.'s estimator. For symmetric ``A``
    this ratio never exceeds ``sigma(A)`` and grows towards it with ``n``.

    Gradient convention: the first ``n - 1`` steps run without autograd; the result is
    ``||A v||`` for the detached unit vector ``v = A^(n-1) v0 / ||A^(n-1) v0||``, so the gradient flows
    through the last multiplication only, as for the singular vectors of PyTorch's
    ``spectral_norm``. Once the iteration has converged ``v`` is the top eigenvector of ``A`` and the
    gradient equals that of the exact spectral norm, ``sign(lambda) v v^T`` with respect to ``A``;
    backpropagating through the iteration (Bansal et al.'s code) gives the same value but a gradient
    that also chases the random start.

    Args:
        weight: (out, in) weight of a linear layer (more dimensions are flattened to (out, -1)).
        iterations: Multiplications by ``A`` (the papers: 2).
        generator: Source of the random start (a CPU generator works for weights on any device); the global
            RNG when None.

    Example:
        >>> float(srip(torch.eye(5, 3)))  # orthonormal columns: A = 0
        0.0
        >>> w = torch.diag(torch.tensor([2.0, 1.0, 0.5]))  # A = diag(3, 0, -0.75)
        >>> round(float(srip(w, iterations=30, generator=torch.Generator().manual_seed(0))), 4)
        3.0
    """
    if iterations < 1:
        raise ValueError(f"SRIP needs at least 1 power iteration, not {iterations}")
    a = gram_minus_identity(weight)
    with torch.no_grad():
        device = generator.device if generator is not None else a.device
        v = torch.randn(a.shape[0], generator=generator, dtype=a.dtype, device=device).to(a.device)
        v = F.normalize(v, dim=0)
        for _ in range(iterations - 1):
            v = F.normalize(a @ v, dim=0)
    return torch.linalg.vector_norm(a @ v)


def _scaled_milestones(reference: Sequence[int], reference_epochs: int, total_epochs: int) -> tuple[int, ...]:
    """``reference`` milestones of a ``reference_epochs`` run placed at the same fractions of ``total_epochs``."""
    if total_epochs < 1:
        raise ConfigError(f"total_epochs must be at least 1, not {total_epochs}")
    last = max(1, total_epochs - 1)
    # floor(x + 0.5) rounds halves up: Python's round() would send 2.5 to 2 but 3.5 to 4.
    return tuple(min(last, max(1, math.floor(m * total_epochs / reference_epochs + 0.5))) for m in reference)


def bansal_milestones(total_epochs: int) -> tuple[int, ...]:
    """The milestones of voxprint's earlier decreasing schedule (Bansal et al.'s 20, 50, 70, 120 of 200 epochs)
    scaled to ``total_epochs``, for reproducing runs trained before the paper's schedule became the default.

    Example:
        >>> bansal_milestones(20)  # the committed recipes/orthogonal *_dec runs
        (2, 5, 7, 12)
    """
    return _scaled_milestones(BANSAL_MILESTONES, BANSAL_EPOCHS, total_epochs)


@dataclass(frozen=True)
class LambdaSchedule:
    """Piecewise-constant regularisation coefficient: ``values[k]`` from epoch ``milestones[k - 1]`` on.

    Epochs count from 0 like the trainer's loop: ``milestones = (20,)`` keeps ``values[0]`` for epochs
    0 .. 19 (the first 20) and uses ``values[1]`` from epoch 20 on.

    Args:
        values: Coefficients, non-negative, one more than ``milestones``.
        milestones: Non-decreasing epochs at which the next value starts (equal milestones skip a value).

    Example:
        >>> schedule = LambdaSchedule.decreasing(total_epochs=20)
        >>> schedule.milestones
        (4, 8, 12, 16)
        >>> [schedule.value_at(epoch) for epoch in (0, 3, 4, 8, 12, 15, 16, 19)]
        [0.2, 0.2, 0.01, 0.0001, 1e-06, 1e-06, 0.0, 0.0]
        >>> LambdaSchedule.constant().value_at(1000)
        0.1
    """

    values: tuple[float, ...]
    milestones: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        values = tuple(float(v) for v in self.values)
        milestones = tuple(self.milestones)
        if len(values) != len(milestones) + 1:
            raise ConfigError(f"a lambda schedule needs one value more than milestones, got {len(values)} "
                              f"values {list(values)} and {len(milestones)} milestones {list(milestones)}")
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise ConfigError(f"lambda values must be finite and non-negative, got {list(values)}")
        if any(not isinstance(m, int) or isinstance(m, bool) or m < 0 for m in milestones) \
                or list(milestones) != sorted(milestones):
            raise ConfigError(f"lambda milestones must be non-decreasing epochs >= 0, got {list(milestones)}")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "milestones", milestones)

    @classmethod
    def constant(cls, value: float = 0.1) -> LambdaSchedule:
        """The same coefficient every epoch (the paper's constant setting: 0.1)."""
        return cls((value,))

    @classmethod
    def decreasing(cls, values: Sequence[float] = DECREASING_VALUES, milestones: Sequence[int] | None = None,
                   total_epochs: int = REFERENCE_EPOCHS) -> LambdaSchedule:
        """Coefficients that drop at ``milestones`` (default: 0.2, 1e-2, 1e-4, 1e-6, then 0).

        Without ``milestones`` the paper's drops after 20, 40, 60 and 80 of 100 epochs (Zhu and Mak,
        section 3.3) are placed at the same fractions (20 %, 40 %, 60 %, 80 %) of ``total_epochs``,
        rounded, at least 1 and at most ``total_epochs - 1``, so the regulariser is on for the first
        epoch and off for the last (the last 20 % of any run of 5 epochs or more); this needs the
        default four drops, i.e. five ``values``. Given ``milestones`` are absolute epochs.

        Example:
            >>> LambdaSchedule.decreasing().milestones  # the paper's LSTM run
            (20, 40, 60, 80)
            >>> LambdaSchedule.decreasing(total_epochs=50).milestones  # the paper's TDNN run
            (10, 20, 30, 40)
            >>> LambdaSchedule.decreasing(total_epochs=20).milestones
            (4, 8, 12, 16)
        """
        if milestones is None:
            if len(values) != len(REFERENCE_MILESTONES) + 1:
                raise ConfigError(f"the default milestones need {len(REFERENCE_MILESTONES) + 1} lambda values, "
                                  f"got {len(values)}; give milestones too")
            milestones = _scaled_milestones(REFERENCE_MILESTONES, REFERENCE_EPOCHS, total_epochs)
        return cls(tuple(values), tuple(milestones))

    @classmethod
    def from_config(cls, options: Mapping[str, Any], total_epochs: int) -> LambdaSchedule:
        """Build from ``{schedule: constant, value: 0.1}`` or ``{schedule: decreasing[, values, milestones]}``.

        ``schedule`` defaults to "constant"; a decreasing schedule without ``milestones`` is scaled to
        ``total_epochs`` (see :meth:`decreasing`).

        Example:
            >>> LambdaSchedule.from_config({"schedule": "decreasing"}, total_epochs=40).milestones
            (8, 16, 24, 32)
            >>> LambdaSchedule.from_config({"schedule": "constant", "value": 0.05}, total_epochs=40).values
            (0.05,)
        """
        kind = _check_options(options, ("schedule",))
        if kind == "constant":
            return cls.constant(options.get("value", 0.1))
        milestones = options.get("milestones")
        return cls.decreasing(tuple(options.get("values", DECREASING_VALUES)),
                              None if milestones is None else tuple(milestones), total_epochs)

    def value_at(self, epoch: int) -> float:
        """The coefficient during ``epoch`` (counted from 0)."""
        return self.values[bisect.bisect_right(self.milestones, epoch)]


class OrthogonalRegularizer:
    """``lambda(epoch) * sum`` of SO or SRIP penalties over named linear layers of a model.

    Layers are named as in ``module.named_modules()``. A name also matches any module whose full
    name ends with ``"." + name``, when only one does: "encoder.embedding" then finds the embedding
    layer of an :class:`~voxprint.models.EmbeddingModel` whether it is called directly, inside the
    trainer's step module ("model.encoder.embedding") or wrapped in DDP ("module.model....").

    A named :class:`torch.nn.Linear` must be bias-free, as in the paper: the penalty constrains
    ``W`` only, and a bias would shift embeddings off the orthogonal directions it enforces. A
    named :class:`torch.nn.LSTM` with ``proj_size > 0`` stands for its (bias-free) projection
    matrices ``weight_hr_l{k}``, each regularised as its own layer.

    Args:
        kind: "so" (soft orthogonality) or "srip".
        layer_names: Modules to regularise.
        schedule: Coefficient per epoch; constant 0.1 when None.
        iterations: Power iterations of SRIP (ignored by SO).

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3, bias=False))
        >>> reg = OrthogonalRegularizer("so", ["2"], LambdaSchedule.constant(0.1))
        >>> penalty = reg(model, epoch=0)
        >>> bool(torch.isclose(penalty, 0.1 * soft_orthogonality(model[2].weight)))
        True
        >>> OrthogonalRegularizer("so", ["0"])(model, epoch=0)
        Traceback (most recent call last):
        ...
        voxprint.errors.ConfigError: regularizer layer '0' has a bias, but orthogonal regularisation needs a bias-free layer: set `embedding_bias: false` in the model config
    """

    def __init__(self, kind: str, layer_names: Sequence[str], schedule: LambdaSchedule | None = None,
                 iterations: int = 2):
        kind = str(kind).lower()
        if kind not in KINDS:
            raise ConfigError(f"regularizer kind must be one of {list(KINDS)}, not {kind!r}")
        if isinstance(layer_names, str) or not layer_names:
            raise ConfigError(f"regularizer layer_names must be a non-empty list of layer names, not {layer_names!r}")
        if kind == "srip" and (not isinstance(iterations, int) or iterations < 1):
            raise ConfigError(f"regularizer iterations must be an integer >= 1, not {iterations!r}")
        self.kind = kind
        self.layer_names = list(layer_names)
        self.schedule = schedule if schedule is not None else LambdaSchedule.constant()
        self.iterations = iterations

    @classmethod
    def from_config(cls, options: Mapping[str, Any], total_epochs: int) -> OrthogonalRegularizer:
        """Build from a config section: ``kind``, ``layer_names`` (default ``[encoder.embedding]``),
        ``iterations`` (default 2) and the :meth:`LambdaSchedule.from_config` keys.

        Example:
            >>> reg = OrthogonalRegularizer.from_config({"kind": "srip", "schedule": "decreasing"}, total_epochs=10)
            >>> reg.kind, reg.layer_names, reg.schedule.milestones
            ('srip', ['encoder.embedding'], (2, 4, 6, 8))
        """
        _check_options(options, REGULARIZER_OPTIONS)
        options = dict(options)
        if "kind" not in options:
            raise ConfigError(f"regularizer needs a kind ({' or '.join(KINDS)})")
        kind = options.pop("kind")
        layer_names = options.pop("layer_names", ["encoder.embedding"])
        iterations = options.pop("iterations", 2)
        return cls(kind, layer_names, LambdaSchedule.from_config(options, total_epochs), iterations)

    def weights(self, module: nn.Module) -> list[tuple[str, torch.Tensor]]:
        """The regularised weight matrices of ``module`` by full name.

        Raises:
            ConfigError: A name matches no module (or several), names a module that is not a linear layer or a
                projected LSTM, or names a linear layer with a bias.
        """
        modules = dict(module.named_modules())
        found: list[tuple[str, torch.Tensor]] = []
        for name in self.layer_names:
            full_name, layer = self._find(modules, name)
            if isinstance(layer, nn.Linear):
                if layer.bias is not None:
                    raise ConfigError(f"regularizer layer {name!r} has a bias, but orthogonal regularisation "
                                      "needs a bias-free layer: set `embedding_bias: false` in the model config")
                found.append((full_name, layer.weight))
            elif isinstance(layer, nn.LSTM) and layer.proj_size > 0:
                found.extend((f"{full_name}.{param_name}", param) for param_name, param in layer.named_parameters()
                             if param_name.startswith("weight_hr_l"))
            else:
                raise ConfigError(f"regularizer layer {name!r} is a {type(layer).__name__}, not a linear layer "
                                  f"(or an LSTM with projections); linear layers: {_linear_names(modules)}")
        return found

    def penalty(self, module: nn.Module) -> torch.Tensor:
        """The unweighted sum of the penalties of the named layers."""
        weights = self.weights(module)
        if self.kind == "so":
            terms = [soft_orthogonality(w) for _, w in weights]
        else:
            terms = [srip(w, self.iterations) for _, w in weights]
        return torch.stack(terms).sum()

    def __call__(self, module: nn.Module, epoch: int) -> torch.Tensor:
        """``lambda(epoch) * penalty(module)``, a scalar to add to the training loss."""
        lam = self.schedule.value_at(epoch)
        if lam == 0.0:
            # Names are still checked, so a bad config fails at once whatever the schedule; the
            # penalty itself would only add a zero gradient.
            first = self.weights(module)[0][1]
            return first.new_zeros(())
        return lam * self.penalty(module)

    def __repr__(self) -> str:
        return (f"OrthogonalRegularizer(kind={self.kind!r}, layer_names={self.layer_names!r}, "
                f"schedule={self.schedule!r}, iterations={self.iterations})")

    @staticmethod
    def _find(modules: dict[str, nn.Module], name: str) -> tuple[str, nn.Module]:
        if name in modules and name:
            return name, modules[name]
        matches = [full for full in modules if full.endswith("." + name)]
        if len(matches) == 1:
            return matches[0], modules[matches[0]]
        if matches:
            raise ConfigError(f"regularizer layer {name!r} is ambiguous: it matches {matches}; give the full name")
        raise ConfigError(f"regularizer layer {name!r} not found in the model; linear layers: {_linear_names(modules)}")


def _check_options(options: Mapping[str, Any], own: Sequence[str]) -> str:
    """Reject keys of a regularizer section other than ``own`` and its schedule kind's; return that kind."""
    kind = options.get("schedule", "constant")
    if kind not in SCHEDULE_OPTIONS:
        raise ConfigError(f"regularizer schedule must be constant or decreasing, not {kind!r}")
    # A key of the other schedule kind is no typo: say which schedule takes it.
    reasons = {key: f"is an option of a {other} schedule, but regularizer.schedule is {kind!r}"
               for other, keys in SCHEDULE_OPTIONS.items() if other != kind for key in keys}
    check_keys(options, tuple(own) + SCHEDULE_OPTIONS[kind], "regularizer", reasons)
    return kind


def _linear_names(modules: dict[str, nn.Module]) -> str:
    names = [name for name, layer in modules.items()
             if isinstance(layer, nn.Linear) or (isinstance(layer, nn.LSTM) and layer.proj_size > 0)]
    return ", ".join(names) or "none"

"""Classification (speaker-identity) losses: softmax and the angular-margin softmax family.

The encoder is trained as a classifier over the K training speakers; at test time the classifier is
dropped and the embedding is scored by cosine. The margin variants make that cosine the quantity being
trained, and push each embedding at least a margin closer (in angle) to its own speaker's weight vector
than a plain softmax would:

- ``softmax``: ``W x + b`` on the raw embedding, then cross-entropy.
- ``am_softmax`` (CosFace / additive margin; Wang et al., "Additive Margin Softmax for Face Verification",
  2018): target logit ``s * (cos(theta_y) - m)``, others ``s * cos(theta_j)``.
- ``aam_softmax`` (ArcFace / additive angular margin; Deng et al., "ArcFace", 2019): target logit
  ``s * cos(theta_y + m)``, others ``s * cos(theta_j)``, with optional linear margin ramp-up over epochs.
- ``sphereface`` (A-softmax; Liu et al., "SphereFace", 2017): target logit ``||x|| * psi(theta_y)`` with the
  multiplicative angular margin ``psi(theta) = (-1)^k cos(m theta) - 2k``, annealed from plain softmax.

``theta_j`` is the angle between the embedding and the j-th row of the classifier weight. Every loss is
called as ``loss(embeddings, n_speakers=N, labels=labels)`` (``n_speakers`` is ignored) and computes in at
least float32, also under autocast. Margins and scales are plain Python numbers, never parameters or
state, so a state_dict trained with one margin loads into the same class built with another (large-margin
fine-tuning); the classifier weight (and the softmax bias) are the only parameters.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from voxprint.registry import LOSSES


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or float64 when an input already is: half precision cannot resolve cosines near 1 (see forward)."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _require_labels(labels: torch.Tensor | None, name: str) -> torch.Tensor:
    if labels is None:
        raise ValueError(f"the {name} loss classifies speakers: call it with labels=")
    return labels.long()


def _target_mask(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Boolean (B, K) mask, True at each row's target class."""
    return F.one_hot(labels, num_classes).bool()


class _ClassifierLoss(nn.Module):
    """Shared machinery: a (K, E) classifier weight, Xavier-normal, one row per training speaker.

    Subclasses implement :meth:`logits`; ``forward`` is cross-entropy on them.
    """

    needs_labels = True
    name = "cosine"

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__()
        if embedding_dim < 1 or num_classes < 2:
            raise ValueError(f"{self.name} needs embedding_dim >= 1 and num_classes >= 2, "
                             f"got {embedding_dim} and {num_classes}")
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_normal_(self.weight)

    def _inputs(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = _compute_dtype(embeddings, self.weight)
        return embeddings.to(dtype), self.weight.to(dtype)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """cos(theta_j) of shape (B, K) between each embedding and each class weight row."""
        x, w = self._inputs(embeddings)
        return F.linear(F.normalize(x, dim=-1), F.normalize(w, dim=-1))

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, n_speakers: int | None = None,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = _require_labels(labels, self.name)
        # Autocast would run the matmul in half precision; the margins act on cosines near 1, where half
        # precision has a resolution of ~5e-4, comparable to the gradient signal of the margin.
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return F.cross_entropy(self.logits(embeddings, labels), labels)


@LOSSES.register("softmax")
class SoftmaxLoss(_ClassifierLoss):
    """Plain softmax cross-entropy: a linear classifier (weight + bias) on the raw embedding.

    Args:
        embedding_dim: size E of the embedding.
        num_classes: number K of training speakers.

    Example:
        >>> loss = SoftmaxLoss(embedding_dim=8, num_classes=5)
        >>> emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
        >>> loss.logits(emb).shape
        torch.Size([6, 5])
        >>> loss(emb, n_speakers=3, labels=labels).item() > 0
        True
    """

    name = "softmax"

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__(embedding_dim, num_classes)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``W x + b`` of shape (B, K); ``labels`` is accepted for a uniform interface and ignored."""
        x, w = self._inputs(embeddings)
        return F.linear(x, w, self.bias.to(w.dtype))


@LOSSES.register("am_softmax")
class AMSoftmaxLoss(_ClassifierLoss):
    """Additive margin softmax (CosFace): ``s * (cos(theta_y) - m)`` for the target class.

    Weights and embeddings are L2-normalised, so every logit is a scaled cosine; with ``margin=0`` and
    ``scale=1`` this is softmax cross-entropy on the cosines.

    Args:
        embedding_dim: size E of the embedding.
        num_classes: number K of training speakers.
        margin: additive cosine margin m (>= 0).
        scale: logit scale s (> 0); cosines live in [-1, 1], too narrow a range for softmax without it.

    Example:
        >>> loss = AMSoftmaxLoss(embedding_dim=8, num_classes=5, margin=0.2, scale=30.0)
        >>> emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
        >>> plain = 30.0 * loss.cosine(emb)
        >>> torch.allclose(plain - loss.logits(emb, labels), 6.0 * torch.nn.functional.one_hot(labels, 5))
        True
        >>> loss(emb, n_speakers=3, labels=labels).item() > 0
        True
    """

    name = "am_softmax"

    def __init__(self, embedding_dim: int, num_classes: int, margin: float = 0.2, scale: float = 30.0):
        super().__init__(embedding_dim, num_classes)
        if margin < 0 or scale <= 0:
            raise ValueError(f"am_softmax needs margin >= 0 and scale > 0, got {margin} and {scale}")
        self.margin = float(margin)
        self.scale = float(scale)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Margin-adjusted logits (B, K); without labels, the plain scaled cosines (no margin)."""
        cos = self.cosine(embeddings)
        if labels is None:
            return self.scale * cos
        target = _target_mask(labels.long(), self.num_classes)
        return self.scale * (cos - self.margin * target.to(cos.dtype))

    def extra_repr(self) -> str:
        return f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, margin={self.margin}, scale={self.scale}"


@LOSSES.register("aam_softmax")
class AAMSoftmaxLoss(_ClassifierLoss):
    """Additive angular margin softmax (ArcFace): ``s * cos(theta_y + m)`` for the target class.

    ``cos(theta + m)`` stops decreasing once ``theta + m > pi``, which would reward pushing a hopeless
    embedding further away. Standard mode therefore uses ``cos(theta) - m * sin(m)`` wherever
    ``cos(theta) <= cos(pi - m)``, which keeps the target logit monotonically decreasing in theta
    (note ``sin(pi - m) = sin(m)``). ``easy_margin`` instead applies the margin only where
    ``cos(theta) > 0`` and leaves the target cosine unchanged elsewhere.

    The margin can be ramped up linearly, which helps a freshly initialised encoder that cannot yet meet
    the full margin: the effective margin is ``initial_margin`` up to epoch ``ramp_start_epoch``, ``margin``
    from ``ramp_end_epoch`` on, and linear in between. The trainer calls :meth:`set_epoch` at the start of
    every epoch (0-based); :attr:`current_margin` holds the value in use. It is not saved in the
    state_dict (it is a function of the epoch), so a loss built for evaluation after loading weights
    uses the epoch-0 margin until :meth:`set_epoch` is called. With ``ramp_end_epoch <= ramp_start_epoch``
    (the default) there is no ramp and the full margin is used from the start.

    Args:
        embedding_dim: size E of the embedding.
        num_classes: number K of training speakers.
        margin: final additive angle margin m in radians, in [0, pi / 2).
        scale: logit scale s (> 0).
        easy_margin: apply the margin only where cos(theta) > 0.
        initial_margin: margin before the ramp starts.
        ramp_start_epoch, ramp_end_epoch: the epochs between which the margin grows linearly.

    Example:
        >>> loss = AAMSoftmaxLoss(embedding_dim=8, num_classes=5, margin=0.2, scale=30.0,
        ...                       ramp_start_epoch=0, ramp_end_epoch=4)
        >>> [(loss.set_epoch(e), round(loss.current_margin, 3))[1] for e in range(6)]
        [0.0, 0.05, 0.1, 0.15, 0.2, 0.2]
        >>> emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
        >>> loss(emb, n_speakers=3, labels=labels).item() > 0
        True
    """

    name = "aam_softmax"

    def __init__(self, embedding_dim: int, num_classes: int, margin: float = 0.2, scale: float = 30.0,
                 easy_margin: bool = False, initial_margin: float = 0.0, ramp_start_epoch: int = 0,
                 ramp_end_epoch: int = 0):
        super().__init__(embedding_dim, num_classes)
        for label, value in (("margin", margin), ("initial_margin", initial_margin)):
            if not 0 <= value < math.pi / 2:
                raise ValueError(f"aam_softmax {label} must be in [0, pi/2) radians, got {value}")
        if scale <= 0:
            raise ValueError(f"aam_softmax needs scale > 0, got {scale}")
        if ramp_start_epoch < 0 or ramp_end_epoch < 0:
            raise ValueError("aam_softmax ramp epochs must be >= 0")
        self.margin = float(margin)
        self.scale = float(scale)
        self.easy_margin = bool(easy_margin)
        self.initial_margin = float(initial_margin)
        self.ramp_start_epoch = int(ramp_start_epoch)
        self.ramp_end_epoch = int(ramp_end_epoch)
        self.current_margin = self.margin_at(0)

    def margin_at(self, epoch: int) -> float:
        """The effective margin during (0-based) ``epoch``."""
        if self.ramp_end_epoch <= self.ramp_start_epoch or epoch >= self.ramp_end_epoch:
            return self.margin
        if epoch <= self.ramp_start_epoch:
            return self.initial_margin
        progress = (epoch - self.ramp_start_epoch) / (self.ramp_end_epoch - self.ramp_start_epoch)
        return self.initial_margin + progress * (self.margin - self.initial_margin)

    def set_epoch(self, epoch: int) -> None:
        """Move the effective margin to its value for ``epoch``."""
        self.current_margin = self.margin_at(epoch)

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        """cos(theta + m) with the easy-margin / monotonic fallback, before scaling (same shape as ``cos``)."""
        m = self.current_margin
        # sqrt'(0) is infinite: keep 1 - cos^2 away from zero so |cos| = 1 does not produce NaN gradients.
        sine = torch.sqrt((1.0 - cos * cos).clamp(min=1e-12))
        phi = cos * math.cos(m) - sine * math.sin(m)
        if self.easy_margin:
            return torch.where(cos > 0, phi, cos)
        return torch.where(cos > math.cos(math.pi - m), phi, cos - math.sin(math.pi - m) * m)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Margin-adjusted logits (B, K); without labels, the plain scaled cosines (no margin)."""
        cos = self.cosine(embeddings)
        if labels is None:
            return self.scale * cos
        target = _target_mask(labels.long(), self.num_classes)
        return self.scale * torch.where(target, self.target_logit(cos), cos)

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, margin={self.margin}, "
                f"scale={self.scale}, easy_margin={self.easy_margin}, current_margin={self.current_margin}")


def chebyshev_cos_multiple(cos: torch.Tensor, m: int) -> torch.Tensor:
    """cos(m * theta) from cos(theta) by the Chebyshev recurrence T_{n+1} = 2c T_n - T_{n-1}.

    A polynomial in cos(theta) has finite gradients everywhere, unlike going through acos(theta),
    whose slope is infinite at cos = +-1 (exactly where well-trained targets sit).

    Example:
        >>> theta = torch.tensor([0.0, 0.3, 1.0, 3.0])
        >>> torch.allclose(chebyshev_cos_multiple(torch.cos(theta), 4), torch.cos(4 * theta), atol=1e-6)
        True
    """
    previous, current = torch.ones_like(cos), cos
    if m == 0:
        return previous
    for _ in range(m - 1):
        previous, current = current, 2 * cos * current - previous
    return current


def sphereface_psi(cos: torch.Tensor, m: int) -> torch.Tensor:
    """psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi / m, (k + 1) pi / m], k = 0 .. m-1.

    The monotonically decreasing extension of cos(m theta) to [0, pi]; it equals cos(theta) for m = 1.
    ``k`` is piecewise constant, so it is computed without gradient.

    Example:
        >>> cos = torch.cos(torch.tensor([0.0, math.pi / 4, math.pi / 2, math.pi]))
        >>> [round(v, 4) for v in sphereface_psi(cos, 4).tolist()]
        [1.0, -1.0, -3.0, -7.0]
    """
    with torch.no_grad():
        theta = torch.acos(cos.clamp(-1.0, 1.0))
        # theta = pi would give k = m; it belongs to the last interval.
        k = torch.floor(m * theta / math.pi).clamp(max=m - 1)
        sign = 1.0 - 2.0 * torch.remainder(k, 2)
    return sign * chebyshev_cos_multiple(cos, m) - 2.0 * k


@LOSSES.register("sphereface")
class SphereFaceLoss(_ClassifierLoss):
    """A-softmax (SphereFace): target logit ``||x|| psi(theta_y)``, others ``||x|| cos(theta_j)``.

    Classifier weights are normalised and there is no bias; the embedding is not normalised, its norm
    scales every logit. ``psi`` (:func:`sphereface_psi`) multiplies the target angle by the integer
    margin m, made monotonic over [0, pi].

    A-softmax with m = 4 does not converge from scratch, so the paper anneals from plain softmax: the
    target logit is ``(lambda ||x|| cos(theta) + ||x|| psi(theta)) / (1 + lambda)`` with
    ``lambda = max(lambda_min, lambda_base * (1 + gamma * iteration) ** -power)``. ``iteration`` counts
    forward calls in training mode (a buffer, so an exact resume keeps the schedule); :meth:`logits` and
    evaluation-mode calls do not advance it. The defaults follow the authors' released configuration
    (base 1000, gamma 0.12, power 1, lambda_min 5). ``lambda_base=0, lambda_min=0`` gives pure A-softmax.

    Args:
        embedding_dim: size E of the embedding.
        num_classes: number K of training speakers.
        margin: integer angular multiplier m >= 1 (1 is plain normalised-weight softmax).
        scale: ``None`` (the paper) scales logits by ``||x||``; a number normalises the embedding and
            scales by that constant instead, for unit-norm encoders (LSTM d-vector) where ``||x|| = 1``.
        lambda_base, gamma, power, lambda_min: the annealing schedule above.

    Example:
        >>> loss = SphereFaceLoss(embedding_dim=8, num_classes=5, margin=4)
        >>> emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
        >>> loss.current_lambda
        1000.0
        >>> loss(emb, n_speakers=3, labels=labels).item() > 0
        True
        >>> int(loss.iteration)
        1
    """

    name = "sphereface"

    def __init__(self, embedding_dim: int, num_classes: int, margin: int = 4, scale: float | None = None,
                 lambda_base: float = 1000.0, gamma: float = 0.12, power: float = 1.0, lambda_min: float = 5.0):
        super().__init__(embedding_dim, num_classes)
        if float(margin) != int(margin) or int(margin) < 1:
            raise ValueError(f"sphereface margin must be an integer >= 1, got {margin}")
        if scale is not None and scale <= 0:
            raise ValueError(f"sphereface scale must be > 0 or None, got {scale}")
        if lambda_base < 0 or lambda_min < 0 or gamma < 0 or power < 0:
            raise ValueError("sphereface annealing options must be >= 0")
        self.margin = int(margin)
        self.scale = None if scale is None else float(scale)
        self.lambda_base = float(lambda_base)
        self.gamma = float(gamma)
        self.power = float(power)
        self.lambda_min = float(lambda_min)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    @property
    def current_lambda(self) -> float:
        """The annealing weight of plain cos(theta) in the target logit at the current iteration."""
        annealed = self.lambda_base * (1.0 + self.gamma * int(self.iteration)) ** -self.power
        return max(self.lambda_min, annealed)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Margin-adjusted logits (B, K) at the current lambda; without labels, ``||x|| cos(theta_j)``."""
        x, _ = self._inputs(embeddings)
        cos = self.cosine(embeddings)
        scale = x.norm(dim=-1, keepdim=True) if self.scale is None else self.scale
        if labels is None:
            return scale * cos
        lam = self.current_lambda
        target_value = (lam * cos + sphereface_psi(cos, self.margin)) / (1.0 + lam)
        target = _target_mask(labels.long(), self.num_classes)
        return scale * torch.where(target, target_value, cos)

    def forward(self, embeddings: torch.Tensor, n_speakers: int | None = None,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        loss = super().forward(embeddings, n_speakers=n_speakers, labels=labels)
        if self.training:
            self.iteration += 1
        return loss

    def extra_repr(self) -> str:
        return (f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, margin={self.margin}, "
                f"scale={self.scale}, lambda={self.current_lambda:.4g}")

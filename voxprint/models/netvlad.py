"""NetVLAD pooling and the LSTM-NetVLAD speaker embedder (Kaseva & Kurimo, SphereDiar).

The embedder reads per-utterance normalised MFCCs with three bidirectional LSTM layers whose outputs
are all concatenated (skip connections), aggregates the frames with NetVLAD (or a temporal mean),
and maps the result through batch-normalised fully connected layers to an L2-normalised embedding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from voxprint.features.mfcc import mean_variance_normalize
from voxprint.models.lstm_dvector import init_lstm_
from voxprint.registry import MODELS

__all__ = ["HEADS", "LSTMNetVLAD", "NetVLAD"]

# Layer order of the fully connected layers after the pooling (see LSTMNetVLAD's ``head``).
HEADS = ("bn-relu", "relu-bn")


class NetVLAD(nn.Module):
    """NetVLAD pooling (Arandjelovic et al., 2016), with optional GhostVLAD clusters (Zhong et al., 2018).

    Each frame ``x_t`` is softly assigned to the clusters, ``a_k(x_t) = softmax_k(w_k . x_t + b_k)``,
    and the cluster's descriptor sums the assigned residuals, ``V_k = sum_t a_k(x_t) (x_t - c_k)``.
    Every ``V_k`` is L2-normalised (intra-normalisation, so a cluster that collects many frames does
    not dominate) and the flattened ``K * D`` vector is L2-normalised again, unless ``global_norm`` is
    off: Kaseva & Kurimo drop that last L2 norm and batch-normalise the flattened vector instead
    (section II), and after the intra-normalisation it would only divide by ``sqrt(K)``. Ghost clusters take part
    in the softmax but are dropped from the output: frames that fit no speaker-relevant cluster
    (noise, silence) can be assigned to them instead of polluting the real clusters.

    Args:
        dim: Feature dimension D of the frames.
        clusters: Number K of output clusters.
        ghost_clusters: Extra clusters in the assignment only.
        global_norm: L2-normalise the flattened vector (NetVLAD's and GhostVLAD's second normalisation).

    Example:
        >>> pool = NetVLAD(dim=6, clusters=4, ghost_clusters=1)
        >>> x = torch.randn(2, 30, 6)
        >>> pool(x).shape, pool.output_dim
        (torch.Size([2, 24]), 24)
        >>> pool.assignments(x).shape
        torch.Size([2, 30, 5])
        >>> torch.allclose(pool(x).norm(dim=-1), torch.ones(2))
        True
        >>> torch.allclose(NetVLAD(6, 4, global_norm=False)(x).norm(dim=-1), torch.full((2,), 2.0))  # sqrt(K)
        True
    """

    def __init__(self, dim: int, clusters: int = 8, ghost_clusters: int = 0, global_norm: bool = True):
        super().__init__()
        if dim < 1 or clusters < 1 or ghost_clusters < 0:
            raise ValueError(f"NetVLAD needs dim >= 1, clusters >= 1 and ghost_clusters >= 0, "
                             f"got {dim}, {clusters} and {ghost_clusters}")
        self.dim = dim
        self.clusters = clusters
        self.ghost_clusters = ghost_clusters
        self.global_norm = global_norm
        # Assignment and centres are separate parameters (not tied as w_k = 2 alpha c_k), as in the
        # NetVLAD paper's trainable layer: the decoupling is what lets it adapt beyond k-means.
        self.assign = nn.Linear(dim, clusters + ghost_clusters)
        self.centroids = nn.Parameter(torch.empty(clusters, dim))
        nn.init.xavier_uniform_(self.assign.weight)
        nn.init.zeros_(self.assign.bias)
        nn.init.normal_(self.centroids, std=dim ** -0.5)

    @property
    def output_dim(self) -> int:
        """Size ``clusters * dim`` of the pooled vector."""
        return self.clusters * self.dim

    def assignments(self, x: torch.Tensor) -> torch.Tensor:
        """Soft assignments (B, T, K + ghost) of frames ``x`` (B, T, D); they sum to 1 over clusters."""
        return F.softmax(self.assign(x), dim=-1)

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        """Un-normalised cluster descriptors ``V`` (B, K, D) of frames ``x`` (B, T, D), ghosts dropped."""
        a = self.assignments(x)[..., : self.clusters]  # (B, T, K)
        # sum_t a_tk (x_t - c_k) = sum_t a_tk x_t - (sum_t a_tk) c_k, without a (B, T, K, D) tensor.
        weighted = torch.einsum("btk,btd->bkd", a, x)
        return weighted - a.sum(dim=1).unsqueeze(-1) * self.centroids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool frames ``x`` (B, T, D) into (B, K * D): unit vectors, or K unit blocks without ``global_norm``."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"NetVLAD expects frames shaped (batch, frames, {self.dim}), got {tuple(x.shape)}")
        v = F.normalize(self.residuals(x), dim=-1).flatten(1)
        return F.normalize(v, dim=-1) if self.global_norm else v

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, clusters={self.clusters}, ghost_clusters={self.ghost_clusters}, "
                f"global_norm={self.global_norm}")


@MODELS.register("lstm_netvlad")
class LSTMNetVLAD(nn.Module):
    """Bidirectional-LSTM speaker embedder with skip connections and NetVLAD pooling (SphereDiar).

    The input is normalised to zero mean and unit variance per segment (the crop or inference
    window the model is given; :func:`~voxprint.features.mfcc.mean_variance_normalize`) as the
    model's first step, so the MVN the paper applies to its MFCCs travels with the saved model and
    the config's ``features.normalize`` should be ``none``. Layer ``i`` reads layer ``i - 1``'s
    output; the pooling reads the concatenation of every layer's output (``num_layers * 2 *
    hidden_size`` per frame), so low-level and high-level frame features both reach the embedding.
    The pooled vector is batch-normalised, passed through ``Linear -> BatchNorm -> ReLU`` blocks and
    a final linear layer, and L2-normalised.

    Three options follow Kaseva & Kurimo's section II where the defaults (which the committed
    recipes/netvlad runs used) do not:

    - ``frame_fc_dim``: NetVLAD reads "the output of the preceding FC layer", ``v`` in R^(T x 256): a
      per-frame ``Linear -> ReLU -> BatchNorm`` to this width between the LSTMs and the pooling
      (paper: 256). None pools the concatenated LSTM outputs directly.
    - ``vlad_global_norm=False``: the flattened NetVLAD vector is batch-normalised *instead of*
      L2-normalised ("we use batch normalization instead").
    - ``head="relu-bn"``: "a rectified linear unit activation is used in all of the FC layers" with
      "batch normalization after each layer except L2 normalization layers", so that "the last two
      layers ... perform normalization": every FC layer, the embedding layer included, is
      ``Linear -> ReLU -> BatchNorm``, and the L2 norm follows the embedding's batch norm. The default
      "bn-relu" puts the batch norm before the ReLU and leaves the embedding layer linear.

    Args:
        input_dim: Feature bins per frame (30 MFCCs in the paper).
        hidden_size: LSTM units per direction.
        num_layers: Number of stacked bidirectional LSTM layers (3 in the paper).
        pooling: ``"netvlad"`` or ``"average"`` (temporal mean of the concatenated outputs).
        clusters: NetVLAD clusters.
        ghost_clusters: NetVLAD ghost clusters (0: plain NetVLAD).
        fc_dims: Widths of the hidden fully connected layers.
        embedding_dim: Size of the embedding.
        input_mvn: Apply per-segment mean/variance normalisation to the input first.
        frame_fc_dim: Width of a per-frame FC layer before the pooling (paper: 256); None: no such layer.
        vlad_global_norm: L2-normalise the flattened NetVLAD vector before its batch norm (paper: off).
        head: Layer order of the FC layers after the pooling, one of :data:`HEADS` (paper: "relu-bn").

    Example:
        >>> model = LSTMNetVLAD(input_dim=30, hidden_size=8, clusters=4, fc_dims=(16,), embedding_dim=12)
        >>> model.frame_dim, model.pooled_dim
        (48, 192)
        >>> emb = model(torch.randn(3, 40, 30))
        >>> emb.shape, torch.allclose(emb.norm(dim=-1), torch.ones(3))
        (torch.Size([3, 12]), True)
        >>> paper = LSTMNetVLAD(input_dim=30, hidden_size=8, clusters=4, fc_dims=(16,), embedding_dim=12,
        ...                     frame_fc_dim=10, vlad_global_norm=False, head="relu-bn")
        >>> paper.pooled_dim, paper(torch.randn(3, 40, 30)).shape
        (40, torch.Size([3, 12]))
    """

    def __init__(self, input_dim: int = 30, hidden_size: int = 256, num_layers: int = 3, pooling: str = "netvlad",
                 clusters: int = 14, ghost_clusters: int = 0, fc_dims: tuple[int, ...] | list[int] = (512,),
                 embedding_dim: int = 256, input_mvn: bool = True, frame_fc_dim: int | None = None,
                 vlad_global_norm: bool = True, head: str = "bn-relu"):
        super().__init__()
        if pooling not in ("netvlad", "average"):
            raise ValueError(f"pooling must be 'netvlad' or 'average', not {pooling!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {head!r}")
        if frame_fc_dim is not None and frame_fc_dim < 1:
            raise ValueError(f"frame_fc_dim must be a positive width or None, got {frame_fc_dim}")
        self.pooling = pooling
        self.input_mvn = input_mvn
        self.embedding_dim = embedding_dim
        # One module per layer (not nn.LSTM(num_layers=...)) because every layer's output is needed.
        self.lstms = nn.ModuleList(
            nn.LSTM(input_dim if i == 0 else 2 * hidden_size, hidden_size, batch_first=True, bidirectional=True)
            for i in range(num_layers)
        )
        self.frame_dim = num_layers * 2 * hidden_size
        # Per-frame FC layer before the pooling (Linear -> ReLU -> BN over channels), when asked for.
        pool_in = self.frame_dim
        if frame_fc_dim is not None:
            self.frame_fc_linear = nn.Linear(self.frame_dim, frame_fc_dim)
            self.frame_fc_bn = nn.BatchNorm1d(frame_fc_dim)
            pool_in = frame_fc_dim
        self.frame_fc_dim = frame_fc_dim
        if pooling == "netvlad":
            self.pool: nn.Module | None = NetVLAD(pool_in, clusters, ghost_clusters, global_norm=vlad_global_norm)
            self.pooled_dim = self.pool.output_dim
        else:
            self.pool = None
            self.pooled_dim = pool_in
        # NetVLAD's output is a unit vector of K * D entries, each ~1/sqrt(K * D): far too small for
        # the next layer's init; batch norm restores a unit scale (the paper's BN after flattening).
        self.pooled_norm = nn.BatchNorm1d(self.pooled_dim)
        self.head = head
        blocks: list[nn.Module] = []
        width = self.pooled_dim
        for out in fc_dims:
            if head == "bn-relu":
                blocks += [nn.Linear(width, out), nn.BatchNorm1d(out), nn.ReLU(inplace=True)]
            else:
                blocks += [nn.Linear(width, out), nn.ReLU(inplace=True), nn.BatchNorm1d(out)]
            width = out
        self.fc = nn.Sequential(*blocks)
        self.embedding = nn.Linear(width, embedding_dim)
        # "relu-bn": the embedding layer is an FC layer like the others (ReLU, then BN before the L2 norm).
        self.embedding_post: nn.Module = (nn.Sequential(nn.ReLU(), nn.BatchNorm1d(embedding_dim))
                                          if head == "relu-bn" else nn.Identity())
        self.reset_lstm_parameters()

    def reset_lstm_parameters(self) -> None:
        """Glorot input weights, orthogonal recurrent gate blocks, zero biases with forget gate 1.

        Orthogonal recurrence keeps the state's scale over hundreds of frames, and the unit forget
        bias makes every cell remember by default early in training.
        """
        for lstm in self.lstms:
            init_lstm_(lstm)

    def frame_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Concatenated outputs of all LSTM layers, (B, T, num_layers * 2 * hidden_size)."""
        x = mean_variance_normalize(feats) if self.input_mvn else feats
        outputs = []
        for lstm in self.lstms:
            x, _ = lstm(x)
            outputs.append(x)
        return torch.cat(outputs, dim=-1)

    def pooling_input(self, frames: torch.Tensor) -> torch.Tensor:
        """What the pooling reads: ``frames`` (B, T, frame_dim), through the per-frame FC layer if any."""
        if self.frame_fc_dim is None:
            return frames
        hidden = F.relu(self.frame_fc_linear(frames))
        return self.frame_fc_bn(hidden.transpose(1, 2)).transpose(1, 2)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Embed ``feats`` of shape (batch, frames, bins) into L2-normalised (batch, embedding_dim)."""
        frames = self.pooling_input(self.frame_features(feats))
        pooled = self.pool(frames) if self.pool is not None else frames.mean(dim=1)
        hidden = self.fc(self.pooled_norm(pooled))
        return F.normalize(self.embedding_post(self.embedding(hidden)), dim=-1)

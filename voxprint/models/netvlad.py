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

__all__ = ["LSTMNetVLAD", "NetVLAD"]


class NetVLAD(nn.Module):
    """NetVLAD pooling (Arandjelovic et al., 2016), with optional GhostVLAD clusters (Zhong et al., 2018).

    Each frame ``x_t`` is softly assigned to the clusters, ``a_k(x_t) = softmax_k(w_k . x_t + b_k)``,
    and the cluster's descriptor sums the assigned residuals, ``V_k = sum_t a_k(x_t) (x_t - c_k)``.
    Every ``V_k`` is L2-normalised (intra-normalisation, so a cluster that collects many frames does
    not dominate) and the flattened ``K * D`` vector is L2-normalised again. Ghost clusters take part
    in the softmax but are dropped from the output: frames that fit no speaker-relevant cluster
    (noise, silence) can be assigned to them instead of polluting the real clusters.

    Args:
        dim: Feature dimension D of the frames.
        clusters: Number K of output clusters.
        ghost_clusters: Extra clusters in the assignment only.

    Example:
        >>> pool = NetVLAD(dim=6, clusters=4, ghost_clusters=1)
        >>> x = torch.randn(2, 30, 6)
        >>> pool(x).shape, pool.output_dim
        (torch.Size([2, 24]), 24)
        >>> pool.assignments(x).shape
        torch.Size([2, 30, 5])
        >>> torch.allclose(pool(x).norm(dim=-1), torch.ones(2))
        True
    """

    def __init__(self, dim: int, clusters: int = 8, ghost_clusters: int = 0):
        super().__init__()
        if dim < 1 or clusters < 1 or ghost_clusters < 0:
            raise ValueError(f"NetVLAD needs dim >= 1, clusters >= 1 and ghost_clusters >= 0, "
                             f"got {dim}, {clusters} and {ghost_clusters}")
        self.dim = dim
        self.clusters = clusters
        self.ghost_clusters = ghost_clusters
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
        """Pool frames ``x`` (B, T, D) into unit vectors (B, K * D)."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"NetVLAD expects frames shaped (batch, frames, {self.dim}), got {tuple(x.shape)}")
        v = F.normalize(self.residuals(x), dim=-1)
        return F.normalize(v.flatten(1), dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, clusters={self.clusters}, ghost_clusters={self.ghost_clusters}"


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

    Example:
        >>> model = LSTMNetVLAD(input_dim=30, hidden_size=8, clusters=4, fc_dims=(16,), embedding_dim=12)
        >>> model.frame_dim, model.pooled_dim
        (48, 192)
        >>> emb = model(torch.randn(3, 40, 30))
        >>> emb.shape, torch.allclose(emb.norm(dim=-1), torch.ones(3))
        (torch.Size([3, 12]), True)
    """

    def __init__(self, input_dim: int = 30, hidden_size: int = 256, num_layers: int = 3, pooling: str = "netvlad",
                 clusters: int = 14, ghost_clusters: int = 0, fc_dims: tuple[int, ...] | list[int] = (512,),
                 embedding_dim: int = 256, input_mvn: bool = True):
        super().__init__()
        if pooling not in ("netvlad", "average"):
            raise ValueError(f"pooling must be 'netvlad' or 'average', not {pooling!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.pooling = pooling
        self.input_mvn = input_mvn
        self.embedding_dim = embedding_dim
        # One module per layer (not nn.LSTM(num_layers=...)) because every layer's output is needed.
        self.lstms = nn.ModuleList(
            nn.LSTM(input_dim if i == 0 else 2 * hidden_size, hidden_size, batch_first=True, bidirectional=True)
            for i in range(num_layers)
        )
        self.frame_dim = num_layers * 2 * hidden_size
        if pooling == "netvlad":
            self.pool: nn.Module | None = NetVLAD(self.frame_dim, clusters, ghost_clusters)
            self.pooled_dim = self.pool.output_dim
        else:
            self.pool = None
            self.pooled_dim = self.frame_dim
        # NetVLAD's output is a unit vector of K * D entries, each ~1/sqrt(K * D): far too small for
        # the next layer's init; batch norm restores a unit scale (the paper's BN after flattening).
        self.pooled_norm = nn.BatchNorm1d(self.pooled_dim)
        blocks: list[nn.Module] = []
        width = self.pooled_dim
        for out in fc_dims:
            blocks += [nn.Linear(width, out), nn.BatchNorm1d(out), nn.ReLU(inplace=True)]
            width = out
        self.fc = nn.Sequential(*blocks)
        self.embedding = nn.Linear(width, embedding_dim)
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

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Embed ``feats`` of shape (batch, frames, bins) into L2-normalised (batch, embedding_dim)."""
        frames = self.frame_features(feats)
        pooled = self.pool(frames) if self.pool is not None else frames.mean(dim=1)
        hidden = self.fc(self.pooled_norm(pooled))
        return F.normalize(self.embedding(hidden), dim=-1)

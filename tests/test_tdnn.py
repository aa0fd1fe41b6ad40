"""Kaldi x-vector TDNN: the encoder interface, the paper topology and size, context, bias-free embedding layer."""
import pytest
import torch

from voxprint.config import load_config
from voxprint.models import build_embedding_model
from voxprint.models.tdnn import CONTEXT, TDNNXVector
from voxprint.registry import MODELS

BINS = 40
# Narrow widths keep the tests fast; the topology is the same at any width.
SMALL = {"channels": 32, "stats_channels": 48, "segment6_dim": 24, "embedding_dim": 16}


def _small(**options) -> TDNNXVector:
    torch.manual_seed(0)
    return MODELS.build("tdnn_xvector", input_dim=BINS, **{**SMALL, **options})


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("frames", [1, 7, 15, 16, 157])
def test_output_shape_for_any_frame_count(frames):
    model = _small().eval()
    with torch.no_grad():
        emb = model(torch.randn(3, frames, BINS))
        frame_level = model.frame_features(torch.randn(3, frames, BINS))
    assert emb.shape == (3, 16) and model.embedding_dim == 16
    assert frame_level.shape == (3, 48, frames)  # the edge padding keeps one output per input frame
    assert torch.isfinite(emb).all()
    assert not torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-2)  # raw by default


def test_normalize_output_gives_unit_vectors():
    model = _small(normalize_output=True).eval()
    with torch.no_grad():
        emb = model(torch.randn(2, 60, BINS))
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_training_mode_backward_reaches_every_parameter():
    model = _small().train()
    model(torch.randn(4, 30, BINS)).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("t", [20, 2, 37])
def test_frame_output_depends_on_inputs_within_seven_frames(t):
    """frame5 at t sees inputs t-7 .. t+7 (2 + 2 + 3 frames each side); past the edges, the edge frame."""
    assert CONTEXT == 7
    model = _small().double().eval()  # eval: batch norm is per frame, no batch statistics
    frames = 40
    x = torch.randn(1, frames, BINS, dtype=torch.float64, requires_grad=True)
    model.frame_features(x)[0, :, t].sum().backward()
    touched = (x.grad[0].abs().sum(dim=-1) > 0).nonzero().flatten().tolist()
    assert touched == list(range(max(t - 7, 0), min(t + 7, frames - 1) + 1))


def test_paper_topology_and_parameter_count():
    model = TDNNXVector(input_dim=BINS)
    convs = [getattr(model, f"frame{i}").conv for i in range(1, 6)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.dilation[0]) for c in convs] == [
        (BINS, 512, 5, 1), (512, 512, 3, 2), (512, 512, 3, 3), (512, 512, 1, 1), (512, 1500, 1, 1)]
    assert model.pooling.out_dim == 3000
    assert (model.segment6.in_features, model.segment6.out_features) == (3000, 512)
    assert (model.embedding.in_features, model.embedding.out_features) == (512, 512)
    # 4.52 M at 40 mels: frame layers 2.72 M, segment6 1.54 M, segment7 (the embedding) 0.26 M.
    assert _count(model) == 4_516_244


def test_embedding_bias_option():
    with_bias, without = _small(), _small(embedding_bias=False)
    assert with_bias.embedding.bias is not None and without.embedding.bias is None
    assert _count(with_bias) - _count(without) == SMALL["embedding_dim"]
    assert without.segment6.bias is not None  # only the embedding layer loses its bias


def test_builds_inside_the_embedding_model_from_a_config():
    config = load_config(None, {"model": {"name": "tdnn_xvector", **SMALL, "embedding_bias": False}})
    model = build_embedding_model(config).eval()
    assert model.encoder.embedding_dim == 16 and model.encoder.embedding.bias is None
    with torch.no_grad():
        emb = model(torch.randn(2, 16000))
    assert emb.shape == (2, 16)

"""ECAPA-TDNN and r-vector ResNet encoders: the encoder interface, sizes, end-to-end use on real speech."""
import pytest
import torch

from voxprint.audio import load_audio
from voxprint.config import load_config
from voxprint.models import build_embedding_model
from voxprint.models.ecapa_tdnn import ECAPATDNN
from voxprint.models.resnet import ResNet34
from voxprint.registry import MODELS


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("channels", [256, 512])
@pytest.mark.parametrize("frames", [20, 157])
def test_ecapa_shapes_and_raw_output(channels, frames):
    torch.manual_seed(0)
    model = MODELS.build("ecapa_tdnn", input_dim=80, channels=channels).eval()
    with torch.no_grad():
        emb = model(torch.randn(2, frames, 80))
    assert emb.shape == (2, 192) and model.embedding_dim == 192
    assert not torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-2)  # raw, not L2-normalised


@pytest.mark.parametrize("name", ["resnet34", "resnet18"])
@pytest.mark.parametrize("frames", [20, 157])
def test_resnet_shapes_and_raw_output(name, frames):
    torch.manual_seed(0)
    # 8-wide keeps the test fast; the topology is the same at any width.
    model = MODELS.build(name, input_dim=80, base_width=8, embedding_dim=64).eval()
    with torch.no_grad():
        emb = model(torch.randn(2, frames, 80))
    assert emb.shape == (2, 64) and model.embedding_dim == 64
    assert not torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-2)


@pytest.mark.parametrize("bins", [40, 64, 81])
def test_resnet_handles_any_bin_count_and_widths_override(bins):
    model = ResNet34(input_dim=bins, widths=[4, 6, 8, 10], pooling="ASTP", embedding_dim=16).eval()
    assert model.stages[-1][-1].conv2.out_channels == 10
    with torch.no_grad():
        assert model(torch.randn(1, 33, bins)).shape == (1, 16)


def test_parameter_counts_match_the_documented_sizes():
    def within(actual: int, expected: float) -> bool:
        return abs(actual - expected) <= 0.1 * expected

    assert within(_count(ECAPATDNN(channels=512)), 6.19e6)  # the paper's C=512 model: 6.2 M
    assert within(_count(ECAPATDNN(channels=256)), 2.05e6)
    assert within(_count(ResNet34()), 6.63e6)  # r-vector ResNet34, base 32
    assert within(_count(MODELS.build("resnet18", input_dim=80)), 4.11e6)


@pytest.mark.parametrize("name, options", [("ecapa_tdnn", {"channels": 64, "se_bottleneck": 16, "attention_dim": 16}),
                                           ("resnet34", {"base_width": 4})])
def test_gradients_reach_the_first_layer(name, options):
    torch.manual_seed(0)
    model = MODELS.build(name, input_dim=40, **options)
    model(torch.randn(3, 40, 40)).pow(2).sum().backward()
    first = next(model.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("name, options", [("ecapa_tdnn", {"channels": 64, "se_bottleneck": 16, "attention_dim": 16}),
                                           ("resnet34", {"base_width": 4})])
def test_lengths_only_reach_the_pooling(name, options):
    """Full lengths are the same as none; shorter lengths change the embedding."""
    torch.manual_seed(0)
    model = MODELS.build(name, input_dim=40, **options).eval()
    feats = torch.randn(2, 64, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(feats, torch.tensor([64, 64])), model(feats))
        assert not torch.allclose(model(feats, torch.tensor([64, 24]))[1], model(feats)[1])


def test_ecapa_embeds_real_speech_end_to_end(speech_file):
    torch.manual_seed(0)
    config = load_config(None, {"model": {"name": "ecapa_tdnn", "channels": 256}, "features": {"n_mels": 80}})
    model = build_embedding_model(config).eval()
    wave = torch.from_numpy(load_audio(speech_file)[: 2 * 16000])
    assert wave.shape == (32000,)
    with torch.no_grad():
        emb = model(torch.stack([wave, wave.flip(0)]))
    assert emb.shape == (2, 192) and torch.isfinite(emb).all()
    assert not torch.allclose(emb[0], emb[1])

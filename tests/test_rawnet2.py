"""RawNet2 (Jung et al., 2020): sinc-conv band-pass filters, feature map scaling, shapes, the config
on real speech and the paper's test-time augmentation as sliding-window inference."""
from pathlib import Path

import numpy as np
import pytest
import torch

from voxprint.audio import load_audio
from voxprint.config import load_config
from voxprint.inference import SpeakerModel, window_starts
from voxprint.models import build_embedding_model
from voxprint.models.rawnet2 import FMS_MODES, FeatureMapScaling, RawNet2, layer_normalize, preemphasis
from voxprint.models.sinc_conv import SincConv, frequency_response
from voxprint.registry import MODELS

RATE = 16000
SMALL_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "rawnet2_small.yaml"
# Narrow widths keep the tests fast; the topology is the paper's at any width.
TINY = {"first_channels": 8, "block_channels": [8, 8, 16], "gru_size": 16, "embedding_dim": 12}


def _band_pass_report(sinc: SincConv) -> list[tuple[float, float, float, float]]:
    """Per filter: (low, high, peak frequency, passband mean gain / worst gain an octave or more away)."""
    with torch.no_grad():
        freqs, gains = frequency_response(sinc.filters(), RATE)
        low, high = sinc.cutoffs()
    # Within a Hamming main-lobe width (4 fs / K) of an edge the response is the transition band,
    # neither pass nor stop, whatever the cut-offs.
    transition = 4 * RATE / sinc.kernel_size
    report = []
    for gain, f1, f2 in zip(gains, low.tolist(), high.tolist()):
        passband = (freqs >= f1) & (freqs <= f2)
        far = (freqs <= f1 / 2) | (freqs >= 2 * f2)
        far &= ((freqs - f1).abs() > transition) & ((freqs - f2).abs() > transition)
        ratio = (gain[passband].mean() / gain[far].max()).item() if far.any() else float("inf")
        report.append((f1, f2, freqs[gain.argmax()].item(), ratio))
    return report


@pytest.mark.parametrize("kernel", [125, 251, 375])
def test_sinc_filters_are_mel_spaced_band_passes(kernel):
    sinc = SincConv(16, kernel, sample_rate=RATE)
    low, high = (t.detach() for t in sinc.cutoffs())
    mel = 2595 * torch.log10(1 + torch.cat([low, high[-1:]]) / 700)
    assert torch.allclose(mel.diff(), mel.diff().mean().expand(16), rtol=1e-4)  # equal steps in mel
    assert torch.allclose(high[:-1], low[1:]) and low[0].item() == pytest.approx(30.0)
    # A band narrower than half the window's main lobe (2 fs / K) cannot be resolved: the lowest
    # band of a 125-tap filter, 30-152 Hz, merges with its mirror image at DC.
    resolution = 2 * RATE / kernel
    for f1, f2, peak, ratio in _band_pass_report(sinc):
        tolerance = 0.0 if f2 - f1 >= resolution else resolution
        assert f1 - tolerance <= peak <= f2 + tolerance, (f1, f2, peak)
        assert ratio > 10, (f1, f2, ratio)


def test_sinc_response_follows_its_parameters():
    sinc = SincConv(3, 251, sample_rate=RATE, min_low_hz=0.0, min_band_hz=50.0)
    with torch.no_grad():
        sinc.low_hz.copy_(torch.tensor([300.0, 1000.0, 4000.0]))
        sinc.band_hz.copy_(torch.tensor([250.0, -950.0, 1950.0]))  # the sign is not used: |b|
    low, high = sinc.cutoffs()
    assert low.tolist() == pytest.approx([300.0, 1000.0, 4000.0])
    assert high.tolist() == pytest.approx([600.0, 2000.0, 6000.0])  # low + 50 + |b|
    report = _band_pass_report(sinc)
    for f1, f2, peak, ratio in report:
        assert f1 <= peak <= f2 and ratio > 10, (f1, f2, peak, ratio)

    # Moving a filter's band up moves its response: what was its passband is now far outside.
    freqs, before = frequency_response(sinc.filters().detach(), RATE)
    with torch.no_grad():
        sinc.low_hz[0] = 3000.0
    freqs, after = frequency_response(sinc.filters().detach(), RATE)
    old_band, new_band = (freqs >= 300) & (freqs <= 600), (freqs >= 3000) & (freqs <= 3300)
    assert after[0, old_band].max() < 0.1 * before[0, old_band].mean()
    assert after[0, new_band].mean() > 10 * before[0, new_band].max()
    assert 3000 <= _band_pass_report(sinc)[0][2] <= 3300
    torch.testing.assert_close(after[1:], before[1:])  # the other filters did not move


def test_sinc_has_exactly_two_trainable_parameters_per_filter():
    sinc = SincConv(20, 251)
    params = dict(sinc.named_parameters())
    assert set(params) == {"low_hz", "band_hz"}
    assert all(p.shape == (20,) and p.requires_grad for p in params.values())
    assert sum(p.numel() for p in sinc.parameters()) == 2 * 20
    assert set(sinc.state_dict()) == {"low_hz", "band_hz"}  # window and taps are rebuilt, not stored
    out = sinc(torch.randn(2, 1, 1000))
    assert out.shape == (2, 20, 750)  # no padding: 250 samples fewer


def test_sinc_filters_are_symmetric_and_odd_kernels_are_required():
    filters = SincConv(4, 101, init="linear").filters().detach()
    torch.testing.assert_close(filters, filters.flip(-1))  # linear phase
    with pytest.raises(ValueError, match="odd"):
        SincConv(4, 250)


@pytest.mark.parametrize("stride,padding", [(1, 125), (3, 124), (1, 0)])
def test_fft_filtering_matches_direct_convolution_in_value_and_gradient(stride, padding, speech_file):
    wave = torch.from_numpy(load_audio(speech_file)[:8000]).reshape(1, 1, -1).repeat(2, 1, 1)
    outputs, grads = [], []
    for method in ("direct", "fft"):
        sinc = SincConv(6, 251, stride=stride, padding=padding, method=method)
        out = sinc(wave)
        # A fixed random projection of the output makes the gradient reach every filter unequally.
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        outputs.append(out.detach())
        grads.append(torch.cat([sinc.low_hz.grad, sinc.band_hz.grad]))
    assert outputs[0].shape == outputs[1].shape
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5 * outputs[0].abs().max().item(), rtol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-6 * grads[0].abs().max().item())


def test_auto_method_filters_long_kernels_by_fft_on_cpu_and_rejects_unknown_methods():
    assert SincConv(4, 251).method == "auto"
    with pytest.raises(ValueError, match="method"):
        SincConv(4, 251, method="winograd")
    with pytest.raises(ValueError, match="shorter"):
        SincConv(4, 251, method="fft")(torch.randn(1, 1, 100))


def _set_linear(layer: torch.nn.Linear, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.randn(layer.weight.shape, generator=generator)
    bias = torch.randn(layer.bias.shape, generator=generator)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return weight, bias


@pytest.mark.parametrize("mode", FMS_MODES)
def test_feature_map_scaling_formulas(mode):
    generator = torch.Generator().manual_seed(0)
    channels = 4
    c = torch.randn(2, channels, 7, generator=generator)
    fms = FeatureMapScaling(channels, mode, se_reduction=2)
    mean = c.mean(dim=-1)
    if mode == "se":
        w1, b1 = _set_linear(fms.squeeze, generator)
        w2, b2 = _set_linear(fms.excite, generator)
        assert w1.shape == (2, channels)
        s = torch.sigmoid(torch.relu(mean @ w1.T + b1) @ w2.T + b2)[..., None]
        expected = c * s
    elif mode == "mul-add-sep":
        w1, b1 = _set_linear(fms.fc, generator)
        w2, b2 = _set_linear(fms.fc_add, generator)
        s1 = torch.sigmoid(mean @ w1.T + b1)[..., None]
        s2 = torch.sigmoid(mean @ w2.T + b2)[..., None]
        assert not torch.allclose(s1, s2)
        expected = c * s1 + s2
    elif mode == "none":
        assert not list(fms.parameters())
        expected = c
    else:
        w, b = _set_linear(fms.fc, generator)
        s = torch.sigmoid(mean @ w.T + b)[..., None]
        expected = {"add": c + s, "mul": c * s, "add-mul": (c + s) * s, "mul-add": c * s + s}[mode]
    torch.testing.assert_close(fms(c), expected)
    scales = fms.scales(c)
    assert len(scales) == {"none": 0, "mul-add-sep": 2}.get(mode, 1)
    assert all(s.shape == (2, channels) and bool(((s > 0) & (s < 1)).all()) for s in scales)


def test_feature_map_scaling_rejects_unknown_mode():
    with pytest.raises(ValueError, match="fms"):
        FeatureMapScaling(4, "sum")


@pytest.mark.parametrize("first_layer", ["sinc", "conv"])
@pytest.mark.parametrize("samples", [300, 4000, 16001])
def test_output_shape_for_several_lengths(first_layer, samples):
    torch.manual_seed(0)
    model = MODELS.build("rawnet2", input_dim=1, first_layer=first_layer, **TINY).eval()
    with torch.no_grad():
        emb = model(torch.randn(3, samples, 1))
    assert emb.shape == (3, 12) and model.embedding_dim == 12
    assert torch.isfinite(emb).all()
    assert not torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-2)  # raw, not normalised


@pytest.mark.parametrize("first_layer, first_frames", [("sinc", 59049), ("conv", 19683)])
def test_paper_geometry_leaves_27_frames_of_3_7_seconds(first_layer, first_frames):
    """Table 1: 59,049 samples -> 19,683 after the first pooling -> /3 per block -> 27 frames for the GRU
    (the RawNet1-style strided convolution, kernel = stride = 3, divides by 3 once more)."""
    model = RawNet2(first_layer=first_layer, first_channels=4, block_channels=[4, 4, 8, 8, 8, 8],
                    gru_size=8, embedding_dim=8).eval()
    assert model.min_samples == (2187 if first_layer == "sinc" else 6561)
    lengths = []
    model.first.register_forward_hook(lambda module, args, out: lengths.append(out.shape[-1]))
    with torch.no_grad():
        frames = model.frame_features(torch.randn(1, 59049, 1))
    assert lengths == [first_frames]
    assert frames.shape == (1, 8, 27 if first_layer == "sinc" else 9)


def test_layernorm_input_makes_the_embedding_gain_invariant():
    torch.manual_seed(0)
    x = torch.randn(2, 3000, 1)
    with torch.no_grad():
        ln = RawNet2(input_norm="layernorm", **TINY).eval()
        torch.testing.assert_close(ln(0.01 * x), ln(x), atol=1e-4, rtol=1e-4)
        pre = RawNet2(input_norm="preemphasis", **TINY).eval()
        assert not torch.allclose(pre(0.01 * x), pre(x), atol=1e-3)


@pytest.mark.parametrize("first_layer, expected", [("sinc", "layernorm"), ("conv", "preemphasis")])
def test_input_norm_defaults_to_the_papers_pairing_with_the_first_layer(first_layer, expected):
    """Section 4.2: raw waveforms "with pre-emphasis" for the strided-convolution systems; for the sinc-conv
    "we followed [SincNet]": no pre-emphasis, layer normalisation. An explicit input_norm still wins."""
    torch.manual_seed(0)
    model = RawNet2(first_layer=first_layer, **TINY).eval()
    assert model.input_norm == expected
    x = torch.randn(1, 3000)
    reference = layer_normalize(x) if expected == "layernorm" else preemphasis(x, 0.97)
    torch.testing.assert_close(model.preprocess(x), reference)
    assert RawNet2(first_layer=first_layer, input_norm="none", **TINY).input_norm == "none"


def test_gradients_reach_the_sinc_cutoffs():
    torch.manual_seed(0)
    model = RawNet2(**TINY).train()
    model(torch.randn(2, 3000, 1)).square().sum().backward()
    for name in ("low_hz", "band_hz"):
        grad = getattr(model.first, name).grad
        assert grad is not None and torch.isfinite(grad).all() and bool((grad != 0).all()), name
    assert all(p.grad is not None for p in model.parameters())


@pytest.fixture(scope="module")
def small_config() -> dict:
    return load_config(SMALL_CONFIG)


def test_small_config_builds_and_embeds_real_speech(small_config, speech_file):
    assert small_config["features"]["type"] == "raw" and small_config["features"]["normalize"] == "none"
    assert small_config["optim"]["amsgrad"] is True and small_config["data"]["crop_frames"] == [24000, 24000]
    torch.manual_seed(0)
    model = build_embedding_model(small_config)
    assert isinstance(model.encoder, RawNet2) and isinstance(model.encoder.first, SincConv)
    speaker_model = SpeakerModel(model, small_config)
    emb = speaker_model.extract_embedding(speech_file)
    assert emb.shape == (128,) and emb.dtype == np.float32
    assert np.isfinite(emb).all() and np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)


def test_paper_config_loads_with_table_1_sizes():
    config = load_config(SMALL_CONFIG.with_name("rawnet2_paper.yaml"))
    model = config["model"]
    assert model["block_channels"] == [128, 128, 256, 256, 256, 256] and model["gru_size"] == 1024
    assert config["data"]["crop_frames"] == [59049, 59049] and config["inference"]["overlap"] == 0.2


def test_test_time_augmentation_is_sliding_window_inference(small_config, speech_file):
    """RawNet2's TTA: the normalised mean of the normalised embeddings of fixed-length crops overlapping
    by 20 %; with the raw front-end inference windows are counted in samples."""
    config = load_config(SMALL_CONFIG, {"inference": {"window_frames": 16000, "overlap": 0.2}})
    torch.manual_seed(0)
    speaker_model = SpeakerModel(build_embedding_model(config), config)
    wave = load_audio(speech_file)[:48000]
    assert len(wave) == 48000
    starts = window_starts(len(wave), 16000, 0.2)
    assert starts == [0, 12800, 25600, 32000]  # hop 0.8 * 16000, the last crop aligned to the end
    encoder = speaker_model.model.encoder
    with torch.no_grad():
        crops = [torch.from_numpy(wave[s:s + 16000]).reshape(1, 16000, 1) for s in starts]
        embs = torch.nn.functional.normalize(torch.cat([encoder(c) for c in crops]), dim=-1)
        expected = torch.nn.functional.normalize(embs.mean(dim=0), dim=0).numpy()
    got = speaker_model.extract_embedding(wave, sample_rate=RATE)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    single = speaker_model.model(torch.from_numpy(wave[None]))[0]
    assert not np.allclose(got, torch.nn.functional.normalize(single, dim=0).detach().numpy(), atol=1e-3)

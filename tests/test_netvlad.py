"""NetVLAD pooling, the LSTM-NetVLAD embedder, its MFCC front-end (checked against kaldi-native-fbank)
and its configs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from voxprint.audio import load_audio
from voxprint.config import load_config
from voxprint.features import LogMelFbank
from voxprint.features.mfcc import MFCC, dct_matrix, lifter_coefficients, mean_variance_normalize
from voxprint.models import build_embedding_model
from voxprint.models.netvlad import LSTMNetVLAD, NetVLAD
from voxprint.registry import FRONTENDS, MODELS

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# Tolerance against kaldi-native-fbank's MFCCs, per cepstrum divided by its lifter weight (up to 12 for
# Q=22). Our log mel energies match knf's to 1e-3 in strong bands and 5e-2 in the very weak ones
# (test_features.py); a cepstrum is a sum of 40 of them with weights <= sqrt(2/40) = 0.22, so the
# weak bands, which carry rounding noise in both implementations, bound its error. Measured on the
# fixture file: 7.6e-4 at most, 1e-5 on average (unliftered).
TOL_MFCC_MAX = 2e-3
TOL_MFCC_MEAN = 5e-5


def knf_mfcc(wave: np.ndarray, n_mels: int, n_mfcc: int, lifter: float) -> np.ndarray:
    import kaldi_native_fbank as knf  # a test dependency: a missing package must fail, never skip
    opts = knf.MfccOptions()
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = n_mels
    opts.num_ceps = n_mfcc
    opts.use_energy = False
    opts.cepstral_lifter = lifter
    mfcc = knf.OnlineMfcc(opts)
    # Kaldi works on int16-valued samples.
    mfcc.accept_waveform(16000, (wave.astype(np.float64) * 32768.0).tolist())
    mfcc.input_finished()
    return np.stack([mfcc.get_frame(i) for i in range(mfcc.num_frames_ready)])


# ---------------------------------------------------------------- MFCC


@pytest.mark.parametrize("lifter", [22.0, 0.0])
def test_mfcc_matches_kaldi_native_fbank(speech_file: Path, lifter: float) -> None:
    wave = load_audio(speech_file, target_rate=16000)
    ours = MFCC(n_mels=40, n_mfcc=30, cepstral_lifter=lifter)(torch.from_numpy(wave)).numpy()
    ref = knf_mfcc(wave, 40, 30, lifter)
    assert ours.shape == ref.shape == (len(ref), 30)
    diff = np.abs(ours - ref) / lifter_coefficients(30, lifter).numpy()
    assert diff.max() < TOL_MFCC_MAX
    assert diff.mean() < TOL_MFCC_MEAN


def test_mfcc_framing_and_dim_follow_fbank() -> None:
    mfcc, fbank = MFCC(n_mels=40, n_mfcc=30), LogMelFbank(n_mels=40)
    assert mfcc.dim == 30
    for n in (399, 400, 16000, 32123):
        assert mfcc.num_frames(n) == fbank.num_frames(n)
    assert [mfcc.num_samples(f) for f in (0, 1, 200)] == [fbank.num_samples(f) for f in (0, 1, 200)]
    assert mfcc(torch.randn(3, 32000) * 0.1).shape == (3, fbank.num_frames(32000), 30)
    assert FRONTENDS.get("mfcc") is MFCC


def test_dct_is_orthonormal_and_rejects_too_many_ceps() -> None:
    d = dct_matrix(40, 40).double()
    assert torch.allclose(d.T @ d, torch.eye(40, dtype=torch.float64), atol=1e-6)
    with pytest.raises(Exception, match="n_mfcc"):
        MFCC(n_mels=20, n_mfcc=30)


def test_mean_variance_normalize_per_utterance() -> None:
    feats = torch.randn(2, 80, 5) * torch.tensor([1.0, 3.0, 10.0, 0.1, 2.0]) + 7.0
    feats[1] *= 4.0
    out = mean_variance_normalize(feats)
    assert out.mean(dim=1).abs().max() < 1e-5
    assert (out.std(dim=1, unbiased=False) - 1).abs().max() < 1e-4
    # Constant dimensions (silence) stay finite.
    assert torch.isfinite(mean_variance_normalize(torch.ones(10, 3))).all()


# ---------------------------------------------------------------- NetVLAD


def test_netvlad_shape_norms_and_assignments() -> None:
    torch.manual_seed(0)
    pool = NetVLAD(dim=12, clusters=5)
    x = torch.randn(3, 40, 12)
    out = pool(x)
    assert out.shape == (3, 5 * 12) and pool.output_dim == 60
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-6)
    a = pool.assignments(x)
    assert a.shape == (3, 40, 5)
    assert torch.allclose(a.sum(dim=-1), torch.ones(3, 40), atol=1e-6)
    assert (a >= 0).all()
    # Intra-normalisation: each cluster's block is a unit vector before the final norm, so after it
    # every block has norm 1 / sqrt(K).
    blocks = out.view(3, 5, 12).norm(dim=-1)
    assert torch.allclose(blocks, torch.full((3, 5), 5 ** -0.5), atol=1e-6)


def test_netvlad_residuals_match_definition() -> None:
    torch.manual_seed(1)
    pool = NetVLAD(dim=4, clusters=3)
    x = torch.randn(2, 7, 4)
    a = pool.assignments(x)
    expected = torch.stack([
        torch.stack([(a[b, :, k, None] * (x[b] - pool.centroids[k])).sum(0) for k in range(3)])
        for b in range(2)
    ])
    assert torch.allclose(pool.residuals(x), expected, atol=1e-5)
    normalised = torch.nn.functional.normalize(expected, dim=-1).flatten(1)
    assert torch.allclose(pool(x), torch.nn.functional.normalize(normalised, dim=-1), atol=1e-5)


def test_ghost_clusters_enter_assignment_only() -> None:
    pool = NetVLAD(dim=6, clusters=4, ghost_clusters=2)
    x = torch.randn(2, 9, 6)
    assert pool.assignments(x).shape == (2, 9, 6)
    assert pool(x).shape == (2, 24)
    # Frames assigned to a ghost cluster contribute nothing.
    with torch.no_grad():
        pool.assign.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 50.0, 50.0]))
    assert pool.residuals(x).abs().max() < 1e-6


def test_netvlad_without_global_norm_keeps_the_intra_normalised_blocks() -> None:
    # Kaseva & Kurimo, section II: each row of V is L2-normalised and concatenated; the usual second
    # L2 norm after flattening is replaced by batch normalisation.
    torch.manual_seed(2)
    pool = NetVLAD(dim=5, clusters=3, global_norm=False)
    x = torch.randn(2, 11, 5)
    out = pool(x)
    assert torch.allclose(out, torch.nn.functional.normalize(pool.residuals(x), dim=-1).flatten(1), atol=1e-6)
    assert torch.allclose(out.view(2, 3, 5).norm(dim=-1), torch.ones(2, 3), atol=1e-6)
    assert torch.allclose(out.norm(dim=-1), torch.full((2,), 3 ** 0.5), atol=1e-5)


# ---------------------------------------------------------------- LSTM-NetVLAD


@pytest.mark.parametrize("pooling", ["netvlad", "average"])
def test_lstm_netvlad_shape_and_unit_norm(pooling: str) -> None:
    torch.manual_seed(0)
    model = LSTMNetVLAD(input_dim=30, hidden_size=8, num_layers=3, pooling=pooling, clusters=4, fc_dims=(16, 12),
                        embedding_dim=10)
    emb = model(torch.randn(4, 50, 30))
    assert emb.shape == (4, 10)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert model.frame_dim == 3 * 2 * 8
    assert model.pooled_dim == (4 * 48 if pooling == "netvlad" else 48)
    model.eval()
    assert model(torch.randn(1, 37, 30)).shape == (1, 10)  # a single variable-length window at inference


def test_lstm_netvlad_skip_connections_concatenate_every_layer() -> None:
    torch.manual_seed(0)
    model = LSTMNetVLAD(input_dim=30, hidden_size=6, num_layers=3, clusters=2, fc_dims=(8,), embedding_dim=4)
    feats = torch.randn(2, 20, 30)
    frames = model.frame_features(feats)
    assert frames.shape == (2, 20, 3 * 2 * 6)
    x = mean_variance_normalize(feats)
    for i, lstm in enumerate(model.lstms):
        x, _ = lstm(x)  # layer i reads layer i - 1's output ...
        assert torch.allclose(frames[..., 12 * i:12 * (i + 1)], x, atol=1e-6)  # ... and all reach the pooling
    assert model.lstms[1].input_size == 12 and model.lstms[0].input_size == 30


def test_lstm_netvlad_normalises_its_input() -> None:
    torch.manual_seed(0)
    model = LSTMNetVLAD(input_dim=30, hidden_size=8, clusters=3, fc_dims=(16,), embedding_dim=8).eval()
    feats = torch.randn(2, 60, 30)
    scale, shift = torch.rand(30) * 5 + 0.5, torch.randn(30) * 10
    assert torch.allclose(model(feats), model(feats * scale + shift), atol=1e-4)


def test_lstm_netvlad_defaults_are_the_committed_architecture() -> None:
    # The recipes/netvlad runs were trained with these; the paper's options must stay opt-in.
    model = LSTMNetVLAD(input_dim=30, hidden_size=8, clusters=4, fc_dims=(16,), embedding_dim=10)
    assert model.frame_fc_dim is None and model.pool.global_norm and model.head == "bn-relu"
    assert [type(m).__name__ for m in model.fc] == ["Linear", "BatchNorm1d", "ReLU"]
    assert isinstance(model.embedding_post, torch.nn.Identity)
    assert not any(name.startswith("frame_fc") for name in model.state_dict())


def test_lstm_netvlad_paper_frame_fc_layer_feeds_the_pooling() -> None:
    # Section II: NetVLAD transforms "the output of the preceding FC layer", v in R^(T x 256).
    torch.manual_seed(0)
    model = LSTMNetVLAD(input_dim=30, hidden_size=8, clusters=4, fc_dims=(16,), embedding_dim=10,
                        frame_fc_dim=20).eval()
    assert model.pool.dim == 20 and model.pooled_dim == 4 * 20
    feats = torch.randn(2, 25, 30)
    frames = model.frame_features(feats)
    bn = model.frame_fc_bn
    expected = (torch.relu(model.frame_fc_linear(frames)) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    expected = expected * bn.weight + bn.bias
    assert torch.allclose(model.pooling_input(frames), expected, atol=1e-5)
    avg = LSTMNetVLAD(input_dim=30, hidden_size=8, pooling="average", fc_dims=(16,), embedding_dim=10,
                      frame_fc_dim=20)
    assert avg.pooled_dim == 20 and avg(torch.randn(3, 25, 30)).shape == (3, 10)
    with pytest.raises(ValueError, match="frame_fc_dim"):
        LSTMNetVLAD(frame_fc_dim=0)


def test_lstm_netvlad_paper_head_is_relu_then_batch_norm_up_to_the_l2_norm() -> None:
    # Section II: ReLU in every FC layer and batch normalisation after each layer except the L2 norms,
    # so the last two layers (batch norm, L2 norm) both normalise.
    torch.manual_seed(0)
    model = LSTMNetVLAD(input_dim=30, hidden_size=8, clusters=4, fc_dims=(16,), embedding_dim=10,
                        vlad_global_norm=False, head="relu-bn")
    assert not model.pool.global_norm
    assert [type(m).__name__ for m in model.fc] == ["Linear", "ReLU", "BatchNorm1d"]
    assert [type(m).__name__ for m in model.embedding_post] == ["ReLU", "BatchNorm1d"]
    model.eval()
    with torch.no_grad():
        model.embedding_post[1].running_mean.fill_(0.5)  # the BN's shift reaches the embedding
        feats = torch.randn(3, 25, 30)
        frames = model.frame_features(feats)
        hidden = model.fc(model.pooled_norm(model.pool(frames)))
        expected = torch.nn.functional.normalize(model.embedding_post(model.embedding(hidden)), dim=-1)
        assert torch.allclose(model(feats), expected, atol=1e-6)
        assert (model(feats) < 0).any()  # BN after the ReLU: not confined to the positive orthant
    with pytest.raises(ValueError, match="head"):
        LSTMNetVLAD(head="relu")


def test_lstm_netvlad_registered_and_built_from_config() -> None:
    assert MODELS.get("lstm_netvlad") is LSTMNetVLAD
    with pytest.raises(ValueError, match="pooling"):
        LSTMNetVLAD(pooling="max")
    config = load_config(CONFIGS / "lstm_netvlad_small.yaml")
    model = build_embedding_model(config)
    assert isinstance(model.frontend, MFCC) and model.frontend.dim == 30
    assert model.encoder.lstms[0].input_size == 30 and model.encoder.embedding_dim == 128
    assert model.normalize == "none" and config["inference"]["window_frames"] == 200
    model.eval()
    with torch.no_grad():
        emb = model(torch.randn(2, 16000) * 0.1)
    assert emb.shape == (2, 128)
    fine_tune = load_config(CONFIGS / "lstm_netvlad_amsoftmax.yaml")
    assert fine_tune["init_from"] == "exp/lstm_netvlad_small"
    assert fine_tune["loss"] == {"name": "am_softmax", "margin": 0.2, "scale": 30.0}
    assert fine_tune["model"] == config["model"] and fine_tune["features"] == config["features"]

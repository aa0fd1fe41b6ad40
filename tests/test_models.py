"""Embedders and the name registry."""
from pathlib import Path

import pytest
import torch

import voxprint.losses  # noqa: F401
from voxprint.audio import load_audio
from voxprint.config import load_config
from voxprint.errors import ConfigError
from voxprint.models import build_embedding_model
from voxprint.models.lstm_dvector import LSTMDVector
from voxprint.registry import LOSSES, MODELS, Registry

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_lstm_output_is_unit_norm(pooling):
    model = LSTMDVector(input_dim=40, hidden_size=32, proj_size=16, num_layers=3, embedding_dim=8, pooling=pooling)
    emb = model(torch.randn(3, 70, 40))
    assert emb.shape == (3, 8)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_last_frame_pooling_ignores_earlier_frames_only_through_the_recurrence():
    torch.manual_seed(0)
    model = LSTMDVector(input_dim=4, hidden_size=8, proj_size=4, num_layers=1, embedding_dim=3, pooling="last")
    x = torch.randn(1, 20, 4)
    y = x.clone()
    y[:, -1] += 1.0
    assert not torch.allclose(model(x), model(y))


def test_default_config_starts_with_distinct_embeddings(train_dir):
    """Regression: PyTorch's default LSTM init mapped every utterance to cosine 0.9999 and GE2E never learned."""
    torch.manual_seed(0)
    config = load_config(REPO / "configs" / "ge2e_lstm_small.yaml")
    model = build_embedding_model(config)
    waves = [load_audio(p)[:16000 * 2] for p in sorted(train_dir.glob("SPEAKER000*/*.flac"))[:6]]
    with torch.no_grad():
        emb = model(torch.from_numpy(__import__("numpy").stack(waves)))
    cos = emb @ emb.T
    off_diagonal = cos[~torch.eye(6, dtype=torch.bool)]
    assert off_diagonal.mean() < 0.95, off_diagonal


def test_paper_config_builds_paper_sizes():
    config = load_config(REPO / "configs" / "ge2e_lstm_paper.yaml")
    model = build_embedding_model(config)
    lstm = model.encoder.lstm
    assert (lstm.hidden_size, lstm.proj_size, lstm.num_layers) == (768, 256, 3)
    assert model.encoder.pooling == "last" and model.encoder.embedding_dim == 256


def test_registry_lookup_and_errors():
    assert "lstm_dvector" in MODELS and "ge2e" in LOSSES
    with pytest.raises(ConfigError, match="unknown model 'nope'; known: .*lstm_dvector"):
        MODELS.build("nope")
    with pytest.raises(ConfigError, match="bad options for model 'lstm_dvector'"):
        MODELS.build("lstm_dvector", hidden=3)
    reg = Registry("thing")
    reg.register("a")(dict)
    with pytest.raises(ValueError, match="twice"):
        reg.register("a")(dict)


def test_config_rejects_unknown_sections_and_bad_values(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: {name: lstm_dvector}\n")
    with pytest.raises(ConfigError, match="unknown config section"):
        load_config(bad)
    with pytest.raises(ConfigError, match="utterances_per_speaker"):
        load_config(None, {"data": {"utterances_per_speaker": 1}})
    with pytest.raises(ConfigError, match="normalize"):
        load_config(None, {"features": {"normalize": "cepstral"}})


def test_raw_waveform_front_end_counts_frames_in_samples():
    from voxprint.features import RawWaveform
    from voxprint.registry import FRONTENDS

    frontend = FRONTENDS.build("raw", sample_rate=16000)
    assert isinstance(frontend, RawWaveform)
    assert frontend.num_samples(4000) == 4000 and frontend.num_frames(4000) == 4000
    assert frontend(torch.zeros(3, 4000)).shape == (3, 4000, 1)


def test_old_model_files_load_with_new_defaults(tmp_path):
    """A model.pt saved before an option existed still loads: missing options take their defaults."""
    from voxprint.inference import load_model

    config = load_config(None, {"model": {"name": "lstm_dvector", "hidden_size": 16, "proj_size": 8,
                                          "num_layers": 1, "embedding_dim": 4}})
    model = build_embedding_model(config)
    del config["features"]["type"]
    torch.save({"config": config, "state_dict": model.state_dict()}, tmp_path / "model.pt")
    assert load_model(tmp_path).config["features"]["type"] == "fbank"

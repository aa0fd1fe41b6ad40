"""Sliding-window embedding extraction (GE2E paper, section 3.3) on real audio."""
import numpy as np
import pytest
import torch

from voxprint.audio import load_audio
from voxprint.config import load_config
from voxprint.errors import AudioError, ModelError
from voxprint.inference import SpeakerModel, load_model, window_starts
from voxprint.models import build_embedding_model


def test_window_starts_cover_the_utterance_with_half_overlap():
    assert window_starts(100, 160, 0.5) == [0]
    assert window_starts(160, 160, 0.5) == [0]
    assert window_starts(400, 160, 0.5) == [0, 80, 160, 240]
    assert window_starts(410, 160, 0.5) == [0, 80, 160, 240, 250]  # last aligned to the end


def test_embedding_is_mean_of_normalised_window_embeddings(small_model, speech_file):
    wave = load_audio(speech_file)
    with torch.no_grad():
        feats = small_model.model.features(torch.from_numpy(wave)[None])[0]
        starts = window_starts(feats.shape[0], 160, 0.5)
        assert len(starts) > 2
        windows = [small_model.model.encode(feats[s:s + 160][None])[0] for s in starts]
        expected = torch.nn.functional.normalize(torch.stack(windows).mean(0), dim=0).numpy()
    got = small_model.extract_embedding(speech_file)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.dtype == np.float32 and np.linalg.norm(got) == pytest.approx(1.0, abs=1e-5)


def test_short_audio_is_one_window(small_model, speech_file):
    wave = load_audio(speech_file)[: 16000]  # 1 s < 160 frames
    with torch.no_grad():
        expected = small_model.model(torch.from_numpy(wave)[None])[0].numpy()
    np.testing.assert_allclose(small_model.extract_embedding(wave, sample_rate=16000), expected, atol=1e-5)


def test_batched_extraction_equals_one_by_one(small_model, train_dir):
    paths = sorted((train_dir / "SPEAKER0001").glob("*.flac"))[:5]
    batched = small_model.extract_embeddings(paths, batch_windows=7)
    single = np.stack([small_model.extract_embedding(p) for p in paths])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_array_at_other_rate_matches_file(small_model, fsdd_dir):
    path = next((fsdd_dir / "george").glob("*.flac"))
    import soundfile

    wave, rate = soundfile.read(path, dtype="float32")
    assert rate == 8000
    np.testing.assert_allclose(small_model.extract_embedding(wave, sample_rate=rate),
                               small_model.extract_embedding(path), atol=1e-6)


def test_too_short_audio_is_rejected(small_model):
    with pytest.raises(AudioError, match="short"):
        small_model.extract_embedding(np.random.default_rng(0).normal(0, 0.1, 800).astype(np.float32), 16000)


def test_load_model_errors(tmp_path):
    with pytest.raises(ModelError, match="neither"):
        load_model(tmp_path / "missing")
    (tmp_path / "model.pt").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a readable"):
        load_model(tmp_path)


def test_optimized_encoder_matches_eager(speech_file):
    """optimize() traces traceable encoders (ECAPA-TDNN); embeddings must not change."""
    torch.manual_seed(0)
    config = load_config(None, {"features": {"n_mels": 40}, "inference": {"window_frames": 3000},
                                "model": {"name": "ecapa_tdnn", "channels": 32, "embedding_dim": 16, "scale": 4,
                                          "se_bottleneck": 8, "attention_dim": 8}})
    model = SpeakerModel(build_embedding_model(config), config)
    eager = model.extract_embedding(speech_file)
    model.optimize()
    assert isinstance(model._encode, torch.jit.ScriptModule)
    np.testing.assert_allclose(model.extract_embedding(speech_file), eager, atol=1e-5)
    short = load_audio(speech_file)[:4000]
    np.testing.assert_allclose(model.extract_embedding(short, 16000),
                               SpeakerModel(model.model, config).extract_embedding(short, 16000), atol=1e-5)


def test_lstm_is_not_traced(small_model, speech_file):
    before = small_model.extract_embedding(speech_file)
    assert small_model.optimize()._encode == small_model.model.encode
    np.testing.assert_allclose(small_model.extract_embedding(speech_file), before, atol=1e-6)

"""Streaming embeddings: chunk by chunk, the whole-stream embedding equals the offline one; memory stays bounded."""
import numpy as np
import pytest
import torch

from voxprint.audio import load_audio
from voxprint.config import load_config
from voxprint.errors import AudioError, ModelError
from voxprint.inference import SpeakerModel, load_model
from voxprint.inference.streaming import StreamingEmbedder
from voxprint.models import build_embedding_model


@pytest.fixture(scope="module")
def wave(train_dir) -> np.ndarray:
    """12 s of real speech: utterances of two speakers joined."""
    files = sorted((train_dir / "SPEAKER0001").glob("*.flac"))[:2] + sorted((train_dir / "SPEAKER0005").glob("*.flac"))[:2]
    joined = np.concatenate([load_audio(f) for f in files])
    assert len(joined) >= 12 * 16000
    return joined[: 12 * 16000]


@pytest.fixture(scope="module")
def default_model():
    return load_model("default")


def _stream(model, wave: np.ndarray, chunk: int, **options) -> tuple[StreamingEmbedder, list]:
    stream = StreamingEmbedder(model, **options)
    return stream, [stream.push(wave[i:i + chunk]) for i in range(0, len(wave), chunk)]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_whole_stream_equals_offline_across_many_windows(default_model, wave):
    """2 s windows over 12 s: grid windows are embedded once and the end-aligned one is recomputed."""
    model = default_model.with_inference(window_frames=200, overlap=0.5)
    stream, updates = _stream(model, wave, 1600, recent_seconds=1.5)  # 100 ms chunks
    offline = model.extract_embedding(wave, sample_rate=16000)
    assert _cosine(stream.finish(), offline) >= 1 - 1e-4
    assert _cosine(updates[-1].whole, offline) >= 1 - 1e-4
    # Every intermediate update is the offline embedding of the audio so far.
    middle = updates[len(updates) // 2]
    so_far = wave[: int(round(middle.seconds * 16000))]
    assert _cosine(middle.whole, model.extract_embedding(so_far, sample_rate=16000)) >= 1 - 1e-4
    assert _cosine(middle.recent, model.extract_embedding(so_far[-24000:], sample_rate=16000)) >= 1 - 1e-4
    # Bounded state: frames of one window (or the recent span), one vector per complete grid window
    # (1198 frames: windows at 0, 100, ..., 900).
    assert len(stream._frames) <= 200 + 100 and len(stream._grid) == 10
    assert all(u.latency > 0 for u in updates) and updates[-1].seconds == pytest.approx(12.0)


def test_growing_single_window_and_uneven_chunks(default_model, wave):
    """Shorter than one (30 s) window: the whole stream is one window; chunks need not align with frames."""
    audio = wave[: 5 * 16000]
    stream, updates = _stream(default_model, audio, 777, whole_every=25)
    assert updates[0].recent is None and updates[0].whole is None  # less than min_seconds so far
    assert [u.whole is not None for u in updates[:50]].count(True) == 2  # every 25th chunk
    assert _cosine(stream.finish(), default_model.extract_embedding(audio, sample_rate=16000)) >= 1 - 1e-4


def test_short_windows_of_another_encoder_and_reset(wave):
    """An LSTM with 1.6 s windows (recent span longer than a window is windowed as offline)."""
    torch.manual_seed(0)
    config = load_config(None, {"model": {"name": "lstm_dvector", "hidden_size": 32, "proj_size": 16,
                                          "num_layers": 2, "embedding_dim": 12}})
    model = SpeakerModel(build_embedding_model(config), config)
    audio = wave[: 4 * 16000]
    stream, updates = _stream(model, audio, 2400)
    assert _cosine(stream.finish(), model.extract_embedding(audio, sample_rate=16000)) >= 1 - 1e-4
    assert _cosine(updates[-1].recent, model.extract_embedding(audio[-3 * 16000:], sample_rate=16000)) >= 1 - 1e-4
    stream.reset()
    assert stream.seconds == 0
    with pytest.raises(AudioError, match="shorter than"):
        stream.finish()


def test_bad_chunks_and_models_that_need_the_future_are_refused(default_model):
    stream = StreamingEmbedder(default_model)
    with pytest.raises(AudioError, match="1-D float"):
        stream.push(np.zeros((2, 160), dtype=np.float32))
    with pytest.raises(AudioError, match="NaN"):
        stream.push(np.full(160, np.nan, dtype=np.float32))
    sliding = load_config(None, {"features": {"normalize": "sliding"},
                                 "model": {"name": "lstm_dvector", "hidden_size": 8, "proj_size": 4,
                                           "num_layers": 1, "embedding_dim": 4}})
    with pytest.raises(ModelError, match="sliding"):
        StreamingEmbedder(SpeakerModel(build_embedding_model(sliding), sliding))

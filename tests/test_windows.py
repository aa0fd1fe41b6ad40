"""The sliding-window embedder: times, bounded batches and chunks, the encoder contract, long audio."""
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

import voxprint.audio.io as audio_io
from voxprint.audio import load_audio
from voxprint.config import load_config
from voxprint.errors import AudioError
from voxprint.inference import SlidingWindowEmbedder, window_starts
from voxprint.inference.windows import LazyFeatures
from voxprint.models import build_embedding_model
from voxprint.registry import MODELS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def long_wave(train_dir) -> np.ndarray:
    """75 s of real speech: four speakers' utterances joined."""
    files = [f for spk in ("SPEAKER0001", "SPEAKER0005", "SPEAKER0006", "SPEAKER0026") for f in sorted((train_dir / spk).glob("*.flac"))]
    wave = np.concatenate([load_audio(f) for f in files])
    assert len(wave) >= 75 * 16000
    return wave[: 75 * 16000]


def test_windows_carry_their_times_in_seconds(small_model, speech_file):
    windows = small_model.extract_window_embeddings(speech_file)
    frames = small_model.model.frontend.num_frames(len(load_audio(speech_file)))
    starts = window_starts(frames, 160, 0.5)
    assert len(windows) == len(starts) > 2
    np.testing.assert_allclose(windows.starts, np.array(starts) * 0.01)
    # 160 frames of 25 ms every 10 ms span 1.615 s of audio.
    np.testing.assert_allclose(windows.ends - windows.starts, 1.615)
    assert windows.ends[-1] <= len(load_audio(speech_file)) / 16000
    np.testing.assert_allclose(np.linalg.norm(windows.embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(windows.utterance_embedding(), small_model.extract_embedding(speech_file), atol=1e-6)


def test_encoder_batches_are_bounded_and_do_not_change_the_result(small_model, long_wave):
    sizes: list[int] = []

    def spy(frames: torch.Tensor) -> torch.Tensor:
        sizes.append(frames.shape[0])
        return small_model.model.encode(frames)

    small = SlidingWindowEmbedder(small_model.model, 160, 0.5, batch_frames=16 * 160 + 100, encode=spy)(long_wave)
    assert max(sizes) == 16 and len(small) > 90
    whole = SlidingWindowEmbedder(small_model.model, 160, 0.5, batch_frames=10**9)(long_wave)
    np.testing.assert_allclose(small.embeddings, whole.embeddings, atol=1e-5)
    sizes.clear()
    SlidingWindowEmbedder(small_model.model, 3000, 0.5, batch_frames=10_000, encode=spy)(long_wave)
    assert max(sizes) == 3  # long windows: fewer per call, the same frame budget


@pytest.mark.parametrize("normalize", ["segment", "sliding"])
def test_chunked_features_equal_whole_features(long_wave, normalize):
    config = load_config(None, {"features": {"normalize": normalize},
                                "model": {"name": "lstm_dvector", "hidden_size": 8, "proj_size": 4,
                                          "num_layers": 1, "embedding_dim": 4}})
    model = build_embedding_model(config).eval()
    calls: list[int] = []
    frontend_forward = model.frontend.forward

    def counting(waves: torch.Tensor) -> torch.Tensor:
        calls.append(waves.shape[-1])
        return frontend_forward(waves)

    model.frontend.forward = counting
    embedder = SlidingWindowEmbedder(model, 160, 0.5, chunk_seconds=7.0)
    chunked = embedder.features(long_wave)
    if normalize == "segment":  # windows ask for frames as they go: the whole never exists
        assert isinstance(chunked, LazyFeatures) and len(calls) == 1
        windows = embedder(long_wave)
        assert max(calls) < 11 * 16000 and len(calls) > 10
        chunked = chunked[0:len(chunked)]
    else:  # sliding normalisation needs every frame: computed chunk by chunk into one tensor
        assert len(calls) == 11 and max(calls) < 8 * 16000  # 75 s: ten chunks of 7 s and one of 5 s
    with torch.no_grad():
        whole = model.features(torch.from_numpy(long_wave)[None])[0]
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=1e-5)
    if normalize == "segment":
        unchunked = SlidingWindowEmbedder(model, 160, 0.5, chunk_seconds=1000.0)(long_wave)
        np.testing.assert_allclose(windows.embeddings, unchunked.embeddings, atol=1e-5)


def _config_for(name: str) -> dict:
    """The features + model sections of the first shipped YAML using encoder ``name``."""
    for path in sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "recipes").rglob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        if raw.get("model", {}).get("name") == name:
            return {key: raw[key] for key in ("features", "model", "sample_rate", "inference") if key in raw}
    return {"model": {"name": name}}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_encoder_follows_the_contract(name, speech_file):
    """frames (B, F, D) of equal length -> (B, embedding_dim) float32; a row depends on its segment only."""
    torch.manual_seed(0)
    config = load_config(None, _config_for(name))
    model = build_embedding_model(config).eval()
    wave = load_audio(speech_file)[: 3 * 16000]
    with torch.no_grad():
        feats = model.features(torch.from_numpy(wave)[None])[0]
        window = min(int(config["inference"]["window_frames"]), feats.shape[0] // 2)
        segments = torch.stack([feats[:window], feats[window:2 * window]])
        batch = model.encode(segments)
        alone = model.encode(segments[1:])
    assert batch.shape == (2, model.encoder.embedding_dim) and batch.dtype == torch.float32
    assert torch.isfinite(batch).all()
    torch.testing.assert_close(batch[1:], alone, atol=1e-4, rtol=1e-4)
    embedder = SlidingWindowEmbedder(model, window, 0.5)
    windows = embedder(wave)
    assert len(windows) >= 3 and windows.embeddings.shape[1] == model.encoder.embedding_dim
    np.testing.assert_allclose(np.linalg.norm(windows.embeddings, axis=1), 1.0, atol=1e-4)


def test_long_files_are_streamed_with_the_same_result(monkeypatch, fsdd_dir, tmp_path):
    """An 8 kHz file decoded and resampled block by block equals the one-shot decode."""
    path = sorted((fsdd_dir / "george").glob("*.flac"))[0]
    whole = load_audio(path, target_rate=16000)
    monkeypatch.setattr(audio_io, "_STREAM_SAMPLES", 1000)
    monkeypatch.setattr(audio_io, "_BLOCK_FRAMES", 512)
    streamed = load_audio(path, target_rate=16000)
    assert abs(len(streamed) - len(whole)) <= 1
    n = min(len(streamed), len(whole))
    np.testing.assert_allclose(streamed[:n], whole[:n], atol=2e-3)
    # A stereo file is mixed down the same way when streamed.
    wave, rate = soundfile.read(path, dtype="float32")
    soundfile.write(tmp_path / "stereo.wav", np.stack([wave, 0.5 * wave], axis=1), rate)
    mixed = load_audio(tmp_path / "stereo.wav", target_rate=rate)
    np.testing.assert_allclose(mixed, 0.75 * wave, atol=1e-4)


def test_a_file_over_the_duration_limit_is_refused_before_decoding(monkeypatch, speech_file):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file that its header already ruled out")

    monkeypatch.setattr(audio_io.sf, "read", no_decoding)
    with pytest.raises(AudioError, match="limit"):
        load_audio(speech_file, max_seconds=1.0)
    with pytest.raises(AudioError, match="limit"):
        load_audio(np.zeros(32000, dtype=np.float32), sample_rate=16000, max_seconds=1.0)


@pytest.mark.parametrize("name", MODELS.names())
def test_an_encoder_that_claims_exact_padding_embeds_padded_segments_as_unpadded_ones(name, speech_file):
    """Encoders declaring ``exact_padding`` take zero-padded segments with their lengths and give each one's
    unpadded embedding; the others refuse lengths (they would let the padding change the embedding)."""
    torch.manual_seed(0)
    model = build_embedding_model(load_config(None, _config_for(name))).eval()
    for module in model.modules():  # batch norms with a shift make any padding leak visibly
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    wave = load_audio(speech_file)[: 3 * 16000]
    with torch.no_grad():
        feats = model.features(torch.from_numpy(wave)[None])[0]
        lengths = [120, 97, 60]
        segments = [feats[:n] for n in lengths]
        padded = torch.nn.utils.rnn.pad_sequence(segments, batch_first=True)
        if not model.exact_padding:
            with pytest.raises(ValueError, match="cannot embed padded segments"):
                model.encode(padded, torch.tensor(lengths))
            return
        together = model.encode(padded, torch.tensor(lengths))
        alone = torch.cat([model.encode(s[None]) for s in segments])
        ignoring_lengths = model.encode(padded)
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)
    assert (ignoring_lengths[1:] - alone[1:]).abs().max() > 1e-2  # what the lengths prevent


def test_windows_of_different_lengths_share_padded_calls_on_several_threads(dev_dir):
    """With two torch threads the bundled ECAPA-TDNN embeds recordings of different lengths in shared
    (padded) calls, traced, with each recording's own embedding; on one thread each length is its own call,
    through the plain trace."""
    import voxprint

    waves = [load_audio(f) for f in sorted((dev_dir / "SPEAKER5017").glob("*.flac"))[:6]]
    assert len({len(w) for w in waves}) == len(waves)
    model = voxprint.load_model("default").optimize()
    calls = []
    embedder = model.windows
    plain, padded = embedder.encode, embedder.encode_padded
    embedder.encode = lambda feats: calls.append(len(feats)) or plain(feats)
    embedder.encode_padded = lambda feats, lengths: calls.append(len(feats)) or padded(feats, lengths)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        shared = embedder.embed_many(waves)
        calls_shared = list(calls)
        torch.set_num_threads(1)
        calls.clear()
        separate = embedder.embed_many(waves)
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == len(waves) and len(calls_shared) < len(waves) and max(calls_shared) > 1
    # Both calls ran traces (the padded one made on first use) that passed their checks against the model.
    assert model._encode is not model.model.encode and model._encode_padded not in (None, model.model.encode)
    for a, b in zip(shared, separate):
        np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)

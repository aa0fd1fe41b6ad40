"""Diarization: clustering, the eigengap count, RTTM files, scoring against hand-computed DERs, the
conversation simulator, Silero VAD, the real-speech pipeline end to end, named speakers, spot and the CLI."""
import json

import numpy as np
import pytest

import voxprint
from voxprint.cli import main
from voxprint.data import read_data_folder
from voxprint.diarization import (
    Segment,
    diarize,
    read_rttm,
    score_diarization,
    simulate_conversations,
    spot,
    write_rttm,
)
from voxprint.diarization import clustering, simulate, vad
from voxprint.audio import load_audio
from voxprint.classical.gmm import DiagonalGMM
from voxprint.diarization.pipeline import diarization_partner, embed_speech, partner_space
from voxprint.diarization.resegment import resegment
from voxprint.diarization.segments import labels_to_segments
from voxprint.errors import DataError, VoxprintError
from voxprint.store import SpeakerStore

# Two dev speakers (unseen in training) and the utterances each says in the test conversation; the
# others enroll them.
SPEAKERS = ("so0024", "so1109")


@pytest.fixture(scope="module")
def model():
    return voxprint.load_model("default")


@pytest.fixture(scope="module")
def dev(dev_dir):
    return read_data_folder(dev_dir)


@pytest.fixture(scope="module")
def conversation(tmp_path_factory, dev):
    """A 2-speaker conversation with light overlap (three turns each), written as a WAV + RTTM folder."""
    utterances = {s: [(u, dev.wav[u]) for u in dev.spk2utt[s][:3]] for s in SPEAKERS}
    conv = simulate.simulate_conversation(utterances, "light", np.random.default_rng(3))
    out = tmp_path_factory.mktemp("conversation")
    import soundfile

    soundfile.write(out / "conv.wav", conv.wave, conv.sample_rate)
    write_rttm(out / "ref.rttm", {"conv": conv.segments})
    return out, conv


# ----------------------------------------------------------------------------------------------- clustering

def turns(centres: np.ndarray, order: list[int], per_turn: int, rng: np.random.Generator, noise: float):
    """Window embeddings of speakers taking turns: ``per_turn`` noisy windows of each turn's speaker."""
    x = np.concatenate([centres[s] + noise * rng.normal(size=(per_turn, centres.shape[1])) for s in order])
    return x, np.repeat(order, per_turn)


@pytest.mark.parametrize("speakers", [2, 3, 4])
def test_spectral_clustering_finds_speakers_and_their_count(speakers):
    rng = np.random.default_rng(speakers)
    centres = rng.normal(size=(speakers, 32))
    order = [i % speakers for i in range(4 * speakers)]
    x, truth = turns(centres, order, 8, rng, noise=0.25)
    labels = clustering.cluster_embeddings(x)
    # The same partition as the truth, whatever the numbering.
    assert len(set(labels)) == speakers
    assert len(set(zip(labels, truth))) == speakers


def test_the_count_is_one_for_one_voice_and_the_constraints_hold():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32))
    x, _ = turns(centres, [0, 1, 2, 0, 1, 2], 10, rng, noise=0.25)
    one = centres[0] + 0.25 * rng.normal(size=(60, 32))
    assert set(clustering.cluster_embeddings(one)) == {0}
    assert len(set(clustering.cluster_embeddings(x, num_speakers=2))) == 2
    assert len(set(clustering.cluster_embeddings(x, max_speakers=2))) == 2
    # One voice forced into several: the count obeys the bounds (noise gives no meaningful eigengap).
    assert 2 <= len(set(clustering.cluster_embeddings(one, min_speakers=2))) <= 8
    assert len(set(clustering.cluster_embeddings(one, min_speakers=2, max_speakers=2))) == 2
    assert len(set(clustering.cluster_embeddings(x, "ahc"))) == 3
    assert set(clustering.cluster_embeddings(one, "ahc")) == {0}
    with pytest.raises(VoxprintError, match="min_speakers"):
        clustering.cluster_embeddings(x, min_speakers=3, max_speakers=2)
    with pytest.raises(VoxprintError, match="unknown clustering method"):
        clustering.cluster_embeddings(x, "kmeans")


def test_clusters_that_the_single_speaker_test_calls_one_voice_are_merged():
    # One voice in two styles (centroids at cosine 0.85), each tight enough to be its own community in the
    # neighbour graph, and a second voice: the eigengap counts three, the merge check two.
    rng = np.random.default_rng(0)
    a, other, b = rng.normal(size=(3, 32))
    a /= np.linalg.norm(a)
    other -= (other @ a) * a
    a_style = 0.85 * a + np.sqrt(1 - 0.85 ** 2) * other / np.linalg.norm(other)
    x, truth = turns(np.stack([a, a_style, b]), [0, 2, 1, 2, 0, 2, 1, 2], 10, rng, noise=0.08)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    values = np.linalg.eigvalsh(np.eye(len(x)) - _normalised(clustering.neighbour_graph(unit).toarray()))
    assert int(np.argmax(np.diff(values[1:9]))) + 2 == 3
    labels = clustering.spectral_clustering(x)
    assert len(set(labels)) == 2 and len(set(zip(labels, np.where(truth == 1, 0, truth)))) == 2
    # A given count is kept as given.
    assert len(set(clustering.spectral_clustering(x, num_speakers=3))) == 3


def test_the_graph_spectrum_of_isolated_windows_is_found():
    # A 9-window graph (from a one-speaker recording) with three isolated windows: its eigenvalues repeat exactly,
    # and LAPACK's subset solver fails on it ("Internal Error"); the spectrum still comes out.
    from scipy.sparse import csr_matrix

    rows, cols, values = zip(*[(0, 4, 0.06584367810012967), (0, 8, 0.057106504695744235), (1, 8, 0.1738345747595603),
                               (2, 5, 0.07935773333315393)])
    graph = csr_matrix((values, (rows, cols)), shape=(9, 9))
    eigenvalues, vectors = clustering._laplacian_eigen((graph + graph.T).tocsr(), 2)
    assert np.allclose(eigenvalues, 0.0, atol=1e-9) and vectors.shape == (9, 2)


def _normalised(graph: np.ndarray) -> np.ndarray:
    scale = 1.0 / np.sqrt(graph.sum(axis=1))
    return scale[:, None] * graph * scale[None, :]


def test_eigengap_count_and_the_neighbour_graph():
    assert clustering.eigengap_count(np.array([5.0, 4.8, 1.0, 0.9, 0.5])) == 2
    assert clustering.eigengap_count(np.array([5.0, 4.8, 4.7, 0.3, 0.2]), min_count=2, max_count=4) == 3
    # Eigenvalues below 0.01 never count as a cluster.
    assert clustering.eigengap_count(np.array([5.0, 0.005, 0.00001])) == 1
    # Windows that share audio are never each other's neighbours.
    x = np.array([[1.0, 0.0], [1.0, 0.01], [0.9, 0.1], [0.0, 1.0]])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    graph = clustering.neighbour_graph(x, 1, starts=np.array([0.0, 0.5, 5.0, 9.0]),
                                       ends=np.array([1.0, 1.5, 6.0, 10.0])).toarray()
    assert graph[0, 1] == 0 and graph[0, 2] > 0


def test_wang_refinement_agrees_with_the_spectralcluster_package():
    configs = pytest.importorskip("spectralcluster.configs")
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 16))
    x, _ = turns(centres, [0, 1, 2, 1, 0, 2], 6, rng, noise=0.1)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    ours = clustering.wang_clustering(unit, min_speakers=2, max_speakers=7)
    theirs = configs.icassp2018_clusterer.predict(unit)
    assert len(set(zip(ours, theirs))) == len(set(ours)) == len(set(theirs)) == 3
    # The refinement itself: crop diagonal, blur, row threshold, symmetrise, diffuse, normalise.
    refined = clustering.refine_affinity(unit)
    reference = (1 + unit @ unit.T) / 2
    for name in configs.ICASSP2018_REFINEMENT_SEQUENCE:
        reference = configs.icassp2018_refinement_options.get_refinement_operator(name).refine(reference)
    np.testing.assert_allclose(refined, reference, atol=1e-10)


# ------------------------------------------------------------------------------------------------ RTTM

def test_rttm_round_trip_and_malformed_lines(tmp_path):
    files = {"call_1": [Segment(0.0, 1.25, "alice"), Segment(1.1, 3.0, "bob")], "call_2": [Segment(2.5, 2.75, "a")]}
    path = write_rttm(tmp_path / "x.rttm", files)
    assert read_rttm(path) == files
    assert path.read_text().splitlines()[1] == "SPEAKER call_1 1 1.100 1.900 <NA> <NA> bob <NA> <NA>"
    (tmp_path / "bad.rttm").write_text("SPKR-INFO f 1 <NA> <NA> <NA> unknown a <NA>\nSPEAKER f 1 x 1 <NA> <NA> a\n")
    with pytest.raises(DataError, match=r"bad.rttm:2: start and duration must be numbers"):
        read_rttm(tmp_path / "bad.rttm")
    with pytest.raises(DataError, match="without spaces"):
        write_rttm(tmp_path / "y.rttm", {"my call": files["call_2"]})
    assert labels_to_segments(np.array([0, 0, -1, 1]), 0.5, ["a", "b"]) == [Segment(0.0, 1.0, "a"),
                                                                            Segment(1.5, 2.0, "b")]


# --------------------------------------------------------------------------------------------- scoring

def test_der_matches_hand_computed_cases():
    ref = {"f": [Segment(0, 10, "A"), Segment(10, 20, "B")]}
    perfect = score_diarization(ref, {"f": [Segment(0, 10, "x"), Segment(10, 20, "y")]}, collar=0)
    assert perfect.der == 0 and perfect.count_accuracy == 1
    # 2 s of B called A: confusion 2 / 20.
    shifted = {"f": [Segment(0, 12, "x"), Segment(12, 20, "y")]}
    assert score_diarization(ref, shifted, collar=0).confusion == pytest.approx(0.1)
    # md-eval collar: 0.25 s each side of the boundaries at 0, 10 and 20 is not scored (1 s in all).
    near = {"f": [Segment(0, 10.2, "x"), Segment(10.2, 20, "y")]}
    assert score_diarization(ref, near, collar=0.25).der == 0
    assert score_diarization(ref, near, collar=0).der == pytest.approx(0.2 / 20)
    # 3 s missed at the start, 1 s of false alarm after the end; one speaker found for two: x maps to B
    # (10 s shared, against A's 7), so A's 7 remaining seconds are confused.
    partial = score_diarization(ref, {"f": [Segment(3, 21, "x")]}, collar=0)
    assert (partial.missed, partial.false_alarm) == (pytest.approx(0.15), pytest.approx(0.05))
    assert partial.confusion == pytest.approx(0.35) and partial.count_accuracy == 0
    # Overlap counts once per speaker unless skipped: 12 s of reference speech, 2 s of it overlapped.
    ref_overlap = {"f": [Segment(0, 6, "A"), Segment(4, 10, "B")]}
    single = {"f": [Segment(0, 5, "x"), Segment(5, 10, "y")]}
    scored = score_diarization(ref_overlap, single, collar=0)
    assert scored.missed == pytest.approx(2 / 12) and scored.confusion == pytest.approx(0)
    assert score_diarization(ref_overlap, single, collar=0, skip_overlap=True).der == pytest.approx(0)
    # JER: each speaker's Jaccard error, averaged (A: 5/6 right, B: 5/6 right).
    assert scored.jer == pytest.approx(1 - 5 / 6)
    with pytest.raises(DataError, match="not in the reference"):
        score_diarization(ref, {"g": []})


# -------------------------------------------------------------------------------------------- simulator

def test_the_turn_statistics_are_those_of_the_real_sample(data_dir):
    stats = simulate.turn_statistics(read_rttm(data_dir / "pyannote-sample" / "sample.rttm")["sample"])
    assert np.mean(stats["change_pauses"]) == pytest.approx(simulate.PAUSE_MEAN, abs=1e-3)
    assert np.mean(stats["change_overlaps"]) == pytest.approx(simulate.OVERLAP_MEAN, abs=1e-3)
    changes = len(stats["change_pauses"]) + len(stats["change_overlaps"])
    assert len(stats["change_overlaps"]) / changes == simulate.OVERLAP_PROBABILITY["heavy"]
    assert stats["same_pauses"] == []


def test_the_simulators_rttm_matches_its_audio(tmp_path, dev_dir):
    ids = simulate_conversations(dev_dir, tmp_path, num=2, speakers=(2, 3), overlap="none", seed=4,
                                 utterances_per_speaker=2)
    reference = read_rttm(tmp_path / "rttm")
    assert list(reference) == ids and (tmp_path / "wav.scp").read_text().split()[:2] == [ids[0], f"wav/{ids[0]}.wav"]
    import soundfile

    for file_id in ids:
        wave, rate = soundfile.read(tmp_path / "wav" / f"{file_id}.wav", dtype="float32")
        # 20 ms frames wholly inside or wholly outside the reference segments.
        frames = wave[:len(wave) // 320 * 320].reshape(-1, 320)
        inside = np.zeros(len(wave), dtype=np.int8)
        for seg in reference[file_id]:
            inside[int(seg.start * rate):int(seg.end * rate)] = 1
        share = inside[:frames.size].reshape(-1, 320).mean(axis=1)
        level = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
        speech, rest = np.median(level[share == 1]), level[share == 0]
        # Speech where the RTTM says so, near-silence elsewhere (the source recordings' own pauses and the
        # 0.1 s kept around each utterance may hold a breath or a hum the VAD did not call speech).
        assert speech - np.median(rest) > 20, file_id
        assert np.mean(rest < speech - 10) > 0.75, file_id
        # No overlap asked for: no two speakers at once.
        segments = reference[file_id]
        for a in segments:
            assert not any(b.speaker != a.speaker and b.start < a.end and a.start < b.end for b in segments)
    record = json.loads((tmp_path / "simulation.json").read_text())
    assert record["overlap_probability"] == 0 and len(record["conversations"]) == 2


def test_noise_and_reverberation_keep_the_turns_and_add_what_they_say(tmp_path, dev_dir):
    """The same seed gives the same reference with or without acoustics; the noise sits at the stated SNR
    in the gaps, and reverberation spreads each utterance's energy past its end."""
    import soundfile

    options = dict(num=1, speakers=2, overlap="none", seed=5, utterances_per_speaker=2)
    dry_ids = simulate_conversations(dev_dir, tmp_path / "dry", **options)
    noisy = simulate_conversations(dev_dir, tmp_path / "noisy", snr_db=10.0, **options)
    wet = simulate_conversations(dev_dir, tmp_path / "wet", reverb=True, rir_cache=tmp_path / "rirs.npz", **options)
    # The impulse-response bank is one for every seed: its cache serves another simulation.
    simulate_conversations(dev_dir, tmp_path / "wet2", reverb=True, rir_cache=tmp_path / "rirs.npz",
                           **{**options, "seed": 6})
    reference = read_rttm(tmp_path / "dry" / "rttm")[dry_ids[0]]
    assert read_rttm(tmp_path / "noisy" / "rttm")[noisy[0]] == reference
    assert read_rttm(tmp_path / "wet" / "rttm")[wet[0]] == reference
    record = json.loads((tmp_path / "noisy" / "simulation.json").read_text())
    assert record["snr_db"] == 10.0 and record["reverb"] is False

    def wave_of(folder):
        return soundfile.read(tmp_path / folder / "wav" / f"{dry_ids[0]}.wav", dtype="float64")[0]

    dry, noise_mix, reverberant = wave_of("dry"), wave_of("noisy"), wave_of("wet")
    lead = slice(0, int(0.4 * 16000))  # before the first turn: only the background
    gap_db = 10 * np.log10(np.mean(noise_mix[lead] ** 2))
    assert gap_db == pytest.approx(simulate.LEVEL_DBFS - 10.0, abs=2.0)
    assert 10 * np.log10(np.mean(dry[lead] ** 2)) < gap_db - 15
    # The 0.25 s after the last speech mark: dry, only the quiet floor and the kept margin; wet, the room's tail.
    end = int(max(seg.end for seg in reference) * 16000) + int(simulate.MARGIN * 16000)
    tail = slice(end, end + 4000)
    assert np.mean(reverberant[tail] ** 2) > 3 * np.mean(dry[tail] ** 2)


# --------------------------------------------------------------------------------------------------- VAD

def test_batched_silero_matches_silero_and_the_energy_fallback(conversation, monkeypatch):
    silero_vad = pytest.importorskip("silero_vad")
    import torch

    wave = conversation[1].wave[:16000 * 4]
    theirs = silero_vad.load_silero_vad(onnx=False).audio_forward(torch.from_numpy(wave), 16000)[0].numpy()
    np.testing.assert_allclose(vad.SileroVAD(16000).probabilities(wave), theirs, atol=1e-4)
    monkeypatch.setattr(vad, "silero_available", lambda: False)
    regions = vad.speech_regions(conversation[1].wave, 16000)  # auto -> energy
    speech = sum(s.duration for s in conversation[1].segments)
    assert abs(sum(e - s for s, e in regions) - speech) < 0.25 * speech
    with pytest.raises(VoxprintError, match="silero-vad"):
        vad.speech_regions(wave, 16000, method="silero")


# ------------------------------------------------------------------------------------------- end to end

def test_real_speech_conversation_is_diarized(model, conversation):
    folder, conv = conversation
    result = diarize(model, folder / "conv.wav")
    assert result.speakers == ["spk1", "spk2"] and set(result.embeddings) == {"spk1", "spk2"}
    score = score_diarization({"conv": conv.segments}, {"conv": result.segments}, collar=0.25)
    assert score.der < 0.10, score.to_dict()
    assert read_rttm_text(result.to_rttm("conv")) == result.segments


def test_the_bundled_model_fuses_its_windows_with_the_bundled_ivector(model, conversation):
    partner = diarization_partner(model)
    assert partner.model_dir.name == "ivector" and partner.stores_embeddings
    assert diarization_partner(model, None) is None and diarization_partner(partner) is None  # it names none
    with pytest.raises(VoxprintError, match="fuse_with must be"):
        diarization_partner(model, "ivector")
    wave = load_audio(conversation[0] / "conv.wav")
    alone, fused = embed_speech(model, wave), embed_speech(model, wave, fuse_with=partner)
    assert alone.partner is None and fused.partner.shape == (len(fused), partner.backend.plda.dim)
    np.testing.assert_array_equal(fused.starts, alone.starts)
    np.testing.assert_array_equal(fused.embeddings, alone.embeddings)
    # The partner rows are the i-vectors of the same windows, in the i-vector's PLDA space.
    first = wave[int(round(fused.starts[0] * 16000)):int(round(fused.ends[0] * 16000))]
    direct = partner_space(partner)(partner.extract_embedding(first, sample_rate=16000)[None])[0]
    np.testing.assert_allclose(fused.partner[0], direct, atol=1e-4)
    # The clustering compares windows by the weighted mean of the two models' cosines.
    vectors, own = fused.clustering_vectors(0.3), alone.clustering_vectors()
    other = fused.partner / np.linalg.norm(fused.partner, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors @ vectors.T, 0.7 * own @ own.T + 0.3 * other @ other.T, atol=1e-6)

    class EightKilohertz:
        sample_rate = 8000

    with pytest.raises(VoxprintError, match="8000 Hz"):
        embed_speech(model, wave, fuse_with=EightKilohertz())


def test_resegmentation_moves_turn_boundaries_to_the_voices(model, dev, conversation):
    # 33 s, six utterances each: enough speech per speaker for the GMMs (re-segmentation needs 10 s each).
    utterances = {s: [(u, dev.wav[u]) for u in dev.spk2utt[s][:6]] for s in SPEAKERS}
    conv = simulate.simulate_conversation(utterances, "light", np.random.default_rng(3))
    reference = {"conv": conv.segments}
    rough = diarize(model, conv.wave, sample_rate=conv.sample_rate, resegment=False)
    fine = diarize(model, conv.wave, sample_rate=conv.sample_rate)
    before = score_diarization(reference, {"conv": rough.segments}, collar=0.0)
    after = score_diarization(reference, {"conv": fine.segments}, collar=0.0)
    assert after.confusion < 0.8 * before.confusion, (before.confusion, after.confusion)
    assert fine.speakers == rough.speakers  # the same speakers, and the same speech (only labels move)
    speech = [sum(s.duration for s in r.segments) for r in (rough, fine)]
    assert speech[0] == pytest.approx(speech[1], abs=0.02)
    # The short conversation (about 8 s per speaker) is left as the clustering made it.
    short = conversation[0] / "conv.wav"
    assert diarize(model, short).segments == diarize(model, short, resegment=False).segments


@pytest.mark.parametrize("separated", [True, False])
def test_frame_models_add_the_speaker_the_eigengap_missed(separated):
    # Three speakers in 10 s turns; to the embedder two of them are nearly one voice, so the eigengap counts two.
    # Their frames (here 1-D) differ when `separated`: the frame models then add the third speaker, and only then.
    from voxprint.diarization.pipeline import SpeechWindows, _grow_count, cluster_windows, frame_labels

    rng = np.random.default_rng(0)
    turns = [0, 1, 2] * 3
    seconds = 10.0 * len(turns)
    starts = np.arange(0.0, seconds - 1.5 + 1e-9, 0.75)
    voice = np.array([turns[int((start + 0.75) // 10)] for start in starts])
    axes = np.eye(16)
    centres = np.stack([axes[0], axes[1] + 0.35 * axes[2], axes[1] - 0.35 * axes[2]])
    embeddings = centres[voice] + 0.3 * rng.normal(size=(len(voice), 16))
    windows = SpeechWindows(np.array([[0.0, seconds]]), embeddings.astype(np.float32), starts, starts + 1.5,
                            np.zeros(len(voice), dtype=np.int64), seconds)
    labels = cluster_windows(windows, 1.5)
    assert labels.max() + 1 == 2
    truth = np.repeat(turns, 1000)
    frames = (np.array([-2.0, 0.0, 2.0 if separated else 0.0])[truth] + rng.normal(size=len(truth)))[:, None]
    ubm = DiagonalGMM(np.full(4, 0.25), np.array([[-3.0], [-1.0], [1.0], [3.0]]), np.full((4, 1), 1.5))
    grown, per_frame = _grow_count(windows, 1.5, labels, resegment(frame_labels(windows, labels), frames, ubm),
                                   frames, ubm, max_speakers=8, method="spectral")
    assert grown.max() + 1 == (3 if separated else 2)
    if separated:  # each speaker's frames mostly carry a label of their own
        majority = [np.bincount(per_frame[:len(truth)][truth == s]).argmax() for s in range(3)]
        assert sorted(majority) == [0, 1, 2]
    assert _grow_count(windows, 1.5, labels, frame_labels(windows, labels), frames, ubm, max_speakers=2,
                       method="spectral")[0].max() + 1 == 2  # the bound holds


def test_resegment_relabels_speech_only_among_the_given_speakers():
    rng = np.random.default_rng(1)
    ubm = DiagonalGMM(np.array([0.5, 0.5]), np.array([[-1.0], [1.0]]), np.full((2, 1), 4.0))
    truth = np.repeat([0, -1, 1, 0], [300, 100, 300, 300])
    frames = np.where(truth == 1, 1.5, -1.5)[:, None] + rng.normal(size=(len(truth), 1))
    rough = np.where(truth >= 0, np.repeat([0, 1, 0], [250, 450, 300]), -1)
    fixed = resegment(rough, frames, ubm, min_speaker_frames=100)
    assert np.array_equal(fixed < 0, truth < 0) and set(fixed[fixed >= 0]) == {0, 1}
    assert (fixed != truth).sum() < 0.3 * (rough != truth).sum()
    # Too little speech of a speaker (below 10 s by default here): nothing changes.
    assert np.array_equal(resegment(rough, frames, ubm), rough)
    assert np.array_equal(resegment(np.where(truth >= 0, 0, -1), frames, ubm), np.where(truth >= 0, 0, -1))
    longer = np.concatenate([rough, [0, 0, -1]])  # more labels than frames: the extra ones are kept
    assert np.array_equal(resegment(longer, frames, ubm, min_speaker_frames=100)[-3:], [0, 0, -1])


def read_rttm_text(text: str) -> list[Segment]:
    lines = [line.split() for line in text.splitlines()]
    return [Segment(float(f[3]), round(float(f[3]) + float(f[4]), 6), f[7]) for f in lines]


def test_named_speakers_from_a_store(model, dev, conversation, tmp_path):
    store = SpeakerStore(tmp_path / "s.db", model)
    enroll = dev.spk2utt[SPEAKERS[0]][3:6]
    store.enroll("alice", [dev.wav[u] for u in enroll], sources=enroll)
    result = diarize(model, conversation[0] / "conv.wav", store=store)
    assert sorted(result.speakers) == ["alice", "unknown-1"]
    score = score_diarization({"c": [Segment(s.start, s.end, "alice" if s.speaker == SPEAKERS[0] else "x")
                                     for s in conversation[1].segments]},
                              {"c": [Segment(s.start, s.end, s.speaker if s.speaker == "alice" else "x")
                                     for s in result.segments]}, collar=0.25)
    assert score.der < 0.10 and result.identities["alice"]["speaker"] == "alice"


def test_spot_finds_the_target_speakers_segments(model, dev, conversation):
    target_name, other = SPEAKERS
    target = model.extract_embeddings([dev.wav[u] for u in dev.spk2utt[target_name][3:6]])
    result = spot(model, conversation[0] / "conv.wav", target, target_name)
    truth = [s for s in conversation[1].segments if s.speaker == target_name]
    others = [s for s in conversation[1].segments if s.speaker == other]

    def shared(a, b):
        return sum(max(0.0, min(x.end, y.end) - max(x.start, y.start)) for x in a for y in b)

    assert shared(result.segments, truth) > 0.8 * sum(s.duration for s in truth)
    assert shared(result.segments, others) < 0.2 * sum(s.duration for s in others)
    assert [v["target"] for v in result.voices].count(True) == 1
    stranger = model.extract_embeddings([dev.wav[u] for u in dev.spk2utt["so5220"][:2]])
    assert spot(model, conversation[0] / "conv.wav", stranger, "nobody").segments == []


def test_spot_scores_a_stored_speaker_as_verify_does(model, dev, conversation, tmp_path):
    # A speaker enrolled three times is scored by the exact 3-utterance model, not by its centroid as one
    # utterance: the voice spot finds has the score verify --store gives to the same audio.
    from voxprint.diarization.spot import MIN_SCORED_SECONDS

    target_name = SPEAKERS[0]
    store = SpeakerStore(tmp_path / "s.db", model)
    enroll = dev.spk2utt[target_name][3:6]
    store.enroll("alice", [dev.wav[u] for u in enroll], sources=enroll)
    rows = store.enrollment_embeddings("alice")
    assert rows.shape == (3, model.embedding_dim)
    wave = model.load_waveform(conversation[0] / "conv.wav")
    result = spot(model, wave, rows, "alice", sample_rate=model.sample_rate)
    voice = next(v for v in result.voices if v["target"])
    rate = model.sample_rate
    pieces = []
    for seg in (s for s in result.segments if s.end - s.start >= MIN_SCORED_SECONDS):
        pieces.append(wave[int(round(seg.start * rate)):int(round(seg.end * rate))])
    assert len(pieces) == len(result.segments)  # every segment long enough: the join is spot's
    verified = store.verify("alice", np.concatenate(pieces))["score"]
    assert voice["score"] == pytest.approx(verified, abs=1e-3)
    one_utterance = float(model.backend.score(store.speaker("alice").centroid[None], model.extract_embedding(
        np.concatenate(pieces), sample_rate=rate)))
    assert abs(one_utterance - verified) > 0.1  # the centroid as one utterance is another score


# --------------------------------------------------------------------------------------------------- CLI

def test_cli_diarize_eval_and_spot(conversation, tmp_path, dev, capsys):
    folder, _ = conversation
    hyp, plot = tmp_path / "hyp.rttm", tmp_path / "t.png"
    assert main(["diarize", str(folder / "conv.wav"), "--out", str(hyp), "--plot", str(plot), "--ref",
                 str(folder / "ref.rttm"), "--threads", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["speakers"] == {"conv": ["spk1", "spk2"]} and plot.stat().st_size > 0
    assert main(["eval-diarization", "--ref", str(folder / "ref.rttm"), "--hyp", str(hyp), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["der"] < 0.10 and "collar 0.25 s" in record["protocol"] and record["per_file"][0]["file"] == "conv"
    assert main(["eval-diarization", "--ref", str(folder / "ref.rttm"), "--hyp", str(hyp), "--skip-overlap"]) == 0
    assert capsys.readouterr().out.startswith("protocol: collar 0.25 s on each side of reference boundaries "
                                              "(md-eval -c 0.25), overlapped speech not scored")
    assert main(["diarize", str(folder / "conv.wav"), "--fuse-with", "none", "--num-speakers", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_speakers"] == 2
    enroll = [str(dev.wav[u]) for u in dev.spk2utt["so5220"][:2]]
    assert main(["spot", str(folder / "conv.wav"), "--enroll", *enroll, "--threads", "1", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["found"] is False


@pytest.mark.parametrize("argv,needle", [
    (["diarize", "a.wav", "--num-speakers", "2", "--min-speakers", "1"], "not both"),
    (["diarize", "a.wav", "--out", "x.txt"], "must end in .rttm"),
    (["diarize", "a/x.wav", "b/x.flac"], "would both be RTTM file 'x'"),
    (["diarize", "a.wav", "--ref", "r.rttm"], "give --plot too"),
    (["spot", "a.wav", "--store", "s.db"], "--store needs --speaker"),
])
def test_cli_arguments_are_checked_before_any_work(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1

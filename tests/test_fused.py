"""A fusion of models used as one (voxprint/inference/fused.py, voxprint/backends/fused.py): the fused
embedding holds each part's own embedding, the fused score is the weighted sum of the parts' calibrated
scores everywhere (verification, trial lists, the speaker store and its search index), and the folder,
its CLI and its refusals, on real dev speech."""
import json
from pathlib import Path

import numpy as np
import pytest

import voxprint
from voxprint.backends.fused import join_parts, split_parts
from voxprint.cli import main
from voxprint.data import read_data_folder
from voxprint.data.trials import Trials
from voxprint.errors import DataError, ModelError
from voxprint.identification.scoring import FusedScoring, PLDAScoring
from voxprint.inference.fused import FUSION_FILE
from voxprint.store import SpeakerStore
from conftest import make_subset_folder


@pytest.fixture(scope="module")
def parts():
    return voxprint.load_model("default"), voxprint.load_model("ivector")


@pytest.fixture(scope="module")
def fused():
    return voxprint.load_model("fused")


@pytest.fixture(scope="module")
def folder(tmp_path_factory, dev_dir):
    """Four unseen speakers with four utterances each."""
    return read_data_folder(make_subset_folder(dev_dir, tmp_path_factory.mktemp("dev4"), speakers=4, utterances=4))


@pytest.fixture(scope="module")
def embedded(fused, parts, folder):
    """Each utterance embedded by the fusion and by each part alone."""
    utts = folder.utterances
    wavs = [folder.wav[u] for u in utts]
    return utts, fused.extract_embeddings(wavs), [p.extract_embeddings(wavs) for p in parts]


def test_split_parts_inverts_join_parts_and_refuses_another_width():
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((3, d)) for d in (4, 2))
    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    rows = join_parts([a, b])
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-6)
    for got, want in zip(split_parts(rows, (4, 2)), (a, b)):
        np.testing.assert_allclose(got, want, atol=1e-6)
    # The normalised mean of fused rows splits into each part's normalised mean (utterance embeddings).
    mean = rows.mean(axis=0)
    np.testing.assert_allclose(split_parts(mean / np.linalg.norm(mean), (4, 2))[1][0],
                               b.mean(axis=0) / np.linalg.norm(b.mean(axis=0)), atol=1e-6)
    with pytest.raises(DataError, match="6 values per row"):
        split_parts(rows[:, :5], (4, 2))


def test_fused_embedding_holds_each_parts_own_embedding(embedded):
    _, fused_rows, part_rows = embedded
    for got, want in zip(split_parts(fused_rows, (192, 64)), part_rows):
        assert float(np.min(np.sum(got * want, axis=1))) > 0.9999


def test_fused_trial_scores_are_the_sum_of_the_parts_calibrated_llrs(fused, parts, embedded):
    utts, fused_rows, part_rows = embedded
    trials = Trials(labels=None, enroll=np.array(utts[:6]), test=np.array(utts[6:12]))
    want = sum(p.backend.score_trials(utts, rows, trials) for p, rows in zip(parts, part_rows))
    np.testing.assert_allclose(fused.backend.score_trials(utts, fused_rows, trials), want, rtol=1e-4, atol=1e-3)
    # One test against three enrollments: the sum of each part's exact 3-utterance PLDA score.
    want = sum(p.backend.score(rows[:3], rows[3]) for p, rows in zip(parts, part_rows))
    assert fused.backend.score(fused_rows[:3], fused_rows[3]) == pytest.approx(want, rel=1e-4, abs=1e-3)
    assert fused.backend.scale.startswith("log-likelihood ratio")


def test_search_vectors_rank_speakers_by_the_fused_score(fused, embedded):
    _, rows, _ = embedded
    scoring = FusedScoring(fused.backend)
    models, counts = scoring.models([rows[0:3], rows[4:5], rows[8:12]])
    scores = scoring.scores(models, counts, rows[12:16])
    inner = scoring.query_vectors(rows[12:16]) @ scoring.search_vectors(models, counts).T
    # Every part is calibrated linearly and searched exactly, so the two differ by one constant.
    np.testing.assert_allclose(scores - inner, np.full_like(scores, (scores - inner)[0, 0]), atol=1e-6)


@pytest.mark.parametrize("kind", ["fused", "plda"])
def test_a_damaged_stored_model_is_derived_again(fused, embedded, kind):
    _, rows, _ = embedded
    scoring = FusedScoring(fused.backend) if kind == "fused" else PLDAScoring(fused.backend.parts[0])
    enrollments = rows[:3] if kind == "fused" else split_parts(rows[:3], (192, 64))[0]
    models, counts = scoring.models([enrollments])
    blob = scoring.encode(models[0], 3)
    np.testing.assert_array_equal(scoring.decode(blob, 3), models[0])
    nan = bytearray(blob)
    nan[-8:] = np.array([np.nan]).tobytes()
    other_tag = bytes([blob[0] ^ 1]) + blob[1:]
    for damaged in (blob[:-8], bytes(nan), other_tag):
        assert scoring.decode(damaged, 3) is None
    assert scoring.decode(blob, 4) is None  # made for another enrollment count


def test_store_identifies_and_verifies_with_the_fused_score(tmp_path, fused, embedded, folder):
    utts, rows, _ = embedded
    store = SpeakerStore(tmp_path / "fused.db", fused)
    for speaker in folder.speakers[:3]:
        enroll = folder.spk2utt[speaker][:3]
        store.enroll(speaker, [folder.wav[u] for u in enroll], sources=enroll)
    held_out = {s: folder.spk2utt[s][3] for s in folder.speakers}
    for speaker in folder.speakers[:3]:
        result = store.identify(folder.wav[held_out[speaker]])
        assert result.top[0].speaker == speaker
        # verify --store scores the stored exact models as the back-end scores the same enrollments.
        verdict = store.verify(speaker, folder.wav[held_out[speaker]])
        index = {u: i for i, u in enumerate(utts)}
        want = fused.backend.score(rows[[index[u] for u in folder.spk2utt[speaker][:3]]], rows[index[held_out[speaker]]])
        assert verdict["score"] == pytest.approx(want, rel=1e-4, abs=1e-3)
    # The store is bound to the fusion: a part alone is another model.
    with pytest.raises(voxprint.errors.StoreError, match="model"):
        SpeakerStore(tmp_path / "fused.db", fused.parts[0])


def test_fusion_identity_depends_on_parts_and_weights(tmp_path, fused, capsys):
    assert fused.identity not in {p.identity for p in fused.parts}
    assert voxprint.load_model("fused").identity == fused.identity
    assert main(["fuse-models", "default", "ivector", "--out", str(tmp_path / "heavy"), "--weights", "1", "2"]) == 0
    heavy = voxprint.load_model(tmp_path / "heavy")
    assert heavy.identity != fused.identity and heavy.fusion.weights == (1.0, 2.0)


def test_fuse_models_writes_a_loadable_folder_and_leaves_nothing_when_refused(tmp_path, capsys, dev_dir):
    out = tmp_path / "fz"
    assert main(["fuse-models", "default", "ivector", "--out", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["models"] == ["default", "ivector"] and record["embedding_dim"] == 256
    a, b = (str(dev_dir / "SPEAKER5017" / f"05017010{i}.flac") for i in (1, 2))
    assert main(["verify", "--model", str(out), "--enroll", a, "--test", b, "--threshold", "0", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["score"] == pytest.approx(voxprint.load_model("fused").verification_score([a], b), rel=1e-5)
    for argv, message in ((["default"], "two or more models"),
                          (["default", "ivector", "--weights", "1"], "one weight per model"),
                          (["default", str(tmp_path / "missing")], "neither a built-in model")):
        target = tmp_path / f"refused{len(argv)}{len(message)}"
        assert main(["fuse-models", *argv, "--out", str(target)]) != 0
        assert message in capsys.readouterr().err
        assert not target.exists()
    assert main(["fuse-models", "default", "ivector", "--out", str(out)]) != 0  # not an empty folder
    assert "not an empty folder" in capsys.readouterr().err


def test_a_fusion_refuses_what_does_not_apply(tmp_path, capsys, fused, dev_dir):
    assert main(["eval", "--model", "fused", "--data", str(dev_dir), "--backend", "cosine"]) != 0
    assert "own back-end" in capsys.readouterr().err
    with pytest.raises(ModelError, match="no back-end of its own"):
        fused.require_embedding_backend("fit-backend")
    assert main(["export", "--model", "fused", "--out", str(tmp_path / "onnx")]) != 0
    assert "fusion" in capsys.readouterr().err
    from voxprint.inference import StreamingEmbedder

    with pytest.raises(ModelError, match="does not stream"):
        StreamingEmbedder(fused)
    nested = tmp_path / "nested"
    nested.mkdir()
    (nested / FUSION_FILE).write_text(json.dumps({"format": "voxprint-linear-fusion", "version": 1, "offset": 0.0,
                                                  "p_target": 0.01, "systems": [{"name": "fused", "weight": 1.0},
                                                                                {"name": "ivector", "weight": 1.0}]}))
    with pytest.raises(ModelError, match="itself a fusion"):
        voxprint.load_model(nested)
    # A folder naming thousands of models is refused before any is loaded (each would be a model in memory).
    many = [{"name": f"part{i}", "weight": 1.0} for i in range(5000)]
    (nested / FUSION_FILE).write_text(json.dumps({"format": "voxprint-linear-fusion", "version": 1, "offset": 0.0,
                                                  "p_target": 0.01, "systems": many}))
    with pytest.raises(ModelError, match="names 5000 models; a fusion holds at most 8"):
        voxprint.load_model(nested)
    (nested / FUSION_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="not a readable fusion"):
        voxprint.load_model(nested)


def test_fused_windows_embed_each_window_as_each_part_would(fused, parts, folder, monkeypatch):
    from voxprint.inference import fused as fused_module

    monkeypatch.setattr(fused_module, "SEGMENTS_PER_CALL", 2)  # the second part's windows in several calls
    wave = fused.load_waveform(folder.wav[folder.utterances[0]])
    windows = fused.with_inference(window_frames=150, overlap=0.5).windows(wave)
    first = parts[0].with_inference(window_frames=150, overlap=0.5).windows(wave)
    assert len(windows) == len(first) >= 3
    np.testing.assert_array_equal(windows.starts, first.starts)
    ours, theirs = split_parts(windows.embeddings, (192, 64))
    np.testing.assert_allclose(ours, first.embeddings, atol=1e-5)
    rate = fused.sample_rate
    last = wave[int(round(windows.starts[-1] * rate)):]  # the last window's samples run to the end
    # The i-vector reads the window as it reads a recording: its own voice activity detection first.
    from voxprint.audio.vad import remove_silence

    want = parts[1].windows(remove_silence(last, rate, threshold_db=parts[1].vad_threshold_db)).utterance_embedding()
    assert float(theirs[-1] @ want) > 0.9999
    # Batched across recordings, the windows are those of each recording alone.
    other = fused.load_waveform(folder.wav[folder.utterances[1]])
    batched = fused.with_inference(window_frames=150, overlap=0.5).windows.embed_many([wave, other])
    np.testing.assert_allclose(batched[0].embeddings, windows.embeddings, atol=1e-5)


def test_cli_enroll_and_identify_with_the_fusion(tmp_path, capsys, folder):
    data = tmp_path / "enroll"
    data.mkdir()
    enroll = {s: folder.spk2utt[s][:3] for s in folder.speakers}
    (data / "wav.scp").write_text("".join(f"{u} {folder.wav[u]}\n" for us in enroll.values() for u in us))
    (data / "utt2spk").write_text("".join(f"{u} {s}\n" for s, us in enroll.items() for u in us))
    store = tmp_path / "fused.db"
    assert main(["enroll", "--store", str(store), "--model", "fused", "--data", str(data), "--json", "--quiet"]) == 0
    capsys.readouterr()
    tests = [str(folder.wav[folder.spk2utt[s][3]]) for s in folder.speakers]
    assert main(["identify", "--store", str(store), "--model", "fused", *tests, "--json"]) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [f["top"][0]["speaker"] for f in found] == folder.speakers
    # Another model's store is refused in one line that names the model to use, nothing written.
    assert main(["identify", "--store", str(store), "--model", "default", tests[0]]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'fused'" in err and "--model fused" in err and "'default'" in err


def test_register_recognize_and_diarize_on_the_fusion(tmp_path, fused, parts, folder, data_dir):
    fused.attach_store(tmp_path / "wespeaker.db")
    for speaker in folder.speakers[:2]:
        fused.register(speaker, [folder.wav[u] for u in folder.spk2utt[speaker][:3]])
    assert fused.recognize(folder.wav[folder.spk2utt[folder.speakers[1]][3]]).speaker == folder.speakers[1]
    # Diarization clusters the first part's windows fused with the second part's: the default model's
    # own diarization, which fuses the same partner.
    sample = data_dir / "pyannote-sample" / "sample.wav"
    assert fused.diarize(sample, num_speakers=2).segments == parts[0].diarize(sample, num_speakers=2).segments


def test_the_service_enrolls_and_identifies_with_the_fusion(tmp_path, fused, folder):
    from fastapi.testclient import TestClient

    from voxprint.service.app import create_app
    from voxprint.service.settings import ServiceConfig
    from voxprint.service.storage import open_keys

    store = str(tmp_path / "service.db")
    _, key = open_keys(store).create("admin")
    client = TestClient(create_app(ServiceConfig(store=store, optimize=False, rate_limit=0), fused),
                        raise_server_exceptions=False)
    headers = {"Authorization": f"Bearer {key}"}
    for speaker in folder.speakers[:2]:
        files = [("files", (Path(folder.wav[u]).name, Path(folder.wav[u]).read_bytes(), "audio/flac"))
                 for u in folder.spk2utt[speaker][:3]]
        assert client.post(f"/v1/speakers/{speaker}/enrollments", headers=headers, files=files).status_code == 200
    test = Path(folder.wav[folder.spk2utt[folder.speakers[1]][3]])
    found = client.post("/v1/identify", headers=headers, files=[("file", (test.name, test.read_bytes(), "audio/flac"))])
    assert found.status_code == 200 and found.json()["speaker"] == folder.speakers[1]
    # The score is the fusion's, as the store scores it.
    assert found.json()["top"][0]["score"] == pytest.approx(
        SpeakerStore(store, fused).identify(test).top[0].score, abs=1e-4)


def test_store_verbs_use_the_model_a_store_was_made_with(tmp_path, capsys, folder):
    store = tmp_path / "remembers.db"
    speaker = folder.speakers[0]
    enroll = [str(folder.wav[u]) for u in folder.spk2utt[speaker][:3]]
    assert main(["enroll", "--store", str(store), "--model", "fused", "--speaker", "alice", *enroll, "--quiet"]) == 0
    test = str(folder.wav[folder.spk2utt[speaker][3]])
    capsys.readouterr()
    # No --model: the store's own (the fusion), not the bundled default (which it would refuse).
    assert main(["identify", "--store", str(store), test, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["speaker"] == "alice"
    assert main(["verify", "--store", str(store), "--speaker", "alice", "--test", test, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scale"].startswith("log-likelihood ratio (fusion")
    # An explicit --model still wins (and is refused for another model's store), and verbs without a store
    # keep the bundled default.
    assert main(["identify", "--store", str(store), "--model", "default", test]) != 0
    assert "--model fused" in capsys.readouterr().err
    assert main(["verify", *[a for f in enroll for a in ("--enroll", f)], "--test", test, "--json"]) == 0
    assert "fusion" not in json.loads(capsys.readouterr().out)["scale"]
    assert main(["store", "info", "--store", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_name"] == "fused"

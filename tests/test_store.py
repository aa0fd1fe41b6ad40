"""The speaker store on real dev speech: round trips, identification with "unknown", store verification,
enrollment checks, model binding, crashes and concurrent writers, CLI end to end."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

import voxprint
from voxprint.cli import main
from voxprint.data import read_data_folder
from voxprint.errors import AudioError, StoreError, VoxprintError
from voxprint.identification.scoring import PLDAScoring
from voxprint.store import EmbeddingTable, Enrollment, SpeakerStore
from voxprint.store import sqlite as sqlite_table
from conftest import make_subset_folder


@pytest.fixture(scope="module")
def model():
    return voxprint.load_model("default")


@pytest.fixture(scope="module")
def dev_small(tmp_path_factory, dev_dir) -> Path:
    """Six unseen speakers with four utterances each."""
    return make_subset_folder(dev_dir, tmp_path_factory.mktemp("dev6"), speakers=6, utterances=4)


@pytest.fixture(scope="module")
def folder(dev_small):
    return read_data_folder(dev_small)


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, model, folder) -> Path:
    """A store holding the first four speakers, from their first three utterances."""
    path = tmp_path_factory.mktemp("store") / "speakers.db"
    store = SpeakerStore(path, model)
    for speaker in folder.speakers[:4]:
        utts = folder.spk2utt[speaker][:3]
        store.enroll(speaker, [folder.wav[u] for u in utts], sources=utts)
    return path


def copy_store(source: Path, target: Path) -> Path:
    """A copy of a store by SQLite's backup API, not a file copy: in WAL mode the latest writes may still be
    in the ``-wal`` file."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


def run_cli(capsys, *argv) -> tuple[int, list[dict], str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.strip().splitlines() if line.startswith("{")]
    return code, lines, captured.err


def test_enrolled_speakers_survive_reopening_and_are_identified(enrolled, model, folder):
    store = SpeakerStore(enrolled, model, create=False)
    assert [r.id for r in store.speakers()] == folder.speakers[:4]
    assert all(r.count == 3 and r.seconds > 1.0 for r in store.speakers())
    named = 0
    for speaker in folder.speakers[:4]:
        result = store.identify(folder.wav[folder.spk2utt[speaker][3]])
        assert result.top[0].speaker == speaker and result.gallery == 4
        # Named when the best score clears the open-set threshold (set for FPIR 1 % on dev), never as another.
        assert result.speaker == (speaker if result.score - np.log(4) >= result.threshold else None)
        named += result.speaker == speaker
    assert named >= 3
    for speaker in folder.speakers[4:]:  # never enrolled: the honest answer is "unknown"
        result = store.identify(folder.wav[folder.spk2utt[speaker][0]])
        assert result.speaker is None and result.score - np.log(4) < result.threshold


def test_enrolling_again_changes_nothing(enrolled, model, folder):
    store = SpeakerStore(enrolled, model, create=False)
    version = store.table.version
    speaker = folder.speakers[0]
    utts = folder.spk2utt[speaker][:3]
    assert store.enroll(speaker, [folder.wav[u] for u in utts], sources=utts).count == 3
    assert store.table.version == version


def exact_plda_scores(model, enrollments: list[np.ndarray], test: np.ndarray) -> np.ndarray:
    """Calibrated exact n-utterance PLDA scores of one test embedding against each speaker's enrollment
    embeddings, by the back-end's trial scoring (its own code path, not the store's closed form)."""
    from voxprint.data.trials import Trials

    ids, models = [], {}
    for s, group in enumerate(enrollments):
        models[f"m{s}"] = [f"m{s}e{i}" for i in range(len(group))]
        ids += models[f"m{s}"]
    trials = Trials(labels=None, enroll=np.array(list(models)), test=np.array(["t"] * len(models)))
    raw = model.backend.plda.score_trials(ids + ["t"], np.vstack(list(enrollments) + [test[None]]), trials,
                                          enrollments=models, enroll_mode="exact")
    return model.backend.calibration.transform(raw)


def exact_plda_score(model, enroll: list, test) -> float:
    """:func:`exact_plda_scores` of one speaker, from the audio."""
    embeddings = model.extract_embeddings(list(enroll) + [test])
    return float(exact_plda_scores(model, [embeddings[:-1]], embeddings[-1])[0])


def centroid_score(model, enroll: np.ndarray, test: np.ndarray) -> float:
    """The back-end's score of ``test`` against the centroid of ``enroll`` taken as one utterance (the pooled model
    ``verify --enroll`` used before it scored the exact ``n``-utterance model)."""
    from voxprint.backends.scoring import mean_embedding
    from voxprint.data.trials import Trials

    trial = Trials(labels=None, enroll=np.array(["e"]), test=np.array(["t"]))
    return float(model.backend.score_trials(["e", "t"], np.stack([mean_embedding(enroll), test]), trial)[0])


def answer(result) -> tuple:
    """An identification's answer, its candidates and their scores (to 6 decimals: models derived in one batch
    may differ from those stored one by one in the last bits)."""
    return result.speaker, result.gallery, [(c.speaker, round(c.score, 6)) for c in result.top]


def stored_embeddings(store: SpeakerStore, speaker: str) -> np.ndarray:
    return np.stack([e.embedding for e in store.table.enrollments(speaker)])


def test_the_store_keeps_the_exact_plda_model_and_identifies_with_it(enrolled, model, folder):
    store = SpeakerStore(enrolled, model, create=False)
    assert isinstance(store.scoring, PLDAScoring)
    ids, models, counts, derived = store.table.speaker_models(store.scoring)
    assert ids == folder.speakers[:4] and counts.tolist() == [3] * 4 and derived == {}  # read back, not derived
    for speaker, mean in zip(ids, models):
        # n and the mean of the enrollments in the PLDA space, as stored at enrollment.
        np.testing.assert_allclose(mean, model.backend.plda.enrollment_mean(stored_embeddings(store, speaker)),
                                   atol=1e-12)
    with closing(sqlite3.connect(enrolled)) as db:
        blob = db.execute("SELECT model FROM speakers WHERE id = ?", (ids[0],)).fetchone()[0]
    assert blob[:8] == bytes.fromhex(model.backend.plda.fingerprint()) and np.frombuffer(blob[8:16])[0] == 3.0
    # Identification scores are the calibrated exact n-utterance LLRs, then the identification calibration.
    audio = folder.wav[folder.spk2utt[ids[2]][3]]
    result = store.identify(audio, top_k=4)
    test = model.extract_embedding(audio)
    seconds = len(model.load_waveform(audio)) / model.sample_rate
    direct = store.calibrate(exact_plda_scores(model, [stored_embeddings(store, s) for s in ids], test), seconds,
                             counts)
    assert result.top[0].speaker == ids[2]
    assert [(c.speaker, round(c.score, 6)) for c in result.top] == \
        [(ids[i], round(float(direct[i]), 6)) for i in np.argsort(-direct)]


def test_enrolling_more_recordings_updates_the_speaker_model(tmp_path, model, folder):
    store = SpeakerStore(tmp_path / "s.db", model)
    speaker, other = folder.speakers[0], folder.speakers[1]
    utts = folder.spk2utt[speaker]
    store.enroll(other, [folder.wav[u] for u in folder.spk2utt[other][:2]])
    store.enroll(speaker, [folder.wav[u] for u in utts[:1]], sources=utts[:1])
    test = folder.wav[utts[3]]
    seconds = len(model.load_waveform(test)) / model.sample_rate
    scores = []
    for n in (1, 2, 3):
        if n > 1:
            store.enroll(speaker, [folder.wav[utts[n - 1]]], sources=[utts[n - 1]])
        _, mean, count, derived = store.table.speaker_models(store.scoring, speaker)
        assert count.tolist() == [n] and derived == {}
        np.testing.assert_allclose(mean[0], model.backend.plda.enrollment_mean(stored_embeddings(store, speaker)),
                                   atol=1e-12)
        top = {c.speaker: c.score for c in store.identify(test).top}
        expected = store.calibrate(np.array([exact_plda_score(model, [folder.wav[u] for u in utts[:n]], test)]),
                                   seconds, np.array([n]))[0]
        assert top[speaker] == pytest.approx(expected, abs=1e-4)
        scores.append(top[speaker])
    assert len(set(np.round(scores, 4))) == 3  # each enrollment changed the model, and the index followed


def test_a_store_of_an_earlier_voxprint_gets_its_models_derived_and_kept(tmp_path, enrolled, model, folder):
    old = copy_store(enrolled, tmp_path / "old.db")
    with closing(sqlite3.connect(old)) as db:
        db.execute("ALTER TABLE speakers DROP COLUMN model")  # what an earlier voxprint wrote
        db.commit()
    store = SpeakerStore(old, model, create=False)
    version = store.table.version
    audio = folder.wav[folder.spk2utt[folder.speakers[1]][3]]
    expected = SpeakerStore(enrolled, model, create=False).identify(audio)
    assert answer(store.identify(audio)) == answer(expected)
    with closing(sqlite3.connect(old)) as db:
        stored = db.execute("SELECT model IS NOT NULL FROM speakers").fetchall()
    assert stored == [(1,)] * 4 and store.table.version == version  # kept for next time, not a write
    assert SpeakerStore(old, model, create=False).table.speaker_models(store.scoring)[3] == {}


def test_postgresql_tables_keep_the_same_speaker_models(enrolled, model, postgres):
    """The PostgreSQL tables derive and keep the back-end's model as SQLite does, and add the column to
    tables of an earlier voxprint."""
    from voxprint.service.postgres import PostgresSpeakerStore

    sqlite_store = SpeakerStore(enrolled, model, create=False)
    ids, models, counts, _ = sqlite_store.table.speaker_models(sqlite_store.scoring)
    store = PostgresSpeakerStore(postgres.url, model)
    for speaker in ids:
        store.table.add(speaker, sqlite_store.table.enrollments(speaker), identity=model.identity)
    got_ids, got, got_counts, derived = store.table.speaker_models(store.scoring)
    assert (got_ids, got_counts.tolist(), derived) == (ids, counts.tolist(), {})
    np.testing.assert_allclose(got, models, atol=1e-12)
    store.table._db.execute("ALTER TABLE voxprint_speakers DROP COLUMN model")  # as an earlier voxprint made it
    again = PostgresSpeakerStore(postgres.url, model)
    assert sorted(again.table.speaker_models(again.scoring)[3]) == ids  # derived, then kept
    again._speaker_index()
    assert again.table.speaker_models(again.scoring)[3] == {}
    store.table.close()
    again.table.close()


def empty_database(postgres, name: str) -> str:
    """The URL of a new database on the module's PostgreSQL server, so that a test starts from empty tables."""
    import psycopg

    with closing(psycopg.connect(postgres.url, autocommit=True)) as db:
        db.execute(f"CREATE DATABASE {name}")
    return f"{postgres.url.rsplit('/', 1)[0]}/{name}"


def test_postgresql_does_not_store_a_model_over_one_written_after_the_version_check(enrolled, model, postgres):
    """A speaker enrolled again (as many recordings, another model) by another connection between save_models'
    version check and its update: the derived model, now stale, is not stored over the writer's."""
    from voxprint.service.postgres import PostgresSpeakerStore

    source = SpeakerStore(enrolled, model, create=False)
    speaker, other = (r.id for r in source.speakers()[:2])
    url = empty_database(postgres, "voxprint_save_race")
    reader, writer = PostgresSpeakerStore(url, model), PostgresSpeakerStore(url, model)
    for spk in (speaker, other):
        writer.table.add(spk, source.table.enrollments(spk), identity=model.identity)
    reader.table._db.execute("UPDATE voxprint_speakers SET model = NULL")  # as a writer without the back-end
    version = reader.table.version
    _, _, _, derived = reader.table.speaker_models(reader.scoring)
    assert sorted(derived) == sorted([speaker, other])
    read_meta = reader.table.get_meta

    def writer_enrolls_between(key: str) -> str | None:
        value = read_meta(key)
        if key == "version":  # save_models' check: then `speaker` is enrolled again from `other`'s recordings
            reader.table.get_meta = read_meta
            writer.table.remove(speaker)
            writer.table.add(speaker, source.table.enrollments(other), identity=model.identity)
        return value

    reader.table.get_meta = writer_enrolls_between
    assert not reader.table.save_models(reader.scoring, derived, version)
    assert reader.table.get_meta == read_meta and reader.table.version == version + 2  # the write came between
    ids, models, counts, derived = reader.table.speaker_models(reader.scoring)
    assert speaker not in derived and counts[ids.index(speaker)] == 3  # the writer's model is the stored one ...
    np.testing.assert_allclose(models[ids.index(speaker)],  # ... and it is the model of the current enrollments
                               model.backend.plda.enrollment_mean(stored_embeddings(source, other)), atol=1e-12)
    # Without a write in between, the models are stored.
    assert reader.table.save_models(reader.scoring, derived, reader.table.version)
    assert reader.table.speaker_models(reader.scoring)[3] == {}
    reader.table.close()
    writer.table.close()


def test_deriving_missing_models_reads_only_those_speakers_enrollments(tmp_path, enrolled, model, monkeypatch):
    store = SpeakerStore(copy_store(enrolled, tmp_path / "copy.db"), model, create=False)
    for record in store.speakers():  # four more speakers, with stored models
        store.table.add(f"{record.id}.again", store.table.enrollments(record.id))
    ids, expected, expected_counts, derived = store.table.speaker_models(store.scoring)
    assert len(ids) == 8 and derived == {}
    lacking = [ids[1], ids[6]]
    store.table._db.execute("UPDATE speakers SET model = NULL WHERE id IN (?, ?)", lacking)
    queries: list[tuple[str, list[tuple]]] = []
    query = store.table._query

    def logged(sql: str, args=()) -> list[tuple]:
        rows = query(sql, args)
        queries.append((sql, rows))
        return rows

    monkeypatch.setattr(store.table, "_query", logged)

    def enrollment_reads() -> list[list[tuple]]:
        """The rows of each enrollment query that deriving the two models made, once the models are checked."""
        queries.clear()
        got_ids, models, counts, derived = store.table.speaker_models(store.scoring)
        assert got_ids == ids and sorted(derived) == sorted(lacking) and counts.tolist() == expected_counts.tolist()
        np.testing.assert_allclose(models, expected, atol=1e-12)
        reads = [rows for sql, rows in queries if "enrollments" in sql]
        assert sorted(row[0] for rows in reads for row in rows) == sorted(lacking * 3)  # theirs only, 3 each
        return reads

    assert len(enrollment_reads()) == 1
    monkeypatch.setattr(sqlite_table, "MAX_IN_PARAMETERS", 1)  # in chunks of one id: one query per speaker
    assert len(enrollment_reads()) == 2


def test_a_tampered_stored_model_is_ignored_and_derived_from_the_enrollments(tmp_path, enrolled, model, folder):
    """Stored models with another back-end's tag, the wrong length, a NaN, or another enrollment count are not
    used: verification and identification score as on an untampered copy, and identification stores the
    derived models over them."""
    intact = SpeakerStore(copy_store(enrolled, tmp_path / "intact.db"), model, create=False)
    path = copy_store(enrolled, tmp_path / "tampered.db")
    ids = folder.speakers[:4]
    tag = len(intact.scoring.tag)
    with closing(sqlite3.connect(path)) as db:
        blobs = dict(db.execute("SELECT id, model FROM speakers").fetchall())
        values = {spk: np.frombuffer(blob, dtype=np.float64, offset=tag).copy() for spk, blob in blobs.items()}
        values[ids[2]][5] = np.nan
        values[ids[3]][0] = 2.0  # the count it was made for
        tampered = {ids[0]: bytes([blobs[ids[0]][0] ^ 0xFF]) + blobs[ids[0]][1:],
                    ids[1]: blobs[ids[1]][:-8],
                    ids[2]: blobs[ids[2]][:tag] + values[ids[2]].tobytes(),
                    ids[3]: blobs[ids[3]][:tag] + values[ids[3]].tobytes()}
        db.executemany("UPDATE speakers SET model = ? WHERE id = ?", [(b, spk) for spk, b in tampered.items()])
        db.commit()
    store = SpeakerStore(path, model, create=False)
    assert sorted(store.table.speaker_models(store.scoring)[3]) == sorted(ids)
    tests = [folder.wav[folder.spk2utt[spk][3]] for spk in ids] + [folder.wav[folder.spk2utt[folder.speakers[5]][0]]]
    for spk, test in zip(ids, tests):  # verification does not store what it derives: each is tampered here
        got, expected = store.verify(spk, test), intact.verify(spk, test)
        assert got == {**expected, "score": pytest.approx(expected["score"], abs=1e-6)}
    for test in tests:
        assert answer(store.identify(test)) == answer(intact.identify(test))
    ids_now, models, _, derived = store.table.speaker_models(store.scoring)
    assert derived == {}  # identification stored the derived models
    np.testing.assert_allclose(models, intact.table.speaker_models(intact.scoring)[1], atol=1e-12)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_store_is_searched_and_refuses_writes_in_one_line(tmp_path, capsys, enrolled, model, folder):
    speaker, new = folder.speakers[0], folder.speakers[4]
    audio = folder.wav[folder.spk2utt[speaker][3]]
    expected = SpeakerStore(enrolled, model, create=False).identify(audio)
    for name in ("current", "earlier"):  # an earlier voxprint's store lacks the model column: derived in memory
        locked = tmp_path / name
        locked.mkdir()
        path = copy_store(enrolled, locked / "speakers.db")
        if name == "earlier":
            with closing(sqlite3.connect(path)) as db:
                db.execute("ALTER TABLE speakers DROP COLUMN model")
                db.commit()
        path.chmod(0o444)
        locked.chmod(0o555)
        try:
            content = path.read_bytes()
            store = SpeakerStore(path, model, create=False)
            assert store.table.read_only and [r.id for r in store.speakers()] == folder.speakers[:4]
            assert answer(store.identify(audio)) == answer(expected)
            writes = [lambda: store.enroll(new, [folder.wav[folder.spk2utt[new][0]]]), lambda: store.remove(speaker),
                      lambda: store.rename(speaker, "renamed"), lambda: store.table.add(speaker, [], name="x")]
            for write in writes:
                with pytest.raises(VoxprintError, match="read-only") as info:
                    write()
                assert "\n" not in str(info.value)
            code, lines, _ = run_cli(capsys, "speakers", "--store", path, "list", "--json")
            assert code == 0 and [line["id"] for line in lines] == folder.speakers[:4]
            code, _, err = run_cli(capsys, "speakers", "--store", path, "remove", speaker)
            assert code == 1 and "read-only" in err and err.strip().count("\n") == 0
            assert path.read_bytes() == content and [p.name for p in locked.iterdir()] == ["speakers.db"]
        finally:
            locked.chmod(0o755)
            path.chmod(0o644)


def test_store_verification_scores_the_exact_plda_model_of_the_enrollments(tmp_path, enrolled, model, folder):
    speaker = folder.speakers[1]
    enroll = [folder.wav[u] for u in folder.spk2utt[speaker][:3]]
    test = folder.wav[folder.spk2utt[speaker][3]]
    stored = SpeakerStore(enrolled, model, create=False).verify(speaker, test)
    assert stored["score"] == pytest.approx(exact_plda_score(model, enroll, test), abs=1e-4)
    assert stored["decision"] == "accept" and stored["scale"] == "log-likelihood ratio"
    # Verifying against the recordings themselves scores the same exact model (`verify --enroll`).
    assert model.verification_score(enroll, test) == pytest.approx(stored["score"], abs=1e-4)
    # Three recordings are not pooled into one: the centroid scored as one utterance gives another score.
    embeddings = model.extract_embeddings(enroll + [test])
    assert abs(stored["score"] - centroid_score(model, embeddings[:-1], embeddings[-1])) > 0.1
    # With one enrollment recording the two are the same model.
    single = SpeakerStore(copy_store(enrolled, tmp_path / "copy.db"), model, create=False)
    first = folder.wav[folder.spk2utt[folder.speakers[5]][0]]
    single.table.add("one", [Enrollment("x", 2.0, 1.0, model.extract_embedding(first))])
    assert single.verify("one", test)["score"] == pytest.approx(model.verification_score([first], test), abs=1e-4)


def test_enrollment_refuses_too_little_speech_and_two_voices(tmp_path, model, folder):
    store = SpeakerStore(tmp_path / "s.db", model)
    short = model.load_waveform(folder.wav[folder.utterances[0]])[: int(0.6 * 16000)]
    with pytest.raises(AudioError, match="less than the 1.0 s enrollment needs"):
        store.enroll("short", [short], sources=["short"])
    # Two unseen speakers joined into one recording (a pair whose voices differ clearly).
    a = np.concatenate([model.load_waveform(folder.wav[u]) for u in folder.spk2utt[folder.speakers[0]][:3]])
    b = np.concatenate([model.load_waveform(folder.wav[u]) for u in folder.spk2utt[folder.speakers[1]][:3]])
    with pytest.raises(AudioError, match="several voices"):
        store.enroll("two", [np.concatenate([a, b])], sources=["joined"])
    store.enroll("one", [a], sources=["a"])  # the same speaker's recordings joined are accepted
    assert [r.id for r in store.speakers()] == ["one"]


def test_a_store_refuses_another_model_and_moves_with_kept_audio(tmp_path, model, folder, tiny_run_factory):
    path = tmp_path / "s.db"
    store = SpeakerStore(path, model, keep_audio=True)
    speaker = folder.speakers[2]
    store.enroll(speaker, [folder.wav[u] for u in folder.spk2utt[speaker][:2]])
    other_dir = tiny_run_factory("store_other")
    other = voxprint.load_model(other_dir)
    # The error names both models as --model takes them, so the user knows which one to pass.
    with pytest.raises(StoreError, match=r"holds embeddings of model 'default' \(vp1-.*, not of the model given, "
                                         r"'.*store_other.*' \(vp1-.*\(--model default\).*store reembed"):
        SpeakerStore(path, other)
    assert SpeakerStore(path, None).reembed(other) == 2
    moved = SpeakerStore(path, other)
    assert moved.table.model_identity == other.identity
    with pytest.raises(StoreError, match=f"--model {Path(other_dir).resolve()}"):
        SpeakerStore(path, model)  # reembed recorded the new model's name
    assert moved.speaker(speaker).centroid.shape == (other.embedding_dim,)
    plain = tmp_path / "plain.db"
    SpeakerStore(plain, model).enroll(speaker, [folder.wav[folder.spk2utt[speaker][0]]])
    with pytest.raises(StoreError, match="kept no audio"):
        SpeakerStore(plain, None).reembed(other)


def test_store_errors_are_one_line_and_write_nothing(tmp_path, enrolled, model):
    table = EmbeddingTable(copy_store(enrolled, tmp_path / "copy.db"), create=False)
    version = table.version
    for action, match in [(lambda: table.speaker("nobody"), "no speaker 'nobody'"),
                          (lambda: table.remove("nobody"), "no speaker 'nobody'"),
                          (lambda: table.rename(table.speakers()[0].id, table.speakers()[1].id), "already taken"),
                          (lambda: table.rename(table.speakers()[0].id, "bad id!"), "invalid speaker id")]:
        with pytest.raises(StoreError, match=match) as info:
            action()
        assert "\n" not in str(info.value)
    assert table.version == version
    (tmp_path / "corrupt.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="corrupt or not a voxprint store"):
        EmbeddingTable(tmp_path / "corrupt.db")
    with pytest.raises(StoreError, match="does not exist"):
        EmbeddingTable(tmp_path / "missing.db", create=False)


def test_cli_enroll_identify_list_rename_remove(capsys, tmp_path, dev_small, folder):
    store = tmp_path / "cli.db"
    speaker = folder.speakers[0]
    first = [folder.wav[u] for u in folder.spk2utt[speaker][:2]]
    code, lines, _ = run_cli(capsys, "enroll", "--store", store, "--speaker", "alice", *first, "--json")
    assert code == 0 and lines == [{"id": "alice", "name": "alice", "enrollments": 2,
                                    "seconds": lines[0]["seconds"]}]
    code, lines, _ = run_cli(capsys, "identify", "--store", store, folder.wav[folder.spk2utt[speaker][3]],
                             folder.wav[folder.spk2utt[folder.speakers[5]][0]], "--json", "--top-k", "1")
    assert code == 0 and [line["speaker"] for line in lines] == ["alice", None]
    assert set(lines[0]) >= {"file", "speaker", "score", "top"} and lines[0]["top"][0]["speaker"] == "alice"
    code, _, _ = run_cli(capsys, "speakers", "--store", store, "rename", "alice", "alice_b", "--name", "Alice B")
    code, lines, _ = run_cli(capsys, "speakers", "--store", store, "list", "--json")
    assert code == 0 and [(line["id"], line["name"]) for line in lines] == [("alice_b", "Alice B")]
    code, _, _ = run_cli(capsys, "verify", "--store", store, "--speaker", "alice_b", "--test",
                         folder.wav[folder.spk2utt[speaker][3]])
    assert code == 0
    code, _, err = run_cli(capsys, "speakers", "--store", store, "remove", "alice")
    assert code == 1 and "no speaker 'alice'" in err
    code, _, _ = run_cli(capsys, "speakers", "--store", store, "remove", "alice_b")
    code, lines, _ = run_cli(capsys, "speakers", "--store", store, "list", "--json")
    assert code == 0 and lines == []


def _enroll_process(store: Path, data: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "voxprint", "enroll", "--store", str(store), "--data", str(data),
                             "--json", "--quiet", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _stored(store: Path) -> dict[str, int]:
    with sqlite3.connect(store) as db:
        return dict(db.execute("SELECT id, count FROM speakers").fetchall())


def test_a_killed_bulk_enrollment_keeps_what_it_acknowledged_and_a_rerun_completes(tmp_path, dev_small, folder):
    store = tmp_path / "bulk.db"
    expected = {s: len(folder.spk2utt[s]) for s in folder.speakers}
    for kill_after in (1, 3):
        process = _enroll_process(store, dev_small)
        acknowledged = []
        while len(acknowledged) < kill_after:
            line = process.stdout.readline()
            assert line, process.stderr.read()
            acknowledged.append(json.loads(line)["id"])
        process.send_signal(signal.SIGKILL)
        process.wait()
        stored = _stored(store)
        # Every acknowledged speaker is there, complete; at most the one being committed when killed is extra.
        assert set(acknowledged) <= set(stored) and len(set(stored) - set(acknowledged)) <= 1
        assert all(stored[s] == expected[s] for s in stored)
    rerun = _enroll_process(store, dev_small)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert _stored(store) == expected


def test_two_processes_enrolling_at_once_lose_nothing(tmp_path, dev_small, folder):
    halves = []
    for index, speakers in enumerate((folder.speakers[:3], folder.speakers[3:])):
        half = tmp_path / f"half{index}"
        half.mkdir()
        utts = [u for s in speakers for u in folder.spk2utt[s]]
        (half / "wav.scp").write_text("".join(f"{u} {folder.wav[u]}\n" for u in utts))
        (half / "utt2spk").write_text("".join(f"{u} {folder.utt2spk[u]}\n" for u in utts))
        halves.append(half)
    store = tmp_path / "shared.db"
    EmbeddingTable(store).close()  # both processes open an existing store
    processes = [_enroll_process(store, half) for half in halves]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0 and "locked" not in err, err
    assert _stored(store) == {s: len(folder.spk2utt[s]) for s in folder.speakers}

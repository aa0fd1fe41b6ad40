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
from voxprint.errors import AudioError, StoreError
from voxprint.store import EmbeddingTable, SpeakerStore
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


def run_cli(capsys, *argv) -> tuple[int, list[dict], str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.strip().splitlines() if line.startswith("{")]
    return code, lines, captured.err


def test_enrolled_speakers_survive_reopening_and_are_identified(enrolled, model, folder):
    store = SpeakerStore(enrolled, model, create=False)
    assert [r.id for r in store.speakers()] == folder.speakers[:4]
    assert all(r.count == 3 and r.seconds > 1.0 for r in store.speakers())
    for speaker in folder.speakers[:4]:
        result = store.identify(folder.wav[folder.spk2utt[speaker][3]])
        assert result.speaker == speaker and result.top[0].speaker == speaker and result.gallery == 4
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


def test_store_verification_equals_verification_from_the_audio(enrolled, model, folder):
    speaker = folder.speakers[1]
    enroll = [folder.wav[u] for u in folder.spk2utt[speaker][:3]]
    test = folder.wav[folder.spk2utt[speaker][3]]
    stored = SpeakerStore(enrolled, model, create=False).verify(speaker, test)
    assert stored["score"] == pytest.approx(model.verification_score(enroll, test), abs=1e-4)
    assert stored["decision"] == "accept" and stored["scale"] == "log-likelihood ratio"


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
    other = voxprint.load_model(tiny_run_factory("store_other"))
    with pytest.raises(StoreError, match="holds embeddings of model vp1-.*store reembed"):
        SpeakerStore(path, other)
    assert SpeakerStore(path, None).reembed(other) == 2
    moved = SpeakerStore(path, other)
    assert moved.table.model_identity == other.identity
    assert moved.speaker(speaker).centroid.shape == (other.embedding_dim,)
    plain = tmp_path / "plain.db"
    SpeakerStore(plain, model).enroll(speaker, [folder.wav[folder.spk2utt[speaker][0]]])
    with pytest.raises(StoreError, match="kept no audio"):
        SpeakerStore(plain, None).reembed(other)


def test_store_errors_are_one_line_and_write_nothing(tmp_path, enrolled, model):
    copy = tmp_path / "copy.db"
    # SQLite's backup API, not a file copy: in WAL mode the latest writes may still be in speakers.db-wal.
    with closing(sqlite3.connect(enrolled)) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    table = EmbeddingTable(copy, create=False)
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

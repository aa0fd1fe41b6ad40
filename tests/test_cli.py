"""The voxprint command end to end on real recordings, as a user scripting it would use it."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

import voxprint.inference
from voxprint.cli import EXIT_REJECT, VERBS, build_parser, main
from voxprint.data.embeddings import load_embeddings
from conftest import make_subset_folder

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(tiny_run_factory) -> Path:
    return tiny_run_factory("cli")


@pytest.fixture(scope="module")
def dev_subset(tmp_path_factory, dev_dir) -> Path:
    return make_subset_folder(dev_dir, tmp_path_factory.mktemp("dev"), speakers=6, utterances=3, with_trials=True)


@pytest.fixture
def folder_with_a_bad_file(tmp_path, dev_subset) -> Path:
    """The dev subset plus one utterance whose audio is 0.05 s long (below every model's minimum)."""
    folder = tmp_path / "with_bad"
    folder.mkdir()
    wav = (dev_subset / "wav.scp").read_text()
    soundfile.write(tmp_path / "blip.wav", np.full(800, 0.1, dtype=np.float32), 16000)
    first = wav.split()[0]
    (folder / "wav.scp").write_text(wav + f"blip {tmp_path / 'blip.wav'}\n")
    (folder / "utt2spk").write_text((dev_subset / "utt2spk").read_text() + "blip SPEAKERX\n")
    trials = (dev_subset / "trials.txt").read_text()
    (folder / "trials.txt").write_text(trials + f"0 blip {first}\n0 {first} blip\n")
    return folder


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.strip().splitlines()]


def forbid_model_loading(monkeypatch) -> None:
    """Any model load fails the test: the argument must be refused before slow work starts."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(voxprint.inference, "load_model", refuse)


def test_similarity_prints_a_cosine_and_says_so(capsys, run_dir, speech_file, train_dir):
    code, out, _ = run_cli(capsys, "similarity", speech_file, speech_file, "--model", run_dir)
    assert code == 0 and out.startswith("cosine ") and float(out.split()[1]) == pytest.approx(1.0, abs=1e-4)
    other = next((train_dir / "SPEAKER0005").glob("*.flac"))
    code, out, _ = run_cli(capsys, "similarity", speech_file, other, "--model", run_dir, "--json")
    assert code == 0 and json_lines(out)[0]["cosine"] < 0.9999


def test_eval_json_embed_and_score_agree(capsys, run_dir, dev_subset, tmp_path):
    code, out, err = run_cli(capsys, "eval", "--data", dev_subset, "--model", run_dir, "--json",
                             "--det", tmp_path / "det.png", "--scores", tmp_path / "eval_scores.txt")
    [result] = json_lines(out)  # the progress bar went to stderr, stdout holds only the JSON object
    assert code == 0 and "embedding" in err
    assert result["trials"] == 153 and result["targets"] == 18 and result["missing_trials"] == 0
    assert (tmp_path / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, out, _ = run_cli(capsys, "embed", "--data", dev_subset, "--out", tmp_path / "emb.npz", "--model", run_dir,
                           "--quiet", "--json")
    assert code == 0 and json_lines(out)[0]["embeddings"] == 18
    code, out, _ = run_cli(capsys, "score", "--trials", dev_subset / "trials.txt", "--embeddings",
                           tmp_path / "emb.npz", "--out", tmp_path / "scores.txt", "--json")
    scored = json_lines(out)[0]
    assert code == 0 and scored["scale"] == "cosine"
    assert scored["eer"] == pytest.approx(result["eer"]) and scored["min_dcf_0.01"] == pytest.approx(result["min_dcf_0.01"])
    rows = (tmp_path / "scores.txt").read_text().split("\n")
    assert len([r for r in rows if r]) == 153
    # eval --scores writes the same trials with their labels (cosine back-end here: the same scores)
    written = [r.split() for r in (tmp_path / "eval_scores.txt").read_text().splitlines()]
    assert [w[:2] for w in written] == [r.split()[:2] for r in rows if r] and all(w[3] in "01" for w in written)
    assert [float(w[2]) for w in written] == pytest.approx([float(r.split()[2]) for r in rows if r], abs=2e-6)


def test_verify_uses_every_enrollment_file_and_exits_3_on_reject(capsys, run_dir, dev_subset, dev_dir):
    code, _, err = run_cli(capsys, "verify", "--enroll", dev_dir / "wav.scp", "--test", dev_dir / "wav.scp",
                           "--model", run_dir, "--threshold", "0")
    assert code == 1 and err.startswith("voxprint: error:") and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "verify", "--enroll", dev_dir / "wav.scp", "--test", dev_dir / "wav.scp",
                           "--model", run_dir)
    assert code == 1 and "no stored threshold" in err
    utts = (dev_subset / "wav.scp").read_text().split()[1::2]
    model = voxprint.inference.load_model(run_dir)
    embeddings = model.extract_embeddings(utts[:3])
    both = embeddings[:2].mean(axis=0)
    expected = float(both @ embeddings[2] / np.linalg.norm(both))

    code, out, _ = run_cli(capsys, "verify", "--enroll", utts[0], "--enroll", utts[1], "--test", utts[2],
                           "--model", run_dir, "--json", "--threshold", str(expected - 0.01))
    decision = json_lines(out)[0]
    assert decision["score"] == pytest.approx(expected, abs=1e-5) and decision["scale"] == "cosine"
    assert code == 0 and decision["decision"] == "accept"
    code, out, _ = run_cli(capsys, "verify", "--enroll", utts[0], "--enroll", utts[1], "--test", utts[2],
                           "--model", run_dir, "--threshold", str(expected + 0.01))
    assert code == EXIT_REJECT and out.strip().endswith("reject") and "(cosine)" in out


def test_verify_against_recordings_scores_the_stored_speakers_exact_plda_model(capsys, tmp_path, dev_dir):
    """`verify --enroll a b c` and `verify --store` score one model: the exact 3-utterance PLDA model of the
    bundled back-end, not the centroid of the three embeddings scored as one utterance."""
    from voxprint.backends.scoring import mean_embedding
    from voxprint.data import read_data_folder
    from voxprint.data.trials import Trials

    folder = read_data_folder(dev_dir)
    utts = folder.spk2utt[folder.speakers[2]]
    enroll, test = [folder.wav[u] for u in utts[:3]], folder.wav[utts[3]]
    store = tmp_path / "speakers.db"
    code, _, _ = run_cli(capsys, "enroll", "--store", store, "--speaker", "s", *enroll, "--json")
    assert code == 0
    flags = [arg for path in enroll for arg in ("--enroll", path)]
    code, out, _ = run_cli(capsys, "verify", *flags, "--test", test, "--json")
    by_recordings = json_lines(out)[0]
    code_store, out, _ = run_cli(capsys, "verify", "--store", store, "--speaker", "s", "--test", test, "--json")
    by_store = json_lines(out)[0]
    assert by_recordings["score"] == pytest.approx(by_store["score"], abs=1e-4)
    assert (code, by_recordings["decision"]) == (code_store, by_store["decision"])
    assert by_recordings["scale"] == by_store["scale"] == "log-likelihood ratio"
    model = voxprint.inference.load_model("default")
    embeddings = model.extract_embeddings(enroll + [test])
    trial = Trials(labels=None, enroll=np.array(["e"]), test=np.array(["t"]))
    centroid = float(model.backend.score_trials(["e", "t"], np.stack([mean_embedding(embeddings[:3]), embeddings[3]]),
                                                trial)[0])
    assert abs(by_recordings["score"] - centroid) > 0.1


def test_prepare_never_overwrites_a_data_folder_without_being_told(capsys, tmp_path, speech_file):
    (tmp_path / "tree" / "alice").mkdir(parents=True)
    (tmp_path / "tree" / "alice" / "one.flac").symlink_to(speech_file)
    code, out, _ = run_cli(capsys, "prepare", tmp_path / "tree", "--out", tmp_path / "data", "--json")
    assert code == 0 and json_lines(out)[0] == {"folder": str(tmp_path / "data"), "utterances": 1, "speakers": 1}
    assert (tmp_path / "data" / "utt2spk").read_text() == "alice-one alice\n"
    (tmp_path / "data" / "utt2spk").write_text("mine alice\n")
    code, _, err = run_cli(capsys, "prepare", tmp_path / "tree", "--out", tmp_path / "data")
    assert code == 1 and "--overwrite" in err and (tmp_path / "data" / "utt2spk").read_text() == "mine alice\n"
    code, _, _ = run_cli(capsys, "prepare", tmp_path / "tree", "--out", tmp_path / "data", "--overwrite")
    assert code == 0 and (tmp_path / "data" / "utt2spk").read_text() == "alice-one alice\n"


def test_bad_files_are_counted_up_front_or_skipped_and_reported(capsys, monkeypatch, run_dir,
                                                                folder_with_a_bad_file, tmp_path):
    embedded: list = []
    real_embed_many = voxprint.inference.SpeakerModel.embed_many
    monkeypatch.setattr(voxprint.inference.SpeakerModel, "embed_many",
                        lambda self, *a, **k: embedded.append(1) or real_embed_many(self, *a, **k))
    code, _, err = run_cli(capsys, "embed", "--data", folder_with_a_bad_file, "--out", tmp_path / "e.npz",
                           "--model", run_dir, "--quiet")
    assert code == 1 and "1 of 19 audio files" in err and "blip.wav" in err and "--on-error skip" in err
    assert not embedded and not (tmp_path / "e.npz").exists()

    code, out, err = run_cli(capsys, "embed", "--data", folder_with_a_bad_file, "--out", tmp_path / "e.npz",
                             "--model", run_dir, "--quiet", "--on-error", "skip", "--json")
    record = json_lines(out)[0]
    assert code == 0 and record["embeddings"] == 18 and list(record["skipped"]) == ["blip"]
    assert "skipped blip" in err and "blip" not in load_embeddings(tmp_path / "e.npz")[0]

    code, out, _ = run_cli(capsys, "eval", "--data", folder_with_a_bad_file, "--model", run_dir, "--quiet",
                           "--on-error", "skip", "--json")
    result = json_lines(out)[0]
    assert code == 0 and result["missing_trials"] == 2 and result["trials"] == 153


def test_decode_workers_give_the_same_embeddings_and_skips(capsys, run_dir, folder_with_a_bad_file, tmp_path,
                                                            monkeypatch):
    """Decoding in worker processes changes where the work runs, not the result or the error report."""
    from voxprint.audio import decoding

    pools = []
    real = decoding.decode_in_workers
    monkeypatch.setattr(decoding, "decode_in_workers", lambda *a, **k: pools.append(a[2]) or real(*a, **k))
    outputs = {}
    for workers in ("0", "2"):
        code, out, err = run_cli(capsys, "embed", "--data", folder_with_a_bad_file, "--out",
                                 tmp_path / f"w{workers}.npz", "--model", run_dir, "--quiet", "--on-error", "skip",
                                 "--json", "--decode-workers", workers)
        assert code == 0 and list(json_lines(out)[0]["skipped"]) == ["blip"] and "skipped blip" in err
        outputs[workers] = load_embeddings(tmp_path / f"w{workers}.npz")
    assert outputs["0"][0] == outputs["2"][0] and pools == [2]  # only the second run decoded in workers
    np.testing.assert_allclose(outputs["0"][1], outputs["2"][1], atol=1e-6)
    code, _, err = run_cli(capsys, "embed", "--data", folder_with_a_bad_file, "--out", tmp_path / "x.npz",
                           "--model", run_dir, "--decode-workers", "-1")
    assert code == 1 and "--decode-workers" in err


def test_embed_single_files_and_a_bare_wav_scp(capsys, run_dir, dev_subset, tmp_path):
    utts = (dev_subset / "wav.scp").read_text().split()[1::2][:2]
    code, out, _ = run_cli(capsys, "embed", *utts, "--out", tmp_path / "two.npz", "--model", run_dir, "--json")
    ids, matrix = load_embeddings(tmp_path / "two.npz")
    assert code == 0 and ids == utts and matrix.shape[0] == 2
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "wav.scp").write_text("".join(f"u{i} {u}\n" for i, u in enumerate(utts)))
    code, _, _ = run_cli(capsys, "embed", "--data", bare, "--out", tmp_path / "bare.npz", "--model", run_dir, "--quiet")
    bare_ids, bare_matrix = load_embeddings(tmp_path / "bare.npz")
    assert code == 0 and bare_ids == ["u0", "u1"]
    np.testing.assert_allclose(bare_matrix, matrix, atol=1e-6)


@pytest.mark.parametrize("argv,needle", [
    (["embed", "--data", "DEV", "--out", "emb.txt"], "must end in .npz or .ark"),
    (["eval", "--data", "DEV", "--det", "FILE/det.png"], "cannot be written"),
    (["eval", "--data", "DEV", "--det", "det.jpg"], "must end in .png"),
    (["eval", "--data", "DEV", "--write-threshold"], "not the built-in model"),
    (["eval", "--data", "DEV", "--target-far", "0.01"], "only applies with --write-threshold"),
    (["fit-backend", "--model", "default"], "not the built-in model"),
])
def test_arguments_are_checked_before_any_slow_work(capsys, monkeypatch, tmp_path, dev_subset, argv, needle):
    forbid_model_loading(monkeypatch)
    (tmp_path / "FILE").write_text("a file, not a folder")
    argv = [str(dev_subset) if a == "DEV" else str(tmp_path / a) if a.startswith("FILE") else a for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1
    assert not [p for p in tmp_path.rglob(".*")]  # no temp or probe file left behind


@pytest.mark.parametrize("argv", [
    ["eval", "--data", "x", "--target-far", "1.5"],
    ["embed", "--data", "x", "--out", "e.npz", "--on-error", "ignore"],
    ["train", "c.yaml", "--out", "x", "--threads", "0"],
    ["similarity", "a.wav"],
])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_every_verb_documents_every_argument_and_shows_an_example():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subparsers) == set(VERBS) >= {"prepare", "train", "embed", "score", "eval", "fit-backend", "clean",
                                            "similarity", "verify"}
    for name, sub in subparsers.items():
        assert "example:\n  voxprint " + name in sub.format_help()
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_version_and_device_errors_from_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "voxprint", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"voxprint {voxprint.__version__}"
    proc = subprocess.run([sys.executable, "-m", "voxprint", "similarity", "a.wav", "b.wav", "--device", "tpu"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "unknown device 'tpu'" in proc.stderr


@pytest.mark.parametrize("argv,needle", [
    (["similarity", "missing.wav", "missing.wav"], "missing.wav"),
    (["eval", "--data", "/nonexistent"], "nonexistent"),
    (["similarity", "a.wav", "b.wav", "--model", "/no/such/model"], "neither"),
    (["train", "/no/config.yaml", "--out", "x"], "config file"),
])
def test_errors_are_one_line_and_exit_1(argv, needle, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "voxprint", *argv], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voxprint: error:") and needle in lines[0], proc.stderr


def test_train_and_clean_print_json_lines(capsys, tmp_path, tiny_train_folder, run_dir):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model: {name: lstm_dvector, hidden_size: 16, proj_size: 8, num_layers: 1, embedding_dim: 8}\n"
        "data: {speakers_per_batch: 4, utterances_per_speaker: 3, batches_per_epoch: 2, valid_batches: 1,"
        " crop_frames: [60, 80]}\n"
        "optim: {epochs: 2}\n")
    code, out, err = run_cli(capsys, "train", config, "--out", tmp_path / "run", "--data", tiny_train_folder,
                             "--json", "--threads", "1", "--device", "cpu")
    lines = json_lines(out)
    assert code == 0 and [line["epoch_end"]["epoch"] for line in lines[:-1]] == [1, 2]
    assert lines[-1]["epochs"] == 2 and lines[-1]["out"] == str(tmp_path / "run")
    assert "epoch 2:" in err  # the human-readable progress stays on stderr

    code, out, _ = run_cli(capsys, "clean", "--data", tiny_train_folder, "--out", tmp_path / "clean",
                           "--model", run_dir, "--json", "--quiet")
    record = json_lines(out)[0]
    assert code == 0 and record["utterances"] == len((tiny_train_folder / "wav.scp").read_text().splitlines())
    kept = len((tmp_path / "clean" / "wav.scp").read_text().splitlines())
    assert kept == record["utterances"] - len(record["removed"])


def test_writers_of_a_run_folder_exclude_each_other(capsys, run_dir, dev_subset):
    from voxprint.runs import RunLock

    with RunLock(run_dir, "train"):
        code, _, err = run_cli(capsys, "fit-backend", "--model", run_dir, "--quiet")
        assert code == 1 and "in use by train" in err and len(err.strip().splitlines()) == 1
        code, _, err = run_cli(capsys, "eval", "--data", dev_subset, "--model", run_dir, "--write-threshold",
                               "--quiet")
        assert code == 1 and "in use by train" in err
    assert not (run_dir / "meta.json").exists()  # nothing was written while the folder was locked


def test_embed_sharded_over_two_processes_equals_one_process(tmp_path, run_dir, dev_subset):
    """Two ranks as torchrun starts them (RANK/WORLD_SIZE): each embeds half, rank 0 merges."""
    import os

    single = tmp_path / "single.npz"
    assert main(["embed", "--data", str(dev_subset), "--out", str(single), "--model", str(run_dir), "--quiet"]) == 0
    sharded = tmp_path / "sharded.npz"
    processes = [subprocess.Popen([sys.executable, "-m", "voxprint", "embed", "--data", str(dev_subset), "--out",
                                   str(sharded), "--model", str(run_dir), "--quiet", "--threads", "1"],
                                  env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert "merged from 2 ranks" in outputs[0][0]
    ids, matrix = load_embeddings(sharded)
    single_ids, single_matrix = load_embeddings(single)
    assert ids == single_ids
    np.testing.assert_allclose(matrix, single_matrix, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded.npz", "single.npz"]  # parts removed


def test_embed_ranks_under_torchrun_take_their_own_gpu(monkeypatch, dev_subset, tmp_path):
    """`torchrun --nproc_per_node=N ... embed --device cuda` spreads the ranks over the machine's GPUs
    (LOCAL_RANK modulo the GPU count) instead of piling them on the first; a named device is kept."""
    import torch

    import voxprint.cli.verification as verification

    asked = []

    def record(args):
        asked.append(args.device)
        raise verification.VoxprintError("stop here")

    monkeypatch.setattr(verification, "load_cli_embedder", record)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    out = str(tmp_path / "e.npz")
    for device in ("cuda", "auto", "cuda:0", "cpu"):
        assert main(["embed", "--data", str(dev_subset), "--out", out, "--device", device]) == 1
    assert asked == ["cuda:1", "cuda:1", "cuda:0", "cpu"]

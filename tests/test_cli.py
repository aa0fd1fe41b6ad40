"""The voxprint command end to end on real recordings."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from voxprint.cli import main
from conftest import make_subset_folder

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(tiny_run_factory) -> Path:
    return tiny_run_factory("cli")


@pytest.fixture(scope="module")
def dev_subset(tmp_path_factory, dev_dir) -> Path:
    return make_subset_folder(dev_dir, tmp_path_factory.mktemp("dev"), speakers=6, utterances=3, with_trials=True)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_similarity_of_a_file_with_itself_is_one(capsys, run_dir, speech_file, train_dir):
    code, out, _ = run_cli(capsys, "similarity", speech_file, speech_file, "--model", run_dir)
    assert code == 0 and float(out) == pytest.approx(1.0, abs=1e-4)
    other = next((train_dir / "SPEAKER0005").glob("*.flac"))
    code, out, _ = run_cli(capsys, "similarity", speech_file, other, "--model", run_dir)
    assert code == 0 and -1.0 <= float(out) < 0.9999


def test_eval_json_embed_and_score_agree(capsys, run_dir, dev_subset, tmp_path):
    code, out, _ = run_cli(capsys, "eval", "--data", dev_subset, "--model", run_dir, "--json",
                           "--det", tmp_path / "det.png")
    result = json.loads(out)
    assert code == 0
    assert set(result) >= {"eer", "min_dcf_0.01", "min_dcf_0.001", "trials", "targets"}
    assert result["trials"] == 153 and result["targets"] == 18 and 0.0 <= result["eer"] <= 1.0
    assert (tmp_path / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, _, _ = run_cli(capsys, "embed", "--data", dev_subset, "--out", tmp_path / "emb.npz", "--model", run_dir,
                         "--quiet")
    assert code == 0
    code, out, _ = run_cli(capsys, "score", "--trials", dev_subset / "trials.txt", "--embeddings",
                           tmp_path / "emb.npz", "--out", tmp_path / "scores.txt")
    assert code == 0 and f"EER {100 * result['eer']:.2f}%" in out
    rows = (tmp_path / "scores.txt").read_text().split("\n")
    assert len([r for r in rows if r]) == 153


def test_verify_uses_the_threshold_written_by_eval(capsys, run_dir, dev_subset, dev_dir):
    code, _, err = run_cli(capsys, "verify", "--enroll", dev_dir / "wav.scp", "--test", dev_dir / "wav.scp",
                           "--model", run_dir)
    assert code == 1 and err.startswith("voxprint: error:") and len(err.strip().splitlines()) == 1
    code, out, _ = run_cli(capsys, "eval", "--data", dev_subset, "--model", run_dir, "--json", "--write-threshold")
    threshold = json.loads(out)["eer_threshold"]
    assert json.loads((run_dir / "meta.json").read_text())["threshold"] == pytest.approx(threshold)
    utts = (dev_subset / "wav.scp").read_text().split()
    enroll_a, enroll_b, test = utts[1], utts[3], utts[5]
    code, out, _ = run_cli(capsys, "verify", "--enroll", enroll_a, "--enroll", enroll_b, "--test", test,
                           "--model", run_dir, "--json")
    decision = json.loads(out)
    assert code == 0 and decision["threshold"] == pytest.approx(threshold)
    assert decision["decision"] == ("accept" if decision["score"] >= threshold else "reject")
    code, out, _ = run_cli(capsys, "verify", "--enroll", enroll_a, "--test", enroll_a, "--model", run_dir,
                           "--threshold", "0.5")
    assert code == 0 and out.strip().endswith("accept")


def test_prepare_writes_a_readable_folder(capsys, tmp_path, speech_file):
    (tmp_path / "tree" / "alice").mkdir(parents=True)
    (tmp_path / "tree" / "alice" / "one.flac").symlink_to(speech_file)
    code, out, _ = run_cli(capsys, "prepare", tmp_path / "tree", "--out", tmp_path / "data")
    assert code == 0 and "1 utterances, 1 speakers" in out
    assert (tmp_path / "data" / "utt2spk").read_text() == "alice-one alice\n"


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

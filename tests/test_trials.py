"""Text-dependent (digit-password) protocol on the real Free Spoken Digit Dataset folder."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from voxprint.data import read_data_folder
from voxprint.data.folder import DataFolder
from voxprint.data.trials import (
    make_text_dependent_trials,
    make_wrong_text_trials,
    read_enrollments,
    read_texts,
    read_trials,
    write_enrollment_trials,
)
from voxprint.errors import DataError

REPO = Path(__file__).resolve().parents[1]
# fsdd: 6 speakers x 10 digits x 50 repetitions.
SPEAKERS, DIGITS, REPEATS = 6, 10, 50


@pytest.fixture(scope="module")
def fsdd(fsdd_dir: Path) -> tuple[DataFolder, dict[str, str]]:
    return read_data_folder(fsdd_dir), read_texts(fsdd_dir)


def test_read_texts_matches_file_names(fsdd):
    folder, texts = fsdd
    assert len(texts) == len(folder) == SPEAKERS * DIGITS * REPEATS
    # fsdd utterance ids are DIGIT_SPEAKER_INDEX, an independent check of the text column.
    assert all(texts[utt] == utt.split("_")[0] for utt in folder.utterances)


def test_protocol_structure_on_fsdd(fsdd):
    folder, texts = fsdd
    enrollments, trials = make_text_dependent_trials(folder, texts, enroll_count=3)
    assert len(enrollments) == SPEAKERS * DIGITS
    enrolled = [utt for utts in enrollments.values() for utt in utts]
    assert len(enrolled) == len(set(enrolled)) == 3 * SPEAKERS * DIGITS
    for model, utts in enrollments.items():
        assert len(utts) == 3
        assert len({(folder.utt2spk[u], texts[u]) for u in utts}) == 1, model
    enrolled_set = set(enrolled)
    seen = set()
    for label, model, test in trials:
        assert (model, test) not in seen
        seen.add((model, test))
        speaker, text = folder.utt2spk[enrollments[model][0]], texts[enrollments[model][0]]
        assert test not in enrollments[model]
        assert test not in enrolled_set
        assert texts[test] == text  # both kinds of trial say the password
        assert (folder.utt2spk[test] == speaker) == (label == 1)
    # Every non-enrollment repetition is a target; every other speaker's are non-targets.
    left = REPEATS - 3
    n_models = SPEAKERS * DIGITS
    assert sum(label for label, _, _ in trials) == n_models * left
    assert sum(1 - label for label, _, _ in trials) == n_models * (SPEAKERS - 1) * left


def test_capped_protocol_balances_impostors(fsdd):
    folder, texts = fsdd
    enrollments, trials = make_text_dependent_trials(folder, texts, enroll_count=2, tests_per_model=10, seed=3)
    assert all(len(u) == 2 for u in enrollments.values())
    for model in enrollments:
        mine = [(label, test) for label, m, test in trials if m == model]
        assert sum(label for label, _ in mine) == 10 and len(mine) == 20
        impostors = [folder.utt2spk[test] for label, test in mine if label == 0]
        # 10 non-targets drawn in turn from 5 impostor speakers: 2 each.
        assert sorted(impostors.count(s) for s in set(impostors)) == [2] * (SPEAKERS - 1)


def test_deterministic_for_a_seed(fsdd):
    folder, texts = fsdd
    first = make_text_dependent_trials(folder, texts, tests_per_model=5, seed=7)
    assert make_text_dependent_trials(folder, texts, tests_per_model=5, seed=7) == first
    assert make_text_dependent_trials(folder, texts, tests_per_model=5, seed=8) != first
    # A model's draw depends on its own id, not on which other speakers are in the folder.
    george = folder.subset(["george"])
    alone, _ = make_text_dependent_trials(george, texts, tests_per_model=5, seed=7)
    assert alone == {m: u for m, u in first[0].items() if m.startswith("george-")}


def test_wrong_text_trials(fsdd):
    folder, texts = fsdd
    enrollments, trials = make_text_dependent_trials(folder, texts)
    wrong = make_wrong_text_trials(folder, texts, enrollments)
    enrolled = {u for utts in enrollments.values() for u in utts}
    assert len(wrong) == SPEAKERS * DIGITS * (DIGITS - 1) * (REPEATS - 3)
    for label, model, test in wrong:
        first = enrollments[model][0]
        assert label == 0 and test not in enrolled
        assert folder.utt2spk[test] == folder.utt2spk[first] and texts[test] != texts[first]
    assert not {(m, t) for _, m, t in wrong} & {(m, t) for _, m, t in trials}
    capped = make_wrong_text_trials(folder, texts, enrollments, tests_per_model=9)
    assert len(capped) == 9 * len(enrollments)
    assert len({texts[t] for _, m, t in capped if m == "theo-4"}) == DIGITS - 1


def test_files_round_trip(fsdd, tmp_path):
    folder, texts = fsdd
    enrollments, trials = make_text_dependent_trials(folder, texts, tests_per_model=4)
    wrong = make_wrong_text_trials(folder, texts, enrollments, tests_per_model=4)
    out = write_enrollment_trials(tmp_path / "td", enrollments, trials, wrong)
    assert sorted(p.name for p in out.iterdir()) == ["enroll.txt", "trials.txt", "trials_wrong_text.txt"]
    assert read_enrollments(out / "enroll.txt") == enrollments
    read = read_trials(out / "trials.txt")
    assert list(zip(read.labels.tolist(), read.enroll.tolist(), read.test.tolist())) == trials
    assert read_trials(out / "trials_wrong_text.txt").n_targets == 0


def test_errors(fsdd, tmp_path):
    folder, texts = fsdd
    with pytest.raises(DataError, match="no text"):
        make_text_dependent_trials(folder, {u: t for u, t in texts.items() if u != "3_theo_7"})
    with pytest.raises(DataError, match="enroll_count"):
        make_text_dependent_trials(folder, texts, enroll_count=0)
    with pytest.raises(DataError, match="more than 50"):
        make_text_dependent_trials(folder, texts, enroll_count=50)
    with pytest.raises(DataError, match="no enrollment"):
        write_enrollment_trials(tmp_path, {"a-1": ["u1"]}, [(1, "b-1", "u2")])
    with pytest.raises(DataError, match="0 or 1"):
        write_enrollment_trials(tmp_path, {"a-1": ["u1"]}, [(2, "a-1", "u2")])
    assert not list(tmp_path.iterdir())  # nothing written by a failed call
    with pytest.raises(DataError, match="not found"):
        read_texts(tmp_path)
    with pytest.raises(DataError, match="not found"):
        read_enrollments(tmp_path / "enroll.txt")
    (tmp_path / "enroll.txt").write_text("a-1 u1\na-1 u2\n")
    with pytest.raises(DataError, match="listed twice"):
        read_enrollments(tmp_path / "enroll.txt")
    (tmp_path / "enroll.txt").write_text("a-1\n")
    with pytest.raises(DataError, match="no enrollment utterances"):
        read_enrollments(tmp_path / "enroll.txt")
    (tmp_path / "utterances.tsv").write_text("utt\ttext\nu1\t \n")
    with pytest.raises(DataError, match="empty text"):
        read_texts(tmp_path)


def test_recipe_script(tmp_path, capsys):
    path = REPO / "recipes" / "orthogonal" / "make_fsdd_trials.py"
    spec = importlib.util.spec_from_file_location("make_fsdd_trials", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--out", str(tmp_path / "a"), "--enroll-count", "3"]) == 0
    assert capsys.readouterr().out.startswith("60 models, 2820 target trials, 14100 non-target trials")
    assert script.main(["--out", str(tmp_path / "b")]) == 0
    for name in ("enroll.txt", "trials.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert script.main(["--out", str(tmp_path / "c"), "--enroll-count", "60"]) == 1
    assert "error:" in capsys.readouterr().err


def test_eval_scores_text_dependent_models(tmp_path, fsdd_dir, capsys, tiny_run_factory):
    """Digit-password protocol end to end: enroll models from several utterances, eval names models."""
    import json

    from voxprint.cli import main
    from voxprint.data import read_data_folder

    folder = read_data_folder(fsdd_dir)
    keep = [u for u in folder.utterances if u.split("_")[0] in ("3", "7") and int(u.split("_")[2]) < 8]
    subset = tmp_path / "fsdd"
    subset.mkdir()
    (subset / "wav.scp").write_text("".join(f"{u} {folder.wav[u]}\n" for u in keep))
    (subset / "utt2spk").write_text("".join(f"{u} {folder.utt2spk[u]}\n" for u in keep))
    texts = {u: u.split("_")[0] for u in keep}
    enrollments, trials = make_text_dependent_trials(read_data_folder(subset), texts, enroll_count=3)
    write_enrollment_trials(subset, enrollments, trials)
    run = tiny_run_factory("td")
    code = main(["eval", "--data", str(subset), "--enroll", str(subset / "enroll.txt"), "--model", str(run), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["trials"] == len(trials) and result["targets"] == sum(t[0] for t in trials)
